# When the agent may act: data.params.time_windows = [{days, start, end}] in UTC, judged on
# data.wasm.now (the gateway's clock, unix seconds). days holds 0..6 (Monday = 0) or names
# ("mon", "Mon", "monday", "Monday"); start is inclusive and end exclusive ("HH:MM", end may be "24:00"); a
# window whose end is not after its start runs past midnight into the next day.
package agentguard.time_window

import rego.v1

default allow := false

allow if count(reasons) == 0

reasons contains msg if some msg in violations

reasons contains "time_window: params has no time_windows, so nothing is allowed" if {
	not is_array(data.params.time_windows)
}

# Checks that run only when their params key is present (agent_spend aggregates these); each
# body tests that key first, which keeps an inactive check nearly free.
# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
violations contains "the gateway sent no clock (data.wasm.now); denied" if {
	data.params.time_windows
	not is_number(data.wasm.now)
}

violations contains msg if {
	data.params.time_windows
	is_number(data.wasm.now)
	not inside_some_window
	msg := outside
}

# The message cannot fail the check: it has a fallback of its own.
default outside := "the gateway clock is outside the allowed time_windows"

outside := concat("", [day_names[today], " ", now_hhmm, " UTC is outside the allowed time_windows"])

# "HH:MM" strings are zero-padded, so they order like the times they name ("24:00" last).
# Plain integer arithmetic (floor: rego-cpp divides into floats, which sprintf's %d refuses);
# cheaper than the time.* builtins, and no helper functions for the clock: each call costs.
second_of_day := data.wasm.now % 86400

today := (floor((data.wasm.now - second_of_day) / 86400) + 3) % 7 # 1970-01-01 was a Thursday

yesterday := (today + 6) % 7

now_hhmm := sprintf("%02d:%02d", [floor(second_of_day / 3600), floor((second_of_day % 3600) / 60)])

# One pass over the windows, three cases per window (a body per case cost a pass each).
inside_some_window if {
	some w in data.params.time_windows
	window_admits(w)
}

window_admits(w) if {
	w.start < w.end
	w.start <= now_hhmm
	now_hhmm < w.end
	some d in w.days
	day_forms[today][d]
}

window_admits(w) if {
	w.end <= w.start
	w.start <= now_hhmm
	some d in w.days
	day_forms[today][d]
}

window_admits(w) if {
	w.end <= w.start
	now_hhmm < w.end
	some d in w.days
	day_forms[yesterday][d]
}

day_names := ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

day_forms := [
	{0, "monday", "mon", "Monday", "Mon"},
	{1, "tuesday", "tue", "Tuesday", "Tue"},
	{2, "wednesday", "wed", "Wednesday", "Wed"},
	{3, "thursday", "thu", "Thursday", "Thu"},
	{4, "friday", "fri", "Friday", "Fri"},
	{5, "saturday", "sat", "Saturday", "Sat"},
	{6, "sunday", "sun", "Sunday", "Sun"},
]
