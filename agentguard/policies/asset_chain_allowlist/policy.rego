# Which assets the agent may move (data.wasm.spend.asset, 0x000…0 for ETH) and on which chains
# (input.chain_id, decimal strings).
package agentguard.asset_chain_allowlist

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "asset_chain_allowlist: params has no allowed_assets or allowed_chains, so nothing is allowed" if {
	not active
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	data.params.allowed_assets
	not is_string(data.wasm.spend.asset)
}

violations contains msg if {
	data.params.allowed_assets
	not data.agentguard.function_allowlist.offchain_call # it moves nothing
	asset := lower(data.wasm.spend.asset)
	not asset_allowed(asset)
	msg := concat("", ["asset ", asset, " is not in allowed_assets"])
}

violations contains msg if {
	data.params.allowed_assets
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

violations contains msg if {
	data.params.allowed_chains
	not input.chain_id in data.params.allowed_chains
	msg := concat("", ["chain ", input.chain_id, " is not in allowed_chains"])
}

active if data.params.allowed_assets

# A function outside agentguard's table of value-moving selectors (data.wasm.spend.kind
# "unknown_call") may move anything; only its ETH value is known. It passes only as
# function_allowlist defines (included): listed in allowed_functions and not addressed to
# OFFCHAIN_TARGET, or an offchain call offchain_calls names.
unvalued_call if {
	data.wasm.spend.kind == "unknown_call"
	not data.agentguard.function_allowlist.allowed_unknown_call
}

active if data.params.allowed_chains

asset_allowed(asset) if {
	some a in data.params.allowed_assets
	lower(a) == asset
}
