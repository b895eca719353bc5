"""A man-in-the-middle in front of the real gateway, for fail-closed tests.

It is a real HTTP server on 127.0.0.1 (uvicorn in a thread) that forwards each JSON-RPC call
to the real gateway process and then does whatever harm ``mode`` names to the request or the
answer. The client under test cannot tell it from a gateway.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn
from coincurve import PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentguard._attestation import attestation_digest, operator_address, sign_attestation


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TamperingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"
        self.recorded: list[bytes] = []
        self.port = _free_port()
        self._client = httpx.AsyncClient(timeout=30)
        app = Starlette(routes=[Route("/rpc", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("tampering proxy did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    async def _forward(self, request: Request, body: bytes) -> httpx.Response:
        headers = {
            "authorization": request.headers.get("authorization", ""),
            "content-type": "application/json",
        }
        return await self._client.post(self.upstream + "/rpc", content=body, headers=headers)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        mode = self.mode
        doc = json.loads(body)
        if mode == "status-502":
            return Response(b"bad gateway", status_code=502)
        if mode == "hang":
            await asyncio.sleep(30)
        if mode in ("other-intent", "other-chain", "other-chain-forged"):
            intent = doc["params"]["intent"]
            if mode == "other-intent":
                intent["from"] = "0x" + "99" * 20
            else:
                intent["chain_id"] = hex(84532)
            body = json.dumps(doc).encode()
        upstream = await self._forward(request, body)
        answer = upstream.json()
        result = answer.get("result")
        if mode == "garbage":
            return Response(
                b"\x00\xffnot json at all", status_code=200, media_type="application/json"
            )
        if mode == "truncated":
            raw = upstream.content
            return Response(raw[: len(raw) // 2], status_code=200, media_type="application/json")
        if mode == "record":
            self.recorded.append(upstream.content)
        if mode == "replay" and self.recorded:
            old = json.loads(self.recorded[0])
            old["id"] = doc["id"]
            return Response(json.dumps(old).encode(), media_type="application/json")
        if isinstance(result, dict) and isinstance(result.get("attestation"), dict):
            self._tamper_attestation(mode, result["attestation"], doc)
            if mode == "flip-deny-to-allow":
                result["task_response"]["evaluation_result"] = [0] * 31 + [1]
        return Response(
            json.dumps(answer).encode(),
            status_code=upstream.status_code,
            media_type="application/json",
        )

    def _tamper_attestation(self, mode: str, att: dict[str, Any], request: dict[str, Any]) -> None:
        sigs = att["signatures"]
        if mode == "duplicate-signature":
            att["signatures"] = [sigs[0], sigs[0]]
        elif mode == "one-signature":
            att["signatures"] = sigs[:1]
        elif mode == "no-signatures":
            att["signatures"] = []
        elif mode == "other-chain-forged":
            # claim the original chain's intent hash too: only the signatures can tell now
            from agentguard import TransactionIntent

            original = dict(request["params"]["intent"])
            original["chain_id"] = hex(8453)
            att["intent_hash"] = "0x" + TransactionIntent.from_wire(original).intent_hash.hex()
        elif mode == "unknown-keys":
            digest = attestation_digest(
                chain_id=int(request["params"]["intent"]["chain_id"], 16),
                policy_client=bytes.fromhex(att["policy_client"][2:]),
                task_id=bytes.fromhex(att["task_id"][2:]),
                policy_id=bytes.fromhex(att["policy_id"][2:]),
                intent_hash=bytes.fromhex(att["intent_hash"][2:]),
                allow=att["decision"] == "allow",
                expires_at=int(att["expires_at"]),
            )
            keys = [PrivateKey(), PrivateKey(), PrivateKey()]
            att["signatures"] = [
                {
                    "operator": operator_address(k),
                    "signature": "0x" + sign_attestation(k, digest).hex(),
                }
                for k in keys
            ]
        elif mode == "flip-deny-to-allow":
            att["decision"] = "allow"
