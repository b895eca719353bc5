"""A scripted x402 resource server on ``httpx.MockTransport``, for the client's error paths.

The happy path is proven against x402's own server in ``test_interop_official.py``; this
fake exists to make a server misbehave on purpose (refuse after payment, report a pending
settlement, drop the connection, open ``upto`` sessions) and to record what the client sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_typed_data

from agentguard.chain.eip3009 import EIP3009_TYPES
from agentguard.x402._wire import encode_header
from agentguard.x402.upto import client as upto

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OTHER_TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAYEE = "0x3333333333333333333333333333333333333333"
STRANGER = "0x4444444444444444444444444444444444444444"
FACILITATOR = "0x5555555555555555555555555555555555555555"
TX = "0x" + "ab" * 32


def requirement(**over: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": TOKEN,
        "amount": "10000",
        "payTo": PAYEE,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    req.update(over)
    return req


def upto_requirement(amount: str = "100000") -> dict[str, Any]:
    return requirement(scheme="upto", amount=amount, extra={"facilitatorAddress": FACILITATOR})


def decode(value: str) -> Any:
    return json.loads(base64.b64decode(value))


def recover_payer(document: dict[str, Any], accepted: dict[str, Any]) -> str:
    """Who signed the payment: rebuild the EIP-712 message from the wire and recover."""
    payload = document["payload"]
    if "authorization" in payload:
        auth = payload["authorization"]
        typed = {
            "types": EIP3009_TYPES,
            "primaryType": "TransferWithAuthorization",
            "domain": {
                "name": accepted["extra"]["name"],
                "version": accepted["extra"]["version"],
                "chainId": 8453,
                "verifyingContract": accepted["asset"],
            },
            "message": {
                "from": auth["from"], "to": auth["to"], "value": int(auth["value"]),
                "validAfter": int(auth["validAfter"]), "validBefore": int(auth["validBefore"]),
                "nonce": auth["nonce"],
            },
        }  # fmt: skip
    else:
        p = payload["permit2Authorization"]
        typed = {
            "types": upto._TYPES,
            "primaryType": "PermitWitnessTransferFrom",
            "domain": {"name": "Permit2", "chainId": 8453, "verifyingContract": upto.PERMIT2},
            "message": {
                "permitted": {"token": p["permitted"]["token"], "amount": int(p["permitted"]["amount"])},
                "spender": p["spender"], "nonce": int(p["nonce"]), "deadline": int(p["deadline"]),
                "witness": {
                    "to": p["witness"]["to"], "facilitator": p["witness"]["facilitator"],
                    "validAfter": int(p["witness"]["validAfter"]),
                },
            },
        }  # fmt: skip
    signature = bytes.fromhex(payload["signature"][2:])
    return str(Account.recover_message(encode_typed_data(full_message=typed), signature=signature))


@dataclass
class FakeServer:
    """``after_payment``: ok | reject | pending | drop | fail500 | no_receipt."""

    accepts: list[dict[str, Any]] = field(default_factory=lambda: [requirement()])
    version: int = 2
    extensions: dict[str, Any] = field(default_factory=dict)
    after_payment: str = "ok"
    session: str | None = None  # upto: answer with this X-Upto-Session
    charge: int | None = None  # upto: X-Upto-Charge per request
    raw_402: Callable[[], httpx.Response] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)
    payers: list[str] = field(default_factory=list)
    seen_sessions: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            await request.aread()
            return self.handle(request)

        return httpx.MockTransport(handle)

    def payment_required(self) -> httpx.Response:
        if self.raw_402 is not None:
            return self.raw_402()
        if self.version == 1:
            body = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [
                {**{k: v for k, v in r.items() if k != "amount"}, "maxAmountRequired": r["amount"],
                 "network": "base", "resource": "http://shop.test/paid", "description": "",
                 "mimeType": "", "outputSchema": None} for r in self.accepts]}  # fmt: skip
            return httpx.Response(402, json=body)
        doc: dict[str, Any] = {
            "x402Version": 2,
            "error": "Payment required",
            "resource": {"url": "http://shop.test/paid", "description": "", "mimeType": ""},
            "accepts": self.accepts,
        }
        if self.extensions:
            doc["extensions"] = self.extensions
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": encode_header(doc)}, json={})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        header = request.headers.get("PAYMENT-SIGNATURE") or request.headers.get("X-PAYMENT")
        session = request.headers.get("X-Upto-Session")
        if header is None and session is not None and session == self.session:
            self.seen_sessions.append(session)
            return self.ok(None)
        if header is None:
            return self.payment_required()
        document = decode(header)
        self.payments.append(document)
        accepted = document.get("accepted") or {**self.accepts[0], "scheme": document["scheme"]}
        self.payers.append(recover_payer(document, accepted))
        mode = self.after_payment
        if mode == "drop":
            raise httpx.ConnectError("connection reset after the payment was sent", request=request)
        if mode == "reject":
            doc = {
                "x402Version": 2,
                "error": "invalid_exact_evm_nonce_already_used",
                "accepts": self.accepts,
            }
            return httpx.Response(402, headers={"PAYMENT-REQUIRED": encode_header(doc)}, json={})
        if mode == "pending":
            receipt = {"success": False, "errorReason": "settlement_pending", "transaction": TX,
                       "network": "eip155:8453"}  # fmt: skip
            return httpx.Response(
                402, headers={"PAYMENT-RESPONSE": encode_header(receipt)}, json={}
            )
        if mode == "fail500":
            return httpx.Response(500, text="handler crashed")
        if mode == "no_receipt":
            return httpx.Response(200, json={"data": "paid content"})
        return self.ok(document)

    def ok(self, document: dict[str, Any] | None) -> httpx.Response:
        headers: dict[str, str] = {}
        if document is not None:
            receipt = {"success": True, "transaction": TX, "network": "eip155:8453",
                       "payer": self.payers[-1]}  # fmt: skip
            name = "PAYMENT-RESPONSE" if self.version == 2 else "X-PAYMENT-RESPONSE"
            headers[name] = encode_header(receipt)
        if self.session is not None:
            headers["X-Upto-Session"] = self.session
        if self.charge is not None:
            headers["X-Upto-Charge"] = str(self.charge)
        return httpx.Response(200, headers=headers, json={"data": "paid content"})
