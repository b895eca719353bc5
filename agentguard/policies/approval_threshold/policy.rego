# Human approval above a threshold: data.params.approval_above = {"<asset, lowercase>": "<decimal>",
# "*": …}. An amount strictly above its threshold needs a human, unless data.wasm.approved is true
# (the gateway sets it once an admin approved this exact intent hash).
package agentguard.approval_threshold

import rego.v1

default allow := false

default approval_required := false

allow if {
	count(reasons) == 0
	not approval_required
}

approval_required if {
	needs_approval
	not data.wasm.approved == true
}

# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
reasons contains msg if {
	approval_required
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); a human must approve this exact intent unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

reasons contains msg if {
	approval_required
	valid_spend
	limit := threshold
	not amount_lte(data.wasm.spend.amount, limit)
	msg := concat("", [
		"amount ", data.wasm.spend.amount, " of asset ", asset,
		" is above the approval threshold approval_above = ", threshold,
		"; a human must approve this exact intent",
	])
}

reasons contains "approval_threshold: params has no approval_above, so nothing is allowed" if {
	not is_object(data.params.approval_above)
}

reasons contains msg if some msg in violations

violations contains "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	data.params.approval_above
	not valid_spend
}

needs_approval if {
	data.params.approval_above
	valid_spend
	limit := threshold
	not amount_lte(data.wasm.spend.amount, limit)
}

needs_approval if {
	data.params.approval_above
	unvalued_call
}

asset := lower(data.wasm.spend.asset)

threshold := data.params.approval_above[asset]

threshold := data.params.approval_above["*"] if not data.params.approval_above[asset]

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
