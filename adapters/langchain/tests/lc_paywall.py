"""A small x402 resource server on loopback (a payee that asks for 0.01 USDC per request).

It does not verify or settle the payment: these tests are about what the agent's side signs
and tells the model. The x402 client itself is proven against x402's own server elsewhere.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TX = "0x" + "ab" * 32


def _header(document: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


@contextmanager
def paywall(
    asset: str, pay_to: str, amount: int = 10_000, body: bytes = b"the weather is sunny " * 500
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(url, payments received)``: GET ``url`` costs ``amount`` atomic units of ``asset``."""
    payments: list[dict[str, Any]] = []
    requirement = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": asset,
        "amount": str(amount),
        "payTo": pay_to,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2"},
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            paid = self.headers.get("PAYMENT-SIGNATURE")
            if paid is None:
                doc = {"x402Version": 2, "error": "Payment required", "accepts": [requirement],
                       "resource": {"url": f"http://{self.headers['Host']}{self.path}"}}  # fmt: skip
                self._answer(402, {"PAYMENT-REQUIRED": _header(doc)}, b"{}")
                return
            payments.append(json.loads(base64.b64decode(paid)))
            receipt = {"success": True, "transaction": TX, "network": "eip155:8453"}
            self._answer(200, {"PAYMENT-RESPONSE": _header(receipt)}, body)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/weather", payments
    finally:
        server.shutdown()
        server.server_close()
