"""Read-only methods for auditors (the challenger): the recorded tasks and the registration
behind any policy id ever used. A key sees only the tasks of the policy clients it may use;
the admin key, or a key for every client (``"*"``), sees all.

These answers are evidence, not proof: the challenger trusts nothing in them it cannot check
(the operators' signatures, the policy id's hash, the owner's signature).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentguard.network._rpc import UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway._auth import require_use
from agentguard.network.gateway._params import B32, address_param, invalid
from agentguard.network.state import State, policy_material

__all__ = ["MAX_TASKS_PER_CALL", "policy_version", "tasks"]

MAX_TASKS_PER_CALL = 200
"""Tasks one ``agentguard_tasks`` answer carries at most (each is a few KiB)."""


def _int(params: Mapping[str, Any], field: str, default: int, high: int) -> int:
    value = params.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise invalid(f"{field} must be an integer in 0..{high}")
    return value


def tasks(state: State, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    """``agentguard_tasks {after, limit, policy_client?}`` → ``{tasks, next}``: recorded tasks
    after the cursor ``after``, oldest first; ``next`` is the cursor to pass on."""
    after = _int(params, "after", 0, (1 << 63) - 1)
    limit = _int(params, "limit", MAX_TASKS_PER_CALL, MAX_TASKS_PER_CALL)
    client: str | None = None
    if params.get("policy_client") is not None:
        client = address_param(params, "policy_client").lower()
        require_use(key, client)
    elif not (key.admin or "*" in key.policy_clients):
        raise RPCError(
            UNAUTHORIZED,
            "this API key may read only its own policy clients' tasks: give policy_client",
            http_status=403,
        )
    found = state.tasks(after=after, limit=limit, policy_client=client)
    return {
        "tasks": [task.to_json() for task in found],
        "next": found[-1].seq if found else after,
    }


def policy_version(state: State, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    """``agentguard_policyVersion {policy_id}`` → ``{registration, policy}``: the owner-signed
    registration saved under that policy id and the policy material it names."""
    policy_id = params.get("policy_id")
    if not isinstance(policy_id, str) or not B32.match(policy_id):
        raise invalid("policy_id must be 0x followed by 64 hex digits")
    record = state.policy_version(policy_id)
    if record is None or not key.may_use(record.registration.policy_client_hex):
        # the same answer either way: a key learns nothing of other clients' configurations
        raise invalid(f"no registration with policy id {policy_id.lower()} for this API key")
    return {
        "registration": record.registration.to_json(),
        "policy": policy_material(record.policy),
    }
