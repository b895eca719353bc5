# Which contract functions the agent may call: data.params.allowed_functions holds canonical
# signatures ("transfer(address,uint256)") matched against input.decoded_function_signature,
# which the operator derived from the calldata itself: a signature whose selector is a known
# value-moving function's but which is not that function is refused before any policy runs.
# Plain ETH transfers (no calldata) pass only if data.params.allow_plain_transfers is true.
# Offchain calls (agentguard.call_intent: name(string) to OFFCHAIN_TARGET, no value) pass only
# if data.params.offchain_calls names them; allowed_functions never allows a call to
# OFFCHAIN_TARGET, and offchain_calls never allows a call to any other address.
# This module also defines, for every bundled check, which unknown_call is allowed at all
# (allowed_unknown_call, offchain_call); the other policies include it.
package agentguard.function_allowlist

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "function_allowlist: params has no allowed_functions, allow_plain_transfers or offchain_calls, so nothing is allowed" if {
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
	not offchain_call
	not to_offchain_target
	signature := object.get(input, "decoded_function_signature", "")
	not signature in object.get(data.params, "allowed_functions", [])
	msg := concat("", ["function ", signature, " on ", input.to, " is not in allowed_functions"])
}

violations contains msg if {
	active
	not plain
	not offchain_call
	to_offchain_target
	msg := concat("", [
		"function ", object.get(input, "decoded_function_signature", ""), " with value ", input.value,
		" on ", input.to, " (OFFCHAIN_TARGET) is not an offchain call offchain_calls names",
		" (name(string), value 0); allowed_functions does not allow calls to OFFCHAIN_TARGET",
	])
}

plain if input.data == "0x"

active if data.params.allowed_functions

active if is_boolean(data.params.allow_plain_transfers)

active if data.params.offchain_calls

# agentguard.OFFCHAIN_TARGET = keccak("agentguard.offchain-call")[12:]: no key, no code.
offchain_target := "0x5465b623a05c86dc37be9e4eb429f1f4f7571d95"

to_offchain_target if lower(input.to) == offchain_target

# An offchain call the params allow: name(string) of a listed name, to OFFCHAIN_TARGET, no value.
# Any other action to OFFCHAIN_TARGET (a token transfer's calldata, a value) is judged by the
# ordinary rules, which allowed_functions cannot open.
offchain_call if {
	data.wasm.spend.kind == "unknown_call"
	to_offchain_target
	input.value == "0"
	some name in data.params.offchain_calls
	input.decoded_function_signature == concat("", [name, "(string)"])
}

# A function outside agentguard's table of value-moving selectors (data.wasm.spend.kind
# "unknown_call") may move anything; only its ETH value is known. It passes only if
# data.params.allowed_functions lists its canonical signature and it is not addressed to
# OFFCHAIN_TARGET, or if it is an offchain call that data.params.offchain_calls names.
allowed_unknown_call if offchain_call

allowed_unknown_call if {
	data.wasm.spend.kind == "unknown_call"
	not to_offchain_target
	input.decoded_function_signature in object.get(data.params, "allowed_functions", [])
}
