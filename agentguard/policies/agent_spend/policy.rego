# The default policy: every bundled check, each active only when its params key is present.
# A hard violation from any check denies; only a clean action above an approval threshold asks a
# human. With no check configured nothing is allowed. Whatever is configured, a function
# agentguard cannot value from calldata (data.wasm.spend.kind "unknown_call") is denied unless
# data.params.allowed_functions lists it (an offchain call: unless data.params.offchain_calls
# names it; see function_allowlist).
#
# The checks are those of tx_cap, window_cap, rate_limit, recipient_list, function_allowlist,
# asset_chain_allowlist, time_window and approval_threshold (same rules, same messages; their
# files explain each rule), written out in this one module: rego-cpp's cost per query grows
# with the code in the bundle (rules it never reaches included) and with every rule body it
# tries, and iterating another package's violations costs about 18 µs per check (measured:
# docs/architecture.md, "Policy engine"). The checks few configurations use sit behind one
# gate, so a typical configuration skips them in one body; the two common checks (max_per_tx,
# allowed_recipients) pass a clean action in one body each, and only an action that fails that
# body reaches the rule that picks its message; so do the others, each behind its own filter.
# tests/policies/test_golden.py holds this module to the separate policies' answers,
# tests/policies/test_agent_spend_differential.py and test_agent_spend_all_keys_differential.py
# to its previous versions on random hostile params and inputs.
package agentguard.agent_spend

import data.agentguard.lib.amounts
import rego.v1

default allow := false

default approval_required := false

allow if {
	count(violations) == 0
	not approval_required
}

reasons := violations | {approval_reason} if approval_required
else := violations

# Messages are built with concat: rego-cpp 1.5.2's sprintf quotes strings made by builtins.
# Each body tests its params key first, which keeps an unconfigured check nearly free.
# Amounts are canonical decimal strings (no sign, no leading zeros): shorter is smaller, equal
# lengths compare as text. Exact for any uint256; to_number would round them to doubles.

# -- the checks nearly every configuration has
# Whatever else is configured: a function agentguard cannot value may move anything.
violations contains msg if {
	spend.kind == "unknown_call"
	not allowed_unknown_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

# No check configured: no check key is present, whatever its value (false included). The two
# common keys are tested first, so a configuration with either fails this body at once.
violations contains "agent_spend: params configures no check, so nothing is allowed" if {
	not data.params.max_per_tx
	not data.params.allowed_recipients
	not count(object.filter(data.params, [
		"max_per_tx", "allowed_recipients", "window_caps", "rate_limits", "denied_recipients",
		"allowed_contracts", "denied_contracts", "allowed_functions", "offchain_calls",
		"allow_plain_transfers", "allowed_assets", "allowed_chains", "time_windows", "approval_above",
	])) > 0
}

# -- tx_cap, and the spend data every cap needs. A valid spend within its cap costs one body
# and one rule (tx_ok), the first body of which reads the spend once and its own asset's cap
# directly; only a spend it does not pass reaches tx_violation, which alone decides the message
# (tx_ok is only a filter: whatever it passes, no body of tx_violation would hold).
violations contains msg if {
	data.params.max_per_tx
	not tx_ok
	msg := tx_violation
}

tx_ok if {
	s := data.wasm.spend
	concat("", [s.asset, s.amount, s.kind])
	count(s.amount) < count(data.params.max_per_tx[lower(s.asset)])
} else if {
	valid_spend
	within_cap
}

tx_violation := "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	not valid_spend
} else := msg if {
	not cap
	moves_value
	msg := concat("", ["asset ", asset, " has no entry in max_per_tx (and max_per_tx has no * entry); denied"])
} else := msg if {
	limit := cap
	not within_cap
	msg := concat("", [
		"amount ", spend.amount, " of asset ", asset,
		" is above the per-transaction cap max_per_tx = ", limit,
	])
}

# -- recipient_list: a recipient listed as sent costs one body (concat: undefined unless it is
# a string, so a listed non-string still gets its message); recipient_violation decides.
violations contains msg if {
	data.params.allowed_recipients
	not concat("", [spend.recipient]) in data.params.allowed_recipients
	msg := recipient_violation
}

