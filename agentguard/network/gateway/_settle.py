"""After the decision: the host reports an attested task released (unused) or committed.

Only an allowed (recorded) task can be either; only a key that may use its policy client may
report it. A release is given back at once only when nobody need ask the chain; otherwise the
sweep (``Gateway.sweep_forever``) decides at expiry. ``commit_many`` judges several commits in
one call (a client's queued bookkeeping), each exactly as ``commit`` would, each answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentguard.network._rpc import UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway._params import B32, invalid
from agentguard.network.state import State, TaskRecord

__all__ = ["MAX_COMMITS", "commit", "commit_many", "release"]

MAX_COMMITS = 256
"""Commits one ``agentguard_commitTasks`` call may carry."""


def _task_for(state: State, key: ApiKeyEntry, params: Mapping[str, Any]) -> str:
    task_id = params.get("task_id")
    if not isinstance(task_id, str) or not B32.match(task_id):
        raise invalid("task_id must be 0x followed by 64 hex digits")
    task_id = task_id.lower()
    record = state.task(task_id)
    if record is None:
        raise invalid(f"no attested task {task_id} (only allowed tasks are recorded)")
    if not key.may_use(record.policy_client):
        raise RPCError(
            UNAUTHORIZED, "this API key may not use that task's policy client", http_status=403
        )
    return task_id


def release(
    state: State,
    key: ApiKeyEntry,
    params: Mapping[str, Any],
    *,
    now: int,
    trusted: Callable[[TaskRecord], bool],
) -> dict[str, Any]:
    """``trusted(task)``: whether this release may be given back at once."""
    task_id = _task_for(state, key, params)
    record = state.task(task_id)
    status = state.release(task_id, now, trusted=record is not None and trusted(record))
    if status is None:
        current = record.status if record else "unknown"
        raise invalid(f"task {task_id} is {current}; only an attested task can be released")
    counts_until = record.expires_at if record and status == "releasing" else None
    return {"task_id": task_id, "status": status, "counts_until": counts_until}


def commit(state: State, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    task_id = _task_for(state, key, params)
    outcome = params.get("outcome", "")
    if not isinstance(outcome, str) or len(outcome) > 1000:
        raise invalid("outcome must be a string (e.g. a transaction hash) of at most 1000 chars")
    if not state.commit(task_id, outcome):
        record = state.task(task_id)
        status = record.status if record else "unknown"
        raise invalid(f"task {task_id} is {status}; only an attested task can be committed")
    return {"task_id": task_id, "status": "committed"}


def commit_many(state: State, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"commits": [{task_id, outcome}, ...]}`` → ``{"results": [...]}`` in request order:
    each entry ``commit``'s answer or ``{"task_id", "error"}``, so one refused item refuses
    nothing else and the client can tell which landed."""
    commits = params.get("commits")
    if not isinstance(commits, list) or not 0 < len(commits) <= MAX_COMMITS:
        raise invalid(f"commits must be a list of 1..{MAX_COMMITS} {{task_id, outcome}} objects")
    results: list[dict[str, Any]] = []
    for item in commits:
        try:
            if not isinstance(item, dict):
                raise invalid("each commit must be an object {task_id, outcome}")
            results.append(commit(state, key, item))
        except RPCError as exc:
            task_id = item.get("task_id") if isinstance(item, dict) else None
            echoed = task_id.lower() if isinstance(task_id, str) and B32.match(task_id) else None
            results.append({"task_id": echoed, "error": exc.to_json()})
    return {"results": results}
