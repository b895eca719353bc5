# A small spend-cap policy the network tests control completely (the bundled agent_spend
# policy is tested by its own suite); it reads every data.wasm field the gateway provides.
package netcheck

import rego.v1

default allow := false

amount_lte(a, b) if count(a) < count(b)

amount_lte(a, b) if {
	count(a) == count(b)
	a <= b
}

spend := data.wasm.spend

denials contains "recipient is not on the allowlist" if {
	count(data.params.allowed_recipients) > 0
	allowed := {lower(r) | some r in data.params.allowed_recipients}
	not spend.recipient in allowed
}

denials contains msg if {
	not amount_lte(spend.amount, data.params.max_per_tx)
	msg := sprintf("amount %s exceeds max_per_tx %s", [spend.amount, data.params.max_per_tx])
}

denials contains msg if {
	some cap in data.params.window_caps
	lower(cap.asset) == spend.asset
	projected := data.wasm.history[sprintf("%d", [cap.window_seconds])].projected[spend.asset]
	not amount_lte(projected, cap.max_amount)
	msg := sprintf("window cap: %s would pass %s in %ds", [projected, cap.max_amount, cap.window_seconds])
}

denials contains msg if {
	some limit in data.params.rate_limits
	data.wasm.history[sprintf("%d", [limit.window_seconds])].count >= limit.max_count
	msg := sprintf("rate limit: %d actions in %ds", [limit.max_count, limit.window_seconds])
}

needs_approval if {
	data.params.approval_above != ""
	not amount_lte(spend.amount, data.params.approval_above)
	not data.wasm.approved
}

reasons := denials if count(denials) > 0

reasons := {"amount needs a human approval"} if {
	count(denials) == 0
	needs_approval
}

approval_required if {
	count(denials) == 0
	needs_approval
}

allow if {
	count(denials) == 0
	not needs_approval
}
