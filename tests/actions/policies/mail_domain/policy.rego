# An offchain call's arguments are one canonical JSON string (the intent is name(string)), so a
# policy reads them with json.unmarshal. Here: send_email only to addresses at params.domain.
package mail_domain

import rego.v1

default allow := false

allow if count(reasons) == 0

arguments := json.unmarshal(input.decoded_function_arguments[0])

reasons contains msg if {
	input.decoded_function_signature != "send_email(string)"
	msg := concat("", ["only send_email(string) is allowed, not ", input.decoded_function_signature])
}

reasons contains msg if {
	input.decoded_function_signature == "send_email(string)"
	not endswith(arguments.to, concat("", ["@", data.params.domain]))
	msg := concat("", ["send_email: recipients must be at ", data.params.domain])
}
