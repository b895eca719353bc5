# The default policy: every bundled check, each active only when its params key is present.
# A hard violation from any check denies; only a clean action above an approval threshold asks a
# human. With no check configured nothing is allowed. Whatever is configured, a function
# agentguard cannot value from calldata (data.wasm.spend.kind "unknown_call") is denied unless
# data.params.allowed_functions lists it (an offchain call: unless data.params.offchain_calls
# names it; see function_allowlist).
package agentguard.agent_spend

import data.agentguard.lib.amounts
import rego.v1

default allow := false

default approval_required := false

allow if {
	count(reasons) == 0
	not approval_required
}

# Each include is gated here on its own params keys, so an unconfigured check costs one lookup.
violations contains msg if {
	data.params.max_per_tx
	some msg in data.agentguard.tx_cap.violations
}

violations contains msg if {
	data.params.window_caps
	some msg in data.agentguard.window_cap.violations
}

violations contains msg if {
	data.params.rate_limits
	some msg in data.agentguard.rate_limit.violations
}

violations contains msg if {
	data.agentguard.recipient_list.recipient_checks
	some msg in data.agentguard.recipient_list.violations
}

violations contains msg if {
	data.agentguard.recipient_list.contract_checks
	some msg in data.agentguard.recipient_list.violations
}

violations contains msg if {
	data.agentguard.function_allowlist.active
	some msg in data.agentguard.function_allowlist.violations
}

violations contains msg if {
	data.agentguard.asset_chain_allowlist.active
	some msg in data.agentguard.asset_chain_allowlist.violations
}

violations contains msg if {
	data.params.time_windows
	some msg in data.agentguard.time_window.violations
}

violations contains msg if {
	data.params.approval_above
	some msg in data.agentguard.approval_threshold.violations
}

# Whatever else is configured: a function agentguard cannot value may move anything.
violations contains msg if {
	unvalued_call
	msg := concat("", [
		"function ", input.decoded_function_signature, " on ", input.to,
		" is not one agentguard can value (it may move tokens no cap sees); denied unless allowed_functions lists it (an offchain call: unless offchain_calls names it)",
	])
}

violations contains "agent_spend: params configures no check, so nothing is allowed" if {
	not configured
}

approval_required if {
	data.params.approval_above
	data.agentguard.approval_threshold.approval_required
	count(violations) == 0
}

reasons contains msg if some msg in violations

reasons contains msg if {
	approval_required
	some msg in data.agentguard.approval_threshold.reasons
}

# A function outside agentguard's table of value-moving selectors (data.wasm.spend.kind
# "unknown_call") may move anything; only its ETH value is known. It passes only as
# function_allowlist defines (included): listed in allowed_functions and not addressed to
# OFFCHAIN_TARGET, or an offchain call offchain_calls names.
unvalued_call if {
	data.wasm.spend.kind == "unknown_call"
	not data.agentguard.function_allowlist.allowed_unknown_call
}

configured if {
	some key, _ in data.params
	checks[key]
}

checks := {
	"max_per_tx", "window_caps", "rate_limits",
	"allowed_recipients", "denied_recipients", "allowed_contracts", "denied_contracts",
	"allowed_functions", "offchain_calls", "allow_plain_transfers",
	"allowed_assets", "allowed_chains",
	"time_windows", "approval_above",
}

# Trust tier (docs/trust-tiers.md), signed by the operators with the decision: data.params.tiers
# = {"high" | "all" | "human" | "vault": {"<asset, lowercase>" | "*": "<decimal>"}}; a spend
# strictly above an entry needs that tier (the highest level wins; "vault" adds the vault-only
# bit, 4). An amount the helpers cannot read counts as above every entry (fail closed).
default tier := 0

tier := tier_level + tier_vault if data.params.tiers

tier_levels := {"high": 1, "all": 2, "human": 3}

tier_exceeded contains n if {
	some name, n in tier_levels
	tier_above(name)
}

default tier_level := 0

tier_level := max(tier_exceeded) if count(tier_exceeded) > 0

default tier_vault := 0

tier_vault := 4 if tier_above("vault")

tier_above(name) if {
	limit := tier_limit(data.params.tiers[name])
	not amounts.lte(data.wasm.spend.amount, limit)
}

tier_limit(table) := table[lower(data.wasm.spend.asset)]

tier_limit(table) := table["*"] if not table[lower(data.wasm.spend.asset)]
