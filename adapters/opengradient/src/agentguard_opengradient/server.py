"""A local OpenGradient-compatible inference server: a test double, not a language model.

**Its answers come from a small deterministic responder**: a chat is answered with
``"You said: <last user message>"`` and a completion with ``"Echo: <prompt>"`` (cut to
``max_tokens`` words); a chat with ``tools`` whose last user message starts with a tool's name
is answered with a call to that tool (arguments: the rest of the message if it is a JSON
object). No model runs. Everything around the answer is shaped like
OpenGradient's TEE gateway, so an agent's payment and verification path runs for real:

* ``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI-shaped), ``GET /health``,
  ``GET /signing-key`` (the enclave's public key and ``tee_id``);
* x402 v2 ``upto`` payments: an unpaid request gets 402 with ``PAYMENT-REQUIRED`` offering
  ``scheme "upto"``, ``network "eip155:8453"``, the OPG token, ``amount`` = the session cap
  (0.1 OPG), ``payTo`` and ``extra {"name": "OpenGradient", "version": "1",
  "assetTransferMethod": "permit2", "facilitatorAddress"}``. A paid request opens an
  ``X-Upto-Session``; later requests carrying it are served without a new signature. Each
  answer charges ``X-Upto-Charge`` = prompt tokens * input price + completion tokens * output
  price (a token here is a whitespace-separated word);
* settlement onchain: the **facilitator account** (private key read from the environment
  variable named by ``--facilitator-key-env``, default ``AGENTGUARD_OG_FACILITATOR_KEY``;
  it must hold ETH for gas) calls ``X402UptoPermit2Proxy.settle`` for the session's total, in
  one transaction, when the session has been idle ``--idle-timeout`` seconds (OpenGradient:
  100), would pass its cap, nears its Permit2 deadline, or the server stops;
* the enclave proof on every answer (``tee_signature``, ``tee_request_hash``,
  ``tee_output_hash``, ``tee_timestamp``, ``tee_id``), signed with a local RSA-2048 key.

``X-SETTLEMENT-TYPE`` (``private`` | ``batch`` | ``individual``) is validated and echoed; the
data settlement OpenGradient does for ``batch``/``individual`` is not imitated.
Test-double extension: ``GET /x402/sessions/{id}`` reports a session's status, charged total
and settlement transaction (also as ``x-settlement-tx-hash``).

    AGENTGUARD_OG_FACILITATOR_KEY=0x… python -m agentguard_opengradient.server \\
        --rpc-url http://127.0.0.1:8545 --asset 0xOPG… --pay-to 0x… [--signing-key key.pem]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from eth_account import Account
from eth_utils.address import is_address, to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from agentguard import AgentGuardError, IntentError
from agentguard.chain import load_artifact
from agentguard.x402 import UPTO_PERMIT2_PROXY
from agentguard_opengradient._client import SETTLEMENT_TX_HASH, SETTLEMENT_TYPE
from agentguard_opengradient._proof import (
    canonical_chat_request,
    canonical_completion_request,
    sign_proof,
    tee_id,
)

__all__ = ["ServerConfig", "create_app", "main", "serve"]

SESSION_CAP = 10**17  # 0.1 OPG, OpenGradient's session maximum
_MODES = ("private", "batch", "individual")
_DEADLINE_MARGIN = 30  # settle a session this many seconds before its Permit2 deadline
_MIN_VALIDITY = 60  # a new permit must stay valid at least this long


@dataclass(frozen=True)
class ServerConfig:
    rpc_url: str
    asset: str
    pay_to: str
    facilitator_key: str = field(repr=False)
    signing_key: RSAPrivateKey = field(repr=False)
    network: str = "eip155:8453"
    session_cap: int = SESSION_CAP
    input_price: int = 10**12
    """Atomic OPG per prompt token."""
    output_price: int = 2 * 10**12
    """Atomic OPG per completion token."""
    idle_timeout: float = 100.0
    max_timeout_seconds: int = 300


@dataclass
class _Session:
    id: str
    payer: str
    authorization: Mapping[str, Any]
    signature: bytes
    cap: int
    deadline: int
    charged: int
    last_used: float
    status: Literal["open", "settling", "settled", "failed"] = "open"
    transaction: str = ""
    error: str = ""


class _Refusal(Exception):
    """A payment or session this server will not accept; the text is the x402 error reason."""


class _Facilitator:
    """Simulates and sends ``X402UptoPermit2Proxy.settle`` from the facilitator account."""

    def __init__(self, rpc_url: str, key: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.account = Account.from_key(key)
        self.proxy = self.w3.eth.contract(
            address=to_checksum_address(UPTO_PERMIT2_PROXY),
            abi=load_artifact("X402UptoPermit2Proxy").abi,
        )
        self._lock = threading.Lock()  # one settlement at a time: nonces stay in order

    def _call(self, session: _Session, amount: int) -> Any:
        auth = session.authorization
        witness = auth["witness"]
        return self.proxy.functions.settle(
            (
                (to_checksum_address(auth["permitted"]["token"]), int(auth["permitted"]["amount"])),
                int(auth["nonce"]),
                int(auth["deadline"]),
            ),
            amount,
            to_checksum_address(session.payer),
            (
                to_checksum_address(witness["to"]),
                to_checksum_address(witness["facilitator"]),
                int(witness["validAfter"]),
            ),
            session.signature,
        )

    def simulate(self, session: _Session) -> None:
        """Would settling the whole cap succeed now? (signature, nonce, allowance, balance)"""
        try:
            self._call(session, session.cap).call({"from": self.account.address})
        except (ContractLogicError, Web3RPCError, ValueError) as exc:
            raise _Refusal(f"permit2_simulation_failed: {exc}"[:300]) from None

    def settle(self, session: _Session, amount: int) -> str:
        with self._lock:
            call = self._call(session, amount)
            tx = call.build_transaction(
                {
                    "from": self.account.address,
                    "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                }
            )
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise RuntimeError(f"settlement 0x{bytes(tx_hash).hex()} reverted")
        return "0x" + bytes(tx_hash).hex()


def _b64json(document: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


def _words(text: str) -> list[str]:
    return text.split()


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _tool_calls(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The responder's tool use. With ``tools``, a last user message that starts with a tool's
    name is answered with one call to it, its arguments the rest of the message if that is a
    JSON object (else ``{}``). ``tool_choice``: ``"none"`` never calls; ``"required"`` calls
    the first tool if no name matched; ``{"function": {"name": ...}}`` always calls that one."""
    tools = body.get("tools")
    if not tools:
        return []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise IntentError("tools must be a list of {type: function, function: {name, ...}}")
    names = [t["function"]["name"] for t in tools]
    last = body["messages"][-1]
    choice = body.get("tool_choice", "auto")
    if last.get("role") != "user" or choice == "none":
        return []
    name, _, rest = _content_text(last.get("content")).strip().partition(" ")
    function = choice.get("function") if isinstance(choice, dict) else None
    forced = function.get("name") if isinstance(function, dict) else None
    if forced is not None and forced not in names:
        raise IntentError(f"tool_choice names {forced!r}, which is not among the tools")
    if forced is not None and forced != name:
        name, rest = forced, ""
    elif name not in names:
        if choice != "required":
            return []
        name, rest = names[0], ""
    try:
        arguments = json.loads(rest) if rest.strip() else {}
    except ValueError:
        arguments = {}
    return [
        {
            "id": "call_" + secrets.token_hex(8),
            "type": "function",
            "function": {
                "name": name,
                "arguments": json.dumps(arguments if isinstance(arguments, dict) else {}),
            },
        }
    ]


