"""``newt_simulateTask``: evaluate once in the gateway, sign nothing, record nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentguard._tiers import human_gate
from agentguard.network._rpc import probe_unavailable
from agentguard.network.config import ApiKeyEntry, GatewaySettings
from agentguard.network.gateway._params import B32, invalid
from agentguard.network.gateway._registry import Clients
from agentguard.network.gateway._results import wasm_data
from agentguard.network.gateway._validation import TaskInput, task_input
from agentguard.network.state import State

__all__ = ["Simulator"]


class Simulator:
    def __init__(
        self,
        settings: GatewaySettings,
        state: State,
        clients: Clients,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._state = state
        self._clients = clients
        self._clock = clock
        self._engine: Any = None  # built on first use: most gateways never simulate

    def _task(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> TaskInput:
        """Newton's ``newt_simulateTask`` params, ``{intent, policy_task_data}``: the policy
        client is the one registered under ``policyId``; the x402 details of a payment come
        in ``policyData[].wasmArgs``."""
        data = params.get("policy_task_data")
        if not isinstance(data, dict):
            raise invalid("policy_task_data must be an object {policyId, policyAddress, ...}")
        policy_id = data.get("policyId", data.get("policy_id"))
        if not isinstance(policy_id, str) or not B32.match(policy_id):
            raise invalid("policy_task_data.policyId must be 0x followed by 64 hex digits")
        client = self._clients.by_policy_id(bytes.fromhex(policy_id[2:]))
        if client is None:
            raise invalid(f"no policy client is registered under policy id {policy_id}")
        entries = data.get("policyData", data.get("policy_data")) or []
        if not isinstance(entries, list) or len(entries) > 1:
            raise invalid("policy_task_data.policyData must be a list of at most one entry")
        wasm_args: Any = None
        if entries:
            entry = entries[0]
            if not isinstance(entry, dict):
                raise invalid("policy_task_data.policyData[0] must be an object")
            wasm_args = entry.get("wasmArgs", entry.get("wasm_args"))
        usable = self._clients.usable(key, client.address)
        task_params = {"intent": params.get("intent"), "wasm_args": wasm_args}
        return task_input(usable, self._settings, task_params)

    def simulate(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """Newton's result shape ``{success, result: {allow, reason}, error, details}``, with
        ``decision`` and ``reasons`` added inside ``result`` (``approval_required`` has no
        Newton spelling)."""
        task = self._task(key, params)
        client, intent = task.client, task.intent
        now = int(self._clock())
        history = self._state.totals(
            policy_client=client.address, agent=intent.from_, windows=client.windows, now=now
        )
        intent_hash_hex = "0x" + intent.intent_hash.hex()
        approved = self._state.approved(client.address, intent_hash_hex, now)
        wasm = wasm_data(task, history, now, intent_hash_hex, approved=approved)
        if self._engine is None:
            from agentguard.policies._engine import PolicyEngine

            self._engine = PolicyEngine()
        from agentguard.policies._engine import PolicyEngineError
        from agentguard.policies._probe import ProbeUnavailable, probe

        parsed = intent.parsed()
        try:
            # registered clients were probed; one loaded from a shared state is, here, once
            probe(client.policy, client.params)
            evaluation = self._engine.evaluate(
                client.policy, input=parsed, params=client.params, wasm=wasm
            )
        except ProbeUnavailable as exc:  # nothing judged: retryable, not the policy's failure
            raise probe_unavailable("gateway", exc) from None
        except PolicyEngineError as exc:
            return {
                "success": False,
                "result": None,
                "error": f"policy evaluation failed: {exc}",
                "details": None,
            }
        decision, said = human_gate(
            evaluation.decision, evaluation.reasons, evaluation.tier, approved=approved
        )
        reasons = list(said)
        return {
            "success": True,
            "result": {
                "allow": decision == "allow",
                "reason": "; ".join(reasons) or decision,
                "decision": decision,
                "reasons": reasons,
                "tier": evaluation.tier,
            },
            "error": None,
            "details": {"parsed_intent": parsed, "policy_id": "0x" + client.policy_id.hex()},
        }
