"""Test peers nobody here wrote: x402's own FastAPI payment middleware and facilitator,
settling for real on a local anvil chain, served by uvicorn on 127.0.0.1.

x402's Python HTTP server speaks only v2 (it reads ``PAYMENT-SIGNATURE`` and never emits a
v1 402 body), so the v1 route is a minimal resource server written here whose verification
and settlement are still done by x402's own v1 facilitator (``ExactEvmSchemeV1``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from x402 import x402Facilitator, x402ResourceServer
from x402.extensions.payment_identifier import declare_payment_identifier_extension
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.utils import encode_payment_response_header
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme
from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

PRICE = 10_000  # 0.01 USD Coin


def facilitator(private_key: str, rpc_url: str) -> x402Facilitator:
    """x402's in-process facilitator, broadcasting real transactions through anvil."""
    signer = FacilitatorWeb3Signer(private_key, rpc_url, confirmation_timeout_seconds=10)
    f = x402Facilitator()
    f.register(["eip155:8453"], ExactEvmFacilitatorScheme(signer))
    f.register_v1(["base"], ExactEvmSchemeV1(signer))
    return f


def app(fac: x402Facilitator, token: str, pay_to: str) -> FastAPI:
    server = x402ResourceServer(fac)
    server.register("eip155:8453", ExactEvmServerScheme())
    # The local token is not one of x402's default assets: price it as an AssetAmount with
    # its EIP-712 domain in `extra`, as x402's docs describe for custom tokens.
    price = {"amount": str(PRICE), "asset": token, "extra": {"name": "USD Coin", "version": "2"}}
    option = {"scheme": "exact", "payTo": pay_to, "price": price, "network": "eip155:8453"}
    routes: dict[str, Any] = {
        "GET /paid": {"accepts": option, "description": "paid content"},
        "GET /paid-idempotent": {
            "accepts": option,
            "description": "paid content",
            "extensions": {"payment-identifier": declare_payment_identifier_extension()},
        },
    }
    application = FastAPI()
    application.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @application.get("/paid")
    async def paid() -> dict[str, str]:
        return {"data": "paid content"}

    @application.get("/paid-idempotent")
    async def paid_idempotent() -> dict[str, str]:
        return {"data": "paid content"}

    v1_requirements = PaymentRequirementsV1.model_validate(
        {
            "scheme": "exact", "network": "base", "maxAmountRequired": str(PRICE),
            "resource": "http://127.0.0.1/v1/paid", "description": "paid content",
            "mimeType": "application/json", "payTo": pay_to, "maxTimeoutSeconds": 60,
            "asset": token, "extra": {"name": "USD Coin", "version": "2"},
        }
    )  # fmt: skip

    @application.get("/v1/paid")
    async def v1_paid(request: Request) -> Response:
        header = request.headers.get("X-PAYMENT")
        body = {"x402Version": 1, "error": "X-PAYMENT header is required",
                "accepts": [v1_requirements.model_dump(by_alias=True)]}  # fmt: skip
        if header is None:
            return Response(json.dumps(body), status_code=402, media_type="application/json")
        import base64

        payload = PaymentPayloadV1.model_validate_json(base64.b64decode(header))
        verified = await fac.verify(payload, v1_requirements)
        if not verified.is_valid:
            body["error"] = verified.invalid_reason or "invalid payment"
            return Response(json.dumps(body), status_code=402, media_type="application/json")
        settled = await fac.settle(payload, v1_requirements)
        headers = {"X-PAYMENT-RESPONSE": encode_payment_response_header(settled)}
        if not settled.success:
            body["error"] = settled.error_reason or "settlement failed"
            return Response(json.dumps(body), 402, headers, media_type="application/json")
        return Response('{"data":"paid content"}', 200, headers, media_type="application/json")

    return application


@contextmanager
def serve(application: FastAPI) -> Iterator[str]:
    """Runs ``application`` with uvicorn on an ephemeral 127.0.0.1 port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
