# Per-transaction cap per asset: data.params.max_per_tx = {"<asset, lowercase>": "<decimal>", "*": …}.
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
	valid_spend
	not cap
	data.wasm.spend.amount != "0"
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
}

# Amounts are canonical decimal strings (no sign, no leading zeros): shorter is smaller, equal
# lengths compare as text. Exact for any uint256; to_number would round them to doubles.
amount_lte(a, b) if count(a) < count(b)

amount_lte(a, b) if {
	count(a) == count(b)
	a <= b
}
