"""Human approvals: requests parked on ``approval_required``, approved or rejected by admins.

The gateway checks an approver's signed approval as each operator will check it again (the
gateway's word on an approval counts for nothing with them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentguard._exceptions import ConfigurationError
from agentguard.network.approvals import STATUSES, SignedApproval
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway._auth import require_admin, require_use
from agentguard.network.gateway._params import B32, address_param, invalid
from agentguard.network.gateway._registry import Clients, PolicyClient
from agentguard.network.state import State

__all__ = ["Approvals"]


class Approvals:
    def __init__(self, state: State, clients: Clients) -> None:
        self._state = state
        self._clients = clients

    def _request_key(self, params: Mapping[str, Any]) -> tuple[PolicyClient, str]:
        client = self._clients.registered(address_param(params, "policy_client"))
        intent_hash = params.get("intent_hash")
        if not isinstance(intent_hash, str) or not B32.match(intent_hash):
            raise invalid("intent_hash must be 0x followed by 64 hex digits")
        return client, intent_hash.lower()

    def list(self, key: ApiKeyEntry, params: Mapping[str, Any], now: int) -> dict[str, Any]:
        """``agentguard_listApprovals`` (admin): parked requests, newest first."""
        require_admin(key)
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise invalid(f"status must be one of {', '.join(STATUSES)}")
        if "intent_hash" in params:  # one request
            client, intent_hash = self._request_key(params)
            request = self._state.approval_request(client.address, intent_hash, now)
            found = [request] if request and status in (None, request.status) else []
        else:
            client_filter = (
                address_param(params, "policy_client") if "policy_client" in params else None
            )
            found = self._state.approval_requests(now, status=status, policy_client=client_filter)
        return {"approvals": [r.to_json() for r in found]}

    def approve(self, key: ApiKeyEntry, params: Mapping[str, Any], now: int) -> dict[str, Any]:
        """``agentguard_approve`` (admin): deliver an approver's signed approval for a pending
        request."""
        require_admin(key)
        try:
            approval = SignedApproval.from_json(params.get("approval"))
        except ConfigurationError as exc:
            raise invalid(
                f"{exc.message} (approvals are signed by an approver key: "
                "'agentguard approvals approve' or the approval console)"
            ) from None
        address = "0x" + approval.policy_client.hex()
        client, intent_hash = self._request_key(
            {"policy_client": address, "intent_hash": "0x" + approval.intent_hash.hex()}
        )
        request = self._state.approval_request(client.address, intent_hash, now)
        if request is None or request.status != "pending":
            current = request.status if request else "unknown"
            raise invalid(f"approval request {intent_hash} is {current}, not pending")
        if approval.expires_at > request.expires_at:
            raise invalid("the approval outlives the request it approves")
        try:
            approval.check(
                client.registration,
                intent_hash=approval.intent_hash,
                chain_id=client.chain_id,
                now=now,
            )
        except ConfigurationError as exc:
            raise invalid(exc.message) from None
        if not self._state.approve(
            client.address,
            intent_hash,
            approval=approval.to_json(),
            approver=approval.signer_hex,
            expires_at=approval.expires_at,
            now=now,
        ):
            raise invalid(f"approval request {intent_hash} is no longer pending")
        return {
            "policy_client": client.address,
            "intent_hash": intent_hash,
            "status": "approved",
            "approver": approval.signer_hex,
            "expires_at": approval.expires_at,
        }

    def reject(self, key: ApiKeyEntry, params: Mapping[str, Any], now: int) -> dict[str, Any]:
        """``agentguard_reject`` (admin): a pending (or approved, unclaimed) request is rejected
        for good. A rejection needs no approver signature: refusing is always safe."""
        require_admin(key)
        client, intent_hash = self._request_key(params)
        if not self._state.reject(client.address, intent_hash, now):
            request = self._state.approval_request(client.address, intent_hash, now)
            current = request.status if request else "unknown"
            raise invalid(f"approval request {intent_hash} is {current}; it cannot be rejected")
        return {"policy_client": client.address, "intent_hash": intent_hash, "status": "rejected"}

    def status(self, key: ApiKeyEntry, params: Mapping[str, Any], now: int) -> dict[str, Any]:
        """``agentguard_approvalStatus`` (any key that may use the client): for the waiting
        agent. Only a hint: whatever it says, operators sign only on a valid approval."""
        client, intent_hash = self._request_key(params)
        require_use(key, client.address)
        request = self._state.approval_request(client.address, intent_hash, now)
        return {
            "policy_client": client.address,
            "intent_hash": intent_hash,
            "status": request.status if request else "unknown",
            "expires_at": request.expires_at if request else None,
        }
