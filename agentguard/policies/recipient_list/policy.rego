# Who may receive value, and which contracts may be called.
# allowed_recipients / denied_recipients apply to the effective recipient, as the operators read
# it from the calldata (data.wasm.spend.recipient: payTo of a payment or token transfer, the
# spender of an approval or permit, `to` of an ETH transfer); a function agentguard cannot value
# has no known recipient and is denied unless allowed_functions lists it; an offchain call
# offchain_calls names (function_allowlist) moves nothing and no list judges it;
# allowed_contracts / denied_contracts apply to input.to when the action calls a contract (calldata,
# or 0 wei without calldata, which can only run the target's receive/fallback code).
# Addresses compare case-insensitively.
package agentguard.recipient_list

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "recipient_list: params has no recipient or contract list, so nothing is allowed" if {
	not recipient_checks
	not contract_checks
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains "the gateway sent no spend recipient (data.wasm.spend.recipient); denied" if {
	recipient_checks
	not is_string(data.wasm.spend.recipient)
}

violations contains msg if {
	recipient_checks
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

violations contains msg if {
	data.params.allowed_recipients
	not offchain_call
	not listed(data.params.allowed_recipients, recipient)
	msg := concat("", ["recipient ", recipient, " is not in allowed_recipients"])
}

violations contains msg if {
	data.params.denied_recipients
	not offchain_call
	listed(data.params.denied_recipients, recipient)
	msg := concat("", ["recipient ", recipient, " is in denied_recipients"])
}

violations contains msg if {
	data.params.allowed_contracts
	contract_call
	not listed(data.params.allowed_contracts, contract)
	msg := concat("", ["contract ", contract, " is not in allowed_contracts"])
}

violations contains msg if {
	data.params.denied_contracts
	contract_call
	listed(data.params.denied_contracts, contract)
	msg := concat("", ["contract ", contract, " is in denied_contracts"])
}

recipient_checks if data.params.allowed_recipients

recipient_checks if data.params.denied_recipients

contract_checks if data.params.allowed_contracts

contract_checks if data.params.denied_contracts

recipient := lower(data.wasm.spend.recipient)

contract := lower(input.to)

# An offchain call offchain_calls names (function_allowlist) moves nothing and reaches no
# contract: no recipient or contract list judges it.
offchain_call if data.agentguard.function_allowlist.offchain_call

contract_call if {
	input.data != "0x"
	not offchain_call
}

# 0 wei without calldata moves nothing: it can only matter as a call that runs the target's
# receive/fallback code as the wallet, so the contract lists judge its target.
contract_call if {
	input.data == "0x"
	input.value == "0"
}

# A function outside agentguard's table of value-moving selectors (data.wasm.spend.kind
# "unknown_call") may move anything; only its ETH value is known. It passes only as
# function_allowlist defines (included): listed in allowed_functions and not addressed to
# OFFCHAIN_TARGET, or an offchain call offchain_calls names.
unvalued_call if {
	data.wasm.spend.kind == "unknown_call"
	not data.agentguard.function_allowlist.allowed_unknown_call
}

listed(addresses, address) if {
	some a in addresses
	lower(a) == address
}
