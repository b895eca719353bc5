# Rolling-window caps per asset: data.params.window_caps = [{asset, window_seconds, max_amount}].
# An asset with no entry may not move unless data.params.max_per_tx is configured to judge it.
# The gateway precomputes data.wasm.history["<window>"].projected[asset] (attested, unreleased
# spend in the window plus this action), so the policy never adds amounts.
package agentguard.window_cap

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "window_cap: params has no window_caps, so nothing is allowed" if {
	not is_array(data.params.window_caps)
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	data.params.window_caps
	not valid_spend
}

violations contains msg if {
	data.params.window_caps
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

violations contains msg if {
	some c in applicable
	not is_string(data.wasm.history[c.window].projected[asset])
	msg := concat("", ["the gateway sent no spend history for the ", c.window, " s window; denied"])
}

violations contains msg if {
	some c in applicable
	total := data.wasm.history[c.window].projected[asset]
	not amount_lte(total, c.max_amount)
	msg := concat("", [
		"spending ", data.wasm.spend.amount, " of asset ", asset, " would bring the ", c.window,
		" s total to ", total, ", above the window cap max_amount = ", c.max_amount,
	])
}

# An asset no window cap names would move without limit: denied, unless max_per_tx is configured
# to judge it (tx_cap then denies an asset it has no entry for). So every asset that moves is
# capped by something; a window cap on USDC alone no longer lets the vault's ETH leave.
violations contains msg if {
	data.params.window_caps
	not data.params.max_per_tx
	valid_spend
	count(applicable) == 0
	moves_value
	msg := concat("", ["asset ", asset, " has no entry in window_caps (and no max_per_tx caps it); denied"])
}

asset := lower(data.wasm.spend.asset)

# A token action moves value even at amount 0 (an ERC-721 id 0 reads as amount 0).
moves_value if data.wasm.spend.amount != "0"

moves_value if data.wasm.spend.kind in {"transfer", "approval", "nft"}

# Only caps on the asset this action moves: it cannot raise the total of any other asset.
applicable contains {"window": format_int(c.window_seconds, 10), "max_amount": c.max_amount} if {
	data.params.window_caps
	valid_spend
	some c in data.params.window_caps
	lower(c.asset) == asset
}

# The gateway sends canonical decimal strings; this only refuses a missing or mistyped spend.
valid_spend if {
	is_string(data.wasm.spend.asset)
	is_string(data.wasm.spend.amount)
	is_string(data.wasm.spend.kind)
}

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
