"""``approval_status`` reads a gateway's answer strictly (a lying gateway's garbage is a typed
error, never a wrong "approved" about some other intent)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from agentguard import (
    ApprovalStatus,
    AsyncNewtonGateway,
    ConfigurationError,
    GatewayProtocolError,
    NewtonGateway,
)

CLIENT = "0x" + "cc" * 20
HASH = "0x" + "ab" * 32


def answering(result: Any) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        assert call["method"] == "agentguard_approvalStatus"
        assert call["params"] == {"policy_client": CLIENT, "intent_hash": HASH}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": result})

    return httpx.MockTransport(handler)


def gateway(result: Any) -> NewtonGateway:
    return NewtonGateway("http://127.0.0.1:1", policy_client=CLIENT, transport=answering(result))


def test_a_well_formed_answer() -> None:
    answer = {"intent_hash": HASH, "status": "pending", "expires_at": 1_800_000_000}
    assert gateway(answer).approval_status(HASH.upper().replace("0X", "0x")) == ApprovalStatus(
        intent_hash=HASH, status="pending", expires_at=1_800_000_000
    )


@pytest.mark.parametrize(
    "answer",
    [
        {"intent_hash": "0x" + "cd" * 32, "status": "approved", "expires_at": None},
        {"intent_hash": HASH, "status": "yes", "expires_at": None},
        {"intent_hash": HASH, "status": "approved", "expires_at": 1.5},
        {"intent_hash": HASH, "status": "approved", "expires_at": True},
        ["approved"],
        None,
    ],
)
def test_a_lying_or_garbled_answer_is_a_protocol_error(answer: Any) -> None:
    with pytest.raises(GatewayProtocolError):
        gateway(answer).approval_status(HASH)


async def test_the_async_client_reads_the_same_way() -> None:
    client = AsyncNewtonGateway(
        "http://127.0.0.1:1",
        policy_client=CLIENT,
        transport=answering({"intent_hash": HASH, "status": "rejected", "expires_at": 5}),
    )
    assert (await client.approval_status(HASH)).status == "rejected"
    with pytest.raises(ConfigurationError):
        await client.approval_status("0x12")