recipient_violation := "the gateway sent no spend recipient (data.wasm.spend.recipient); denied" if {
	not is_string(spend.recipient)
} else := msg if {
	not offchain_call
	not listed(data.params.allowed_recipients, recipient)
	msg := concat("", ["recipient ", recipient, " is not in allowed_recipients"])
}

# -- every other check, behind one gate
# Only a gate for speed: every body of more_violations tests its own params key. With no key
# but the two common checks (and approvers, tiers) that whole set costs one body.
violations contains msg if {
	not count(object.remove(data.params, ["max_per_tx", "allowed_recipients", "approvers", "tiers"])) == 0
	some msg in more_violations
}

# Each check below passes a clean action in one body: a filter (a *_ok rule, or a first
# expression after the key) that no action any of the check's message bodies would hold for
# passes; only an action it does not pass reaches those bodies, which alone decide the
# messages (as tx_ok, above). Measured with all 13 keys (benchmarks/bench_policy.py): a query
# 0.68x of the module without the filters; tests/policies/test_agent_spend_all_keys_differential.py
# holds this module to that one (agent_spend_15178d2.rego) on every key's edges.

# -- every other check that values the spend: window_cap, approval_threshold, allowed_assets
more_violations contains "the gateway sent no valid spend data (data.wasm.spend); denied" if {
	not valid_spend
	spend_needed
}

spend_needed if data.params.window_caps

spend_needed if data.params.approval_above

spend_needed if {
	data.params.allowed_assets
	not is_string(spend.asset)
}

# -- window_cap: each cap on this asset passed by a history total shorter than its max
more_violations contains msg if {
	data.params.window_caps
	not window_ok
	some msg in window_violations
}

window_ok if {
	count(applicable) > 0
	every c in applicable {
		total := data.wasm.history[c.window].projected[asset]
		is_string(total)
		count(total) < count(c.max_amount)
	}
} else if {
	data.params.max_per_tx
	count(applicable) == 0
}

window_violations contains msg if {
	some c in applicable
	not is_string(data.wasm.history[c.window].projected[asset])
	msg := concat("", ["the gateway sent no spend history for the ", c.window, " s window; denied"])
}

window_violations contains msg if {
	some c in applicable
	total := data.wasm.history[c.window].projected[asset]
	not amount_lte(total, c.max_amount)
	msg := concat("", [
		"spending ", spend.amount, " of asset ", asset, " would bring the ", c.window,
		" s total to ", total, ", above the window cap max_amount = ", c.max_amount,
	])
}

window_violations contains msg if {
	not data.params.max_per_tx
	valid_spend
	count(applicable) == 0
	moves_value
	msg := concat("", ["asset ", asset, " has no entry in window_caps (and no max_per_tx caps it); denied"])
}

# -- rate_limit: every limit's count read as a number below its max
more_violations contains msg if {
	data.params.rate_limits
	not rate_ok
	some msg in rate_violations
}

rate_ok if {
	every r in data.params.rate_limits {
		done := data.wasm.history[format_int(r.window_seconds, 10)].count
		is_number(done)
		is_number(r.max_count)
		done + 1 <= r.max_count
	}
}

rate_violations contains msg if {
	some r in data.params.rate_limits
	not is_number(data.wasm.history[format_int(r.window_seconds, 10)].count)
	msg := concat("", [
		"the gateway sent no action count for the ", format_int(r.window_seconds, 10),
		" s window; denied",
	])
}

rate_violations contains msg if {
	some r in data.params.rate_limits
	window := format_int(r.window_seconds, 10)
	done := data.wasm.history[window].count
	done + 1 > r.max_count
	msg := concat("", [
		format_int(done, 10), " actions in the last ", window,
		" s already; rate limit max_count = ", format_int(r.max_count, 10),
	])
}

# -- recipient_list's denied list and contract_list: no entry is this address in any case
more_violations contains msg if {
	data.params.denied_recipients
	not denied_recipient_ok
	some msg in denied_recipient_violations
}

denied_recipient_ok if {
	is_string(spend.recipient)
	not listed(data.params.denied_recipients, recipient)
}

denied_recipient_violations contains "the gateway sent no spend recipient (data.wasm.spend.recipient); denied" if {
	not is_string(spend.recipient)
}

