# Amount helpers for policy authors: compare uint256 amounts as numbers, exactly.
#
# Why: a uint256 argument reaches Rego as a decimal string (input.decoded_function_arguments,
# input.value, data.wasm.spend.amount), because a JSON number cannot hold 2^256 - 1. Compared
# as written, `input.decoded_function_arguments[1] <= data.params.max` fails open: against a
# string cap it compares text ("10000000" <= "5000000" holds); against a number cap it compares
# types, not values (rego-cpp, which the operators run, lets every string through).
#
# Every function here takes amounts as canonical decimal strings ("0", "5000000", no sign, no
# leading zeros, at most 78 digits) or as exact non-negative integer numbers up to 2^53 - 1,
# and is undefined for anything else (a float, a negative, "1e6", "0x10", " 5"). Use them in
# allow rules (`allow if amounts.lte(x, cap)`) or negated in deny rules
# (`deny if not amounts.lte(x, cap)`): both fail closed when an amount is malformed OR
# missing. Never `deny if <function>(x, cap)`: a function called with an undefined argument
# (a missing cap, a typo in its params key) is undefined, so such a rule denies nothing.
#
# Include it from your policy_metadata.json with "includes": ["lib/amounts"], then
# `import data.agentguard.lib.amounts` and call `amounts.lte(a, b)`.
package agentguard.lib.amounts

import rego.v1

# The canonical decimal string of an amount; undefined unless x is a valid amount. A string is
# one when it matches ^(0|[1-9][0-9]{0,77})$; checked with four cheap builtins, since rego-cpp's
# regex.match costs about 45 µs a call (tests/policies/test_amounts_fast.py holds them equal).
amount("0") := "0"

amount(x) := x if {
	is_string(x)
	x != ""
	count(x) <= 78
	not startswith(x, "0")
	trim_left(x, "0123456789") == ""
}

amount(x) := format_int(x, 10) if {
	is_number(x)
	x >= 0
	x == floor(x)
	x <= 9007199254740991
}

# True iff x is a valid amount.
is_amount(x) if amount(x)

# a <= b, exactly; undefined if either is not a valid amount.
lte(a, b) if digits_lte(amount(a), amount(b))

# a < b, exactly; undefined if either is not a valid amount.
lt(a, b) if {
	x := amount(a)
	y := amount(b)
	not digits_lte(y, x)
}

# a >= b and a > b: lte and lt with the arguments swapped.
gte(a, b) if lte(b, a)

gt(a, b) if lt(b, a)

# Canonical decimal strings: shorter is smaller; equal lengths compare as text.
digits_lte(x, y) if count(x) < count(y)

digits_lte(x, y) if {
	count(x) == count(y)
	x <= y
}
