# Which contract functions the agent may call: data.params.allowed_functions holds canonical
# signatures ("transfer(address,uint256)") matched against input.decoded_function_signature,
# which the operator derived from the calldata itself: a signature whose selector is a known
# value-moving function's but which is not that function is refused before any policy runs.
# Plain ETH transfers (no calldata) pass only if data.params.allow_plain_transfers is true.
package agentguard.function_allowlist

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "function_allowlist: params has no allowed_functions or allow_plain_transfers, so nothing is allowed" if {
	not active
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains msg if {
	active
	plain
	not data.params.allow_plain_transfers == true
	msg := concat("", ["plain transfer to ", input.to, " is not allowed (allow_plain_transfers is not true)"])
}

violations contains msg if {
	active
	not plain
	signature := object.get(input, "decoded_function_signature", "")
	not signature in object.get(data.params, "allowed_functions", [])
	msg := concat("", ["function ", signature, " on ", input.to, " is not in allowed_functions"])
}

plain if input.data == "0x"

active if data.params.allowed_functions

active if is_boolean(data.params.allow_plain_transfers)