denied_recipient_violations contains msg if {
	not offchain_call
	listed(data.params.denied_recipients, recipient)
	msg := concat("", ["recipient ", recipient, " is in denied_recipients"])
}

more_violations contains msg if {
	data.params.allowed_contracts
	not contract in data.params.allowed_contracts # as sent: listed
	contract_call
	not listed(data.params.allowed_contracts, contract)
	msg := concat("", ["contract ", contract, " is not in allowed_contracts"])
}

more_violations contains msg if {
	data.params.denied_contracts
	contract_call
	listed(data.params.denied_contracts, contract)
	msg := concat("", ["contract ", contract, " is in denied_contracts"])
}

# -- function_allowlist: a listed function not to OFFCHAIN_TARGET, or an allowed plain transfer
more_violations contains msg if {
	function_checks
	not function_ok
	some msg in function_violations
}

function_ok if {
	not input.data == "0x"
	input.decoded_function_signature in data.params.allowed_functions
	not to_offchain_target
} else if {
	input.data == "0x"
	data.params.allow_plain_transfers == true
}

function_violations contains msg if {
	input.data == "0x"
	not data.params.allow_plain_transfers == true
	msg := concat("", ["plain transfer to ", input.to, " is not allowed (allow_plain_transfers is not true)"])
}

function_violations contains msg if {
	not input.data == "0x"
	not offchain_call
	not to_offchain_target
	signature := object.get(input, "decoded_function_signature", "")
	not signature in object.get(data.params, "allowed_functions", [])
	msg := concat("", ["function ", signature, " on ", input.to, " is not in allowed_functions"])
}

function_violations contains msg if {
	not input.data == "0x"
	not offchain_call
	to_offchain_target
	msg := concat("", [
		"function ", object.get(input, "decoded_function_signature", ""), " with value ", input.value,
		" on ", input.to, " (OFFCHAIN_TARGET) is not an offchain call offchain_calls names",
		" (name(string), value 0); allowed_functions does not allow calls to OFFCHAIN_TARGET",
	])
}

# -- asset_chain_allowlist
more_violations contains msg if {
	data.params.allowed_assets
	not asset in data.params.allowed_assets # as sent: listed
	not offchain_call # it moves nothing
	not listed(data.params.allowed_assets, asset)
	msg := concat("", ["asset ", asset, " is not in allowed_assets"])
}

more_violations contains msg if {
	data.params.allowed_chains
	not input.chain_id in data.params.allowed_chains
	msg := concat("", ["chain ", input.chain_id, " is not in allowed_chains"])
}

# -- time_window: a clock inside a window that lists today's number
more_violations contains msg if {
	data.params.time_windows
	not time_ok
	msg := time_violation
}

time_ok if {
	is_number(data.wasm.now)
	some w in data.params.time_windows
	w.start < w.end
	w.start <= now_hhmm
	now_hhmm < w.end
	today in w.days
} else if {
	is_number(data.wasm.now)
	inside_some_window
}

time_violation := "the gateway sent no clock (data.wasm.now); denied" if {
	not is_number(data.wasm.now)
} else := outside

# -- approval_threshold: only a clean action asks a human.
approval_required if {
	data.params.approval_above
	not below_threshold
	valid_spend
	threshold
	not amount_lte(spend.amount, threshold)
	not data.wasm.approved == true
	count(violations) == 0
}

# A filter, as tx_ok: an amount shorter than its asset's own threshold is within it.
below_threshold if count(data.wasm.spend.amount) < count(data.params.approval_above[lower(data.wasm.spend.asset)])

approval_reason := concat("", [
	"amount ", spend.amount, " of asset ", asset,
	" is above the approval threshold approval_above = ", threshold,
	"; a human must approve this exact intent",
])

# -- shared values
spend := data.wasm.spend

asset := lower(spend.asset)

recipient := lower(spend.recipient)

contract := lower(input.to)

# The gateway sends canonical decimal strings; this only refuses a missing or mistyped spend
# (concat is undefined unless all three are strings: one builtin instead of three is_string).
valid_spend if concat("", [spend.asset, spend.amount, spend.kind])

cap := data.params.max_per_tx[asset]

