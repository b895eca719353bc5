"""A lean load driver for the soak: raw keep-alive HTTP/1.1 to the gateway, SDK bodies.

A soak of 100,000 authorizations through the SDK's async client would spend a fair share of
the machine in the driver (its transport, the attestation model), which competes with the
network for the same cores. This driver sends the exact ``newt_createTask`` body the SDK
sends (captured once from the SDK itself, so both code trees send their own), changing only
the JSON-RPC id (a fresh UUID, as the SDK sends) and the transfer amount so every task is
new, over a few keep-alive connections, each with one
request in flight. It checks every answer is a JSON-RPC result and decodes one in 100 fully
(an ``allow`` is expected); what the gateway keeps per authorization is the same as for any
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import urlsplit

# The amount of the intent whose body is captured; its 32-byte word is replaced per request.
MARK = 0xABCDEF123457
_WORD = f"{MARK:064x}".encode()
_CHECK_EVERY = 100


def capture_request(client: Callable[[str], Any]) -> tuple[str, bytes]:
    """The path and body ``client(url).authorize(intent)`` POSTs, with ``MARK`` as the
    amount; the capturing server answers with a JSON-RPC error, so nothing is authorized."""
    from _common import PAYEE, USDC

    from agentguard import TransactionIntent

    seen: list[tuple[str, bytes]] = []

    class Capture(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # what any client expects; the answer closes anyway

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            seen.append((self.path, self.rfile.read(length)))
            answer = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"captured"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    intent = TransactionIntent.erc20_transfer(
        sender="0x1111111111111111111111111111111111111111",
        token=USDC,
        recipient=PAYEE,
        amount=MARK,
        chain_id=8453,
    )
    try:
        with (
            client(f"http://127.0.0.1:{server.server_address[1]}") as gw,
            contextlib.suppress(Exception),  # the capturing server refused it
        ):
            gw.authorize(intent)
    finally:
        server.shutdown()
        server.server_close()
    if not seen or seen[0][1].count(_WORD) != 1:
        raise RuntimeError("could not capture the client's newt_createTask body")
    return seen[0]


def bodies(template: bytes, amounts: Iterable[int]) -> Iterator[bytes]:
    """The template with each amount, and a fresh JSON-RPC id each (the client sends a new
    UUID per task; the gateway keys its idempotency on it)."""
    sent_id = json.dumps(json.loads(template)["id"], separators=(",", ":")).encode()
    if template.count(sent_id) != 1 or template.find(sent_id) > template.find(_WORD):
        raise RuntimeError("the captured body's id cannot be replaced")
    head, rest = template.split(sent_id)
    middle, tail = rest.split(_WORD)
    for amount in amounts:
        fresh = f'"{uuid.uuid4()}"'.encode()
        yield head + fresh + middle + f"{amount:064x}".encode() + tail


async def _read(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """One response's body, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise RuntimeError(lines[0])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip().lower()
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return body, headers.get("connection") != "close"


async def drive(
    url: str, api_key: str, request: tuple[str, bytes], amounts: range, connections: int
) -> dict[str, int]:
    """Send one task per amount (``request`` from ``capture_request``) to the gateway at
    ``url`` over ``connections`` keep-alive connections; counts of answers that were
    results (``n``), that failed (an error, a broken connection), and checked results that
    were not an ``allow``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path, template = request
    prefix = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    todo = enumerate(bodies(template, amounts))
    counts = {"n": 0, "failed": 0, "denied": 0}

    async def connection() -> None:
        stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for i, body in todo:
            try:
                if stream is None:
                    stream = await asyncio.open_connection(host, port)
                reader, writer = stream
                writer.write(prefix + str(len(body)).encode() + b"\r\n\r\n" + body)
                answer, keep = await _read(reader)
            except (
                OSError,
                RuntimeError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ):
                counts["failed"] += 1
                _close(stream)
                stream = None
                continue
            if not keep:
                _close(stream)
                stream = None
            if b'"result"' not in answer:
                counts["failed"] += 1
                continue
            counts["n"] += 1
            if i % _CHECK_EVERY == 0 and not _allowed(json.loads(answer)["result"]):
                counts["denied"] += 1
        _close(stream)

    await asyncio.gather(*(connection() for _ in range(connections)))
    return counts


def _allowed(result: Any) -> bool:
    attestation = result.get("attestation") if isinstance(result, dict) else None
    return isinstance(attestation, dict) and attestation.get("decision") == "allow"


def _close(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if stream is not None:
        stream[1].close()
