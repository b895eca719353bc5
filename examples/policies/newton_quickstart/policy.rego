# A policy in the shape of Newton's quickstart: an allowlist of recipients on input.to and a
# value cap. It runs unchanged on agentguard's reference network and on Newton's operators.
#
# Note: to_number is engine-dependent past 2^53 (agentguard's bundled policies compare decimal
# strings instead); it is fine for caps well below that, such as wei amounts under ~0.009 ETH
# or any amount of a 6-decimal token below 9 billion.
package newton_quickstart

import rego.v1

default allow := false

allow if {
	recipient_allowed
	to_number(input.value) <= data.params.max_value
}

recipient_allowed if {
	some recipient in data.params.allowed_recipients
	lower(recipient) == lower(input.to)
}