@dataclass(frozen=True)
class _Answer:
    body: dict[str, Any]
    charge: int


class _Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.asset = to_checksum_address(config.asset)
        self.pay_to = to_checksum_address(config.pay_to)
        self.facilitator = _Facilitator(config.rpc_url, config.facilitator_key)
        self.sessions: dict[str, _Session] = {}
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.public_pem = (
            config.signing_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        self.tee_id = tee_id(config.signing_key.public_key())

    # -- x402 -------------------------------------------------------------------------------

    def requirement(self) -> dict[str, Any]:
        return {
            "scheme": "upto",
            "network": self.config.network,
            "asset": self.asset,
            "amount": str(self.config.session_cap),
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.config.max_timeout_seconds,
            "extra": {
                "name": "OpenGradient",
                "version": "1",
                "assetTransferMethod": "permit2",
                "facilitatorAddress": self.facilitator.account.address,
            },
        }

    def payment_required(self, request: Request, reason: str, *, paid: bool) -> Response:
        document = {
            "x402Version": 2,
            "error": reason,
            "resource": {
                "url": str(request.url),
                "description": "OpenGradient TEE inference (local test double)",
                "mimeType": "application/json",
            },
            "accepts": [self.requirement()],
        }
        headers = {"PAYMENT-REQUIRED": _b64json(document)}
        if paid:
            headers["PAYMENT-RESPONSE"] = _b64json(
                {"success": False, "errorReason": reason, "transaction": "",
                 "network": self.config.network}
            )  # fmt: skip
        return JSONResponse({"error": reason}, status_code=402, headers=headers)

    def read_payment(self, header: str) -> _Session:
        try:
            document = json.loads(base64.b64decode(header, validate=True))
            accepted = document["accepted"]
            payload = document["payload"]
            auth = payload["permit2Authorization"]
            signature = bytes.fromhex(str(payload["signature"]).removeprefix("0x"))
            witness = auth["witness"]
            payer, token = auth["from"], auth["permitted"]["token"]
            amount, nonce = int(auth["permitted"]["amount"]), int(auth["nonce"])
            deadline, valid_after = int(auth["deadline"]), int(witness["validAfter"])
        except (ValueError, KeyError, TypeError):
            raise _Refusal("invalid_payload: not an x402 v2 upto Permit2 payment") from None
        offered = self.requirement()
        if document.get("x402Version") != 2 or any(
            accepted.get(k) != offered[k] for k in ("scheme", "network", "amount", "asset", "payTo")
        ):
            raise _Refusal("invalid_payload: accepted does not match the offered requirement")
        now = int(time.time())
        checks = {
            "payer": isinstance(payer, str) and is_address(payer),
            "token": str(token).lower() == self.asset.lower(),
            "amount": amount == self.config.session_cap,
            "spender": str(auth.get("spender", "")).lower() == UPTO_PERMIT2_PROXY.lower(),
            "recipient": str(witness.get("to", "")).lower() == self.pay_to.lower(),
            "facilitator": str(witness.get("facilitator", "")).lower()
            == self.facilitator.account.address.lower(),
            "valid_after": valid_after <= now,
            "deadline": deadline >= now + _MIN_VALIDITY,
            "nonce": 0 <= nonce < 2**256,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise _Refusal(f"invalid_upto_evm_payload: {', '.join(wrong)} mismatch")
        return _Session(
            id=secrets.token_urlsafe(18),
            payer=to_checksum_address(payer),
            authorization=auth,
            signature=signature,
            cap=amount,
            deadline=deadline,
            charged=0,
            last_used=time.monotonic(),
        )

    # -- settlement -------------------------------------------------------------------------

    def close_later(self, session: _Session) -> None:
        """Settle ``session`` in the background (it takes a block)."""
        if session.status != "open":
            return
        session.status = "settling"
        task = asyncio.get_running_loop().create_task(self._settle(session))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _settle(self, session: _Session) -> None:
        if session.charged == 0:
            session.status = "settled"  # nothing to move; the permit simply expires unused
            return
        try:
            session.transaction = await asyncio.to_thread(
                self.facilitator.settle, session, session.charged
            )
            session.status = "settled"
        except Exception as exc:
            session.status, session.error = "failed", repr(exc)[:300]

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.config.idle_timeout / 4)))
            now, wall = time.monotonic(), time.time()
            async with self.lock:
                for session in list(self.sessions.values()):
                    idle = now - session.last_used >= self.config.idle_timeout
                    if idle or session.deadline - wall < _DEADLINE_MARGIN:
                        self.close_later(session)

    async def shutdown(self) -> None:
        async with self.lock:
            for session in self.sessions.values():
                self.close_later(session)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- inference --------------------------------------------------------------------------

    def answer(self, kind: str, body: Mapping[str, Any]) -> _Answer:
        max_tokens = body.get("max_tokens", 100)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise IntentError("max_tokens must be a positive integer")
        if kind == "chat":
            canonical = canonical_chat_request(body)
            messages = body["messages"]
            prompt_words = sum(len(_words(_content_text(m.get("content")))) for m in messages)
            users = [m for m in messages if m.get("role") == "user"]
            reply = "You said: " + (_content_text(users[-1].get("content")) if users else "")
        else:
            canonical = canonical_completion_request(body)
            prompt_words = len(_words(body["prompt"]))
            reply = "Echo: " + body["prompt"]
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise IntentError("model must be a non-empty string")
        words = _words(reply)
        text = " ".join(words[:max_tokens])
        finish = "length" if len(words) > max_tokens else "stop"
        calls = _tool_calls(body) if kind == "chat" else []
        if calls:  # the enclave signs the calls, as sorted JSON
            text, finish = json.dumps(calls, sort_keys=True), "tool_calls"
        completion_words = len(_words(text))
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_words,
            "total_tokens": prompt_words + completion_words,
        }
        created = int(time.time())
        if kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message = {"role": "assistant", "content": "", "tool_calls": calls}
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
            head = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish}
            head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion"}
        proof = sign_proof(self.config.signing_key, canonical, text, created)
        document = {
            **head,
            "created": created,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
            **proof,
        }
        charge = (
            prompt_words * self.config.input_price + completion_words * self.config.output_price
        )
        return _Answer(document, charge)

    async def handle(self, request: Request, kind: str) -> Response:
        mode = request.headers.get(SETTLEMENT_TYPE, "batch").lower()
        if mode not in _MODES:
            return JSONResponse(
                {"error": f"{SETTLEMENT_TYPE} must be one of {', '.join(_MODES)}"}, status_code=400
            )
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise IntentError("the request body is not a JSON object")
            answer = self.answer(kind, body)
        except (ValueError, AgentGuardError) as exc:
            return JSONResponse({"error": f"invalid request: {exc}"}, status_code=400)
        session = await self._charge_session(request.headers.get("X-Upto-Session"), answer.charge)
        if session is None:
            header = request.headers.get("PAYMENT-SIGNATURE")
            if header is None:
                return self.payment_required(request, "Payment required", paid=False)
            try:
                session = self.read_payment(header)
                if answer.charge > session.cap:
                    raise _Refusal("invalid_upto_evm_payload: this request costs more than the cap")
                await asyncio.to_thread(self.facilitator.simulate, session)
            except _Refusal as refusal:
                return self.payment_required(request, str(refusal), paid=True)
            session.charged = answer.charge
            async with self.lock:
                self.sessions[session.id] = session
        settlement = {
            "success": True,
            "transaction": "",  # the session settles once, when it closes
            "network": self.config.network,
            "payer": session.payer,
            "amount": str(answer.charge),
        }
        headers = {
            "X-Upto-Session": session.id,
            "X-Upto-Charge": str(answer.charge),
            "PAYMENT-RESPONSE": _b64json(settlement),
            SETTLEMENT_TYPE: mode,
        }
        return JSONResponse(answer.body, headers=headers)

    async def _charge_session(self, session_id: str | None, charge: int) -> _Session | None:
        """The open session that now also carries ``charge``, or ``None`` (pay again)."""
        if not session_id:
            return None
        async with self.lock:
            session = self.sessions.get(session_id)
            if session is None or session.status != "open":
                return None
            if (
                session.charged + charge > session.cap
                or session.deadline - time.time() < _DEADLINE_MARGIN
            ):
                self.close_later(session)
                return None
            session.charged += charge
            session.last_used = time.monotonic()
            return session


