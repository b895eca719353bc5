# Actions per rolling window: data.params.rate_limits = [{window_seconds, max_count}].
# data.wasm.history["<window>"].count is the number of earlier attested actions in the window.
package agentguard.rate_limit

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "rate_limit: params has no rate_limits, so nothing is allowed" if {
	not is_array(data.params.rate_limits)
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains msg if {
	some r in data.params.rate_limits
	not is_number(data.wasm.history[format_int(r.window_seconds, 10)].count)
	msg := concat("", [
		"the gateway sent no action count for the ", format_int(r.window_seconds, 10),
		" s window; denied",
	])
}

violations contains msg if {
	some r in data.params.rate_limits
	window := format_int(r.window_seconds, 10)
	done := data.wasm.history[window].count
	done + 1 > r.max_count
	msg := concat("", [
		format_int(done, 10), " actions in the last ", window,
		" s already; rate limit max_count = ", format_int(r.max_count, 10),
	])
}