cap := data.params.max_per_tx["*"] if not data.params.max_per_tx[asset]

within_cap if count(spend.amount) < count(cap)

within_cap if {
	count(spend.amount) == count(cap)
	spend.amount <= cap
}

threshold := data.params.approval_above[asset]

threshold := data.params.approval_above["*"] if not data.params.approval_above[asset]

amount_lte(a, b) if count(a) < count(b)

amount_lte(a, b) if {
	count(a) == count(b)
	a <= b
}

# A token action moves value even at amount 0 (an ERC-721 id 0 reads as amount 0).
moves_value if spend.amount != "0"

moves_value if spend.kind in {"transfer", "approval", "nft"}

# Only caps on the asset this action moves: it cannot raise the total of any other asset.
applicable contains {"window": format_int(c.window_seconds, 10), "max_amount": c.max_amount} if {
	data.params.window_caps
	valid_spend
	some c in data.params.window_caps
	lower(c.asset) == asset
}

function_checks if data.params.allowed_functions

function_checks if is_boolean(data.params.allow_plain_transfers)

function_checks if data.params.offchain_calls

contract_call if {
	input.data != "0x"
	not offchain_call
}

# 0 wei without calldata moves nothing: it can only run the target's receive/fallback code.
contract_call if {
	input.data == "0x"
	input.value == "0"
}

listed(addresses, address) if {
	some a in addresses
	lower(a) == address
}

# agentguard.OFFCHAIN_TARGET = keccak("agentguard.offchain-call")[12:]: no key, no code.
to_offchain_target if contract == "0x5465b623a05c86dc37be9e4eb429f1f4f7571d95"

# An offchain call the params allow: name(string) of a listed name, to OFFCHAIN_TARGET, no value.
offchain_call if {
	data.params.offchain_calls
	spend.kind == "unknown_call"
	to_offchain_target
	input.value == "0"
	some name in data.params.offchain_calls
	input.decoded_function_signature == concat("", [name, "(string)"])
}

allowed_unknown_call if offchain_call

allowed_unknown_call if {
	data.params.allowed_functions
	spend.kind == "unknown_call"
	not to_offchain_target
	input.decoded_function_signature in data.params.allowed_functions
}

# -- time_window's clock ("HH:MM" strings are zero-padded, so they order like the times)
default outside := "the gateway clock is outside the allowed time_windows"

outside := concat("", [day_names[today], " ", now_hhmm, " UTC is outside the allowed time_windows"])

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
	count(day_forms[today] & {d | some d in w.days}) > 0
}

window_admits(w) if {
	w.end <= w.start
	w.start <= now_hhmm
	count(day_forms[today] & {d | some d in w.days}) > 0
}

window_admits(w) if {
	w.end <= w.start
	now_hhmm < w.end
	count(day_forms[yesterday] & {d | some d in w.days}) > 0
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

# Trust tier (docs/trust-tiers.md), signed by the operators with the decision: data.params.tiers
# = {"high" | "all" | "human" | "vault": {"<asset, lowercase>" | "*": "<decimal>"}}; a spend
# strictly above an entry needs that tier (the highest level wins; "vault" adds the vault-only
# bit, 4). An amount the helpers cannot read counts as above every entry (fail closed).
default tier := 0

tier := tier_level + tier_vault if data.params.tiers

default tier_level := 0

tier_level := 3 if "human" in tier_exceeded
else := 2 if "all" in tier_exceeded
else := 1 if "high" in tier_exceeded

default tier_vault := 0

tier_vault := 4 if "vault" in tier_exceeded

# The tiers whose entry (this asset's, else "*") the spend is strictly above, or whose amounts
# lib/amounts cannot read. Written as rules, not per-tier function calls, and the spend's
# amount read once: each tier cost about 45 µs per regex and function call more.
tier_exceeded contains name if {
	some name, table in data.params.tiers
	limit := table[asset]
	not tier_within(limit)
}

tier_exceeded contains name if {
	some name, table in data.params.tiers
	not table[asset]
	limit := table["*"]
	not tier_within(limit)
}

tier_amount := amounts.amount(spend.amount)

tier_within(limit) if amounts.digits_lte(tier_amount, amounts.amount(limit))