def create_app(config: ServerConfig) -> Starlette:
    server = _Server(config)

    async def chat(request: Request) -> Response:
        return await server.handle(request, "chat")

    async def completions(request: Request) -> Response:
        return await server.handle(request, "completion")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def signing_key(_: Request) -> Response:
        return JSONResponse({"public_key": server.public_pem, "tee_id": server.tee_id})

    async def session_status(request: Request) -> Response:
        session = server.sessions.get(request.path_params["session_id"])
        if session is None:
            return JSONResponse({"error": "unknown session"}, status_code=404)
        headers = {SETTLEMENT_TX_HASH: session.transaction} if session.transaction else {}
        return JSONResponse(
            {
                "session": session.id,
                "status": session.status,
                "payer": session.payer,
                "cap": str(session.cap),
                "charged": str(session.charged),
                "transaction": session.transaction,
                "error": session.error,
            },
            headers=headers,
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.get_running_loop().create_task(server.sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            await server.shutdown()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/health", health),
            Route("/signing-key", signing_key),
            Route("/x402/sessions/{session_id}", session_status),
        ],
        lifespan=lifespan,
    )


@contextlib.contextmanager
def serve(config: ServerConfig, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run the server on a free 127.0.0.1 port in a background thread; yields its URL.

    Leaving the block stops it, which settles every open session onchain (as ``main`` does).
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, name="opengradient-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the OpenGradient test server did not start")
        time.sleep(0.02)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(startup_timeout)


