# Per-transaction cap per asset: data.params.max_per_tx = {"<asset, lowercase>": "<decimal>", "*": …}.
# data.wasm.spend is what the operators valued from the calldata itself (agentguard/_value.py):
# approvals count their allowance (unlimited = 2^256 - 1), NFT actions 2^256 - 1 of the
# collection; a function agentguard cannot value is denied unless allowed_functions lists it.
package agentguard.tx_cap

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "tx_cap: params has no max_per_tx, so nothing is allowed" if {
	not is_object(data.params.max_per_tx)
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	data.params.max_per_tx
	not valid_spend
}

violations contains msg if {
	data.params.max_per_tx
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

violations contains msg if {
	data.params.max_per_tx
	valid_spend
	not cap
	moves_value
	msg := concat("", ["asset ", asset, " has no entry in max_per_tx (and max_per_tx has no * entry); denied"])
}

violations contains msg if {
	data.params.max_per_tx
	valid_spend
	limit := cap
	not amount_lte(data.wasm.spend.amount, limit)
	msg := concat("", [
		"amount ", data.wasm.spend.amount, " of asset ", asset,
		" is above the per-transaction cap max_per_tx = ", limit,
	])
}

asset := lower(data.wasm.spend.asset)

cap := data.params.max_per_tx[asset]

cap := data.params.max_per_tx["*"] if not data.params.max_per_tx[asset]

# The gateway sends canonical decimal strings; this only refuses a missing or mistyped spend.
valid_spend if {
	is_string(data.wasm.spend.asset)
	is_string(data.wasm.spend.amount)
	is_string(data.wasm.spend.kind)
}

# Only an action that moves no amount and is no token action passes an asset without a cap:
# a token transfer or approval of 0 could be an NFT id 0 (ERC-721 shares ERC-20's selectors).
moves_value if data.wasm.spend.amount != "0"

moves_value if data.wasm.spend.kind in {"transfer", "approval", "nft"}

# A function outside agentguard's table of value-moving selectors (data.wasm.spend.kind
# "unknown_call") may move anything; only its ETH value is known. It passes only as
# function_allowlist defines (included): listed in allowed_functions and not addressed to
# OFFCHAIN_TARGET, or an offchain call offchain_calls names.
unvalued_call if {
	data.wasm.spend.kind == "unknown_call"
	not data.agentguard.function_allowlist.allowed_unknown_call
}


# Amounts are canonical decimal strings (no sign, no leading zeros): shorter is smaller, equal
# lengths compare as text. Exact for any uint256; to_number would round them to doubles.
amount_lte(a, b) if count(a) < count(b)

amount_lte(a, b) if {
	count(a) == count(b)
	a <= b
}
