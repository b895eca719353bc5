"""JSON-RPC dispatch: a method name to the gateway's handler for it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentguard._task_id import MAX_REQUEST_ID
from agentguard.network._rpc import INVALID_REQUEST, METHOD_NOT_FOUND, Encoded, RPCError, encode
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway import _audit, _settle
from agentguard.network.gateway._auth import require_admin

if TYPE_CHECKING:
    from agentguard.network.gateway._core import Gateway

__all__ = ["dispatch"]


async def dispatch(
    gateway: Gateway, key: ApiKeyEntry, rpc_id: Any, method: str, params: Mapping[str, Any]
) -> Any:
    if method == "newt_createTask":
        # Newton's SDK sends no id at all: such a request is a task of its own (nothing
        # to deduplicate on). Any string id deduplicates, as a UUID does.
        if rpc_id is None:
            return Encoded(encode(await gateway._create_task(key, str(uuid.uuid4()), params)))
        if not isinstance(rpc_id, str) or not 0 < len(rpc_id) <= MAX_REQUEST_ID:
            raise RPCError(
                INVALID_REQUEST, f"id must be a string of 1..{MAX_REQUEST_ID} characters"
            )
        return await gateway.create_task(key, rpc_id, params)
    if method == "agentguard_networkInfo":
        return gateway.network_info()
    if method == "newt_simulateTask":
        return await gateway.simulate(key, params)
    if method == "agentguard_releaseTask":
        return gateway.release(key, params)
    if method == "agentguard_commitTask":
        return gateway.commit(key, params)
    if method == "agentguard_commitTasks":
        return _settle.commit_many(gateway.state, key, params)
    if method == "agentguard_approve":
        return gateway.approve(key, params)
    if method == "agentguard_reject":
        return gateway.reject(key, params)
    if method == "agentguard_listApprovals":
        return gateway.list_approvals(key, params)
    if method == "agentguard_approvalStatus":
        return gateway.approval_status(key, params)
    if method == "agentguard_tasks":
        return _audit.tasks(gateway.state, key, params)
    if method == "agentguard_policyVersion":
        return _audit.policy_version(gateway.state, key, params)
    if method == "agentguard_gatewayStats":
        require_admin(key)
        return gateway.operators.stats()
    if method == "agentguard_registerPolicyClient":
        require_admin(key)
        result = gateway.register(params)
        client = gateway.clients.registered(result["policy_client"])
        result["operators_missed"] = await gateway.deliver([client])
        return result
    raise RPCError(METHOD_NOT_FOUND, f"unknown method {method!r}")