def _signing_key(path: str | None) -> RSAPrivateKey:
    if path is None:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m agentguard_opengradient.server",
        description="Local OpenGradient-compatible inference server (deterministic responder).",
    )
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--asset", required=True, help="the OPG token address")
    parser.add_argument("--pay-to", required=True)
    parser.add_argument("--facilitator-key-env", default="AGENTGUARD_OG_FACILITATOR_KEY")
    parser.add_argument("--signing-key", help="RSA private key PEM (default: a fresh one)")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--network", default="eip155:8453")
    parser.add_argument("--session-cap", type=int, default=SESSION_CAP)
    parser.add_argument("--input-price", type=int, default=10**12)
    parser.add_argument("--output-price", type=int, default=2 * 10**12)
    parser.add_argument("--idle-timeout", type=float, default=100.0)
    args = parser.parse_args(argv)
    facilitator_key = os.environ.get(args.facilitator_key_env)
    if not facilitator_key:
        print(f"server: set {args.facilitator_key_env} to the facilitator's key", file=sys.stderr)
        return 2
    try:
        config = ServerConfig(
            rpc_url=args.rpc_url,
            asset=args.asset,
            pay_to=args.pay_to,
            facilitator_key=facilitator_key,
            signing_key=_signing_key(args.signing_key),
            network=args.network,
            session_cap=args.session_cap,
            input_price=args.input_price,
            output_price=args.output_price,
            idle_timeout=args.idle_timeout,
        )
        app = create_app(config)
    except (ValueError, OSError) as exc:
        print(f"server: {exc}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    print(
        f"opengradient test server listening on http://127.0.0.1:{port} "
        f"tee_id={tee_id(config.signing_key.public_key())}",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
