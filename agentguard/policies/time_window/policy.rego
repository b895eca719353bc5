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
	not inside_some_window
	msg := concat("", [weekday, " ", now_hhmm, " UTC is outside the allowed time_windows"])
}

# "HH:MM" strings are zero-padded, so they order like the times they name ("24:00" last).
# Everything here is written without helper functions: rego-cpp calls are costly per call.
ns := data.wasm.now * 1000000000

weekday := time.weekday(ns)

now_hhmm := sprintf("%02d:%02d", [time.clock(ns)[0], time.clock(ns)[1]])

inside_some_window if {
	some w in data.params.time_windows
	w.start < w.end
	w.start <= now_hhmm
	now_hhmm < w.end
	some d in w.days
	day_forms[weekday][d]
}

inside_some_window if {
	some w in data.params.time_windows
	w.end <= w.start
	w.start <= now_hhmm
	some d in w.days
	day_forms[weekday][d]
}

inside_some_window if {
	some w in data.params.time_windows
	w.end <= w.start
	now_hhmm < w.end
	some d in w.days
	day_forms[day_before[weekday]][d]
}

day_forms := {
	"Monday": {0, "monday", "mon", "Monday", "Mon"},
	"Tuesday": {1, "tuesday", "tue", "Tuesday", "Tue"},
	"Wednesday": {2, "wednesday", "wed", "Wednesday", "Wed"},
	"Thursday": {3, "thursday", "thu", "Thursday", "Thu"},
	"Friday": {4, "friday", "fri", "Friday", "Fri"},
	"Saturday": {5, "saturday", "sat", "Saturday", "Sat"},
	"Sunday": {6, "sunday", "sun", "Sunday", "Sun"},
}

day_before := {
	"Monday": "Sunday", "Tuesday": "Monday", "Wednesday": "Tuesday", "Thursday": "Wednesday",
	"Friday": "Thursday", "Saturday": "Friday", "Sunday": "Saturday",
}
