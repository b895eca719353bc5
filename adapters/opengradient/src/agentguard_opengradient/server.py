"""A local OpenGradient-compatible inference server: a test double, not a language model.

**Its answers come from a small deterministic responder**: a chat is answered with
``"You said: <last user message>"`` and a completion with ``"Echo: <prompt>"`` (cut to
``max_tokens`` words); a chat with ``tools`` whose last user message starts with a tool's name
is answered with a call to that tool (arguments: the rest of the message if it is a JSON
object). No model runs; a "token" is a whitespace-separated word.

Everything around the answer behaves as OpenGradient's TEE gateway does, read from
OpenGradient's code: OpenGradient/tee-gateway @cb95a5c (2026-04-28) and its later indexed
files (``x402_settlement.py``, ``pricing.py``, ``controllers/chat_controller.py`` with
``canonical_user_content`` and ``web_search``), the og-x402 session middleware
(``x402/http/middleware/flask.py``), and OpenGradient/inference-facilitator @f7a0cfc::

* routes ``POST /v1/chat/completions`` (JSON or SSE with ``"stream": true``) and
  ``POST /v1/completions``; ``GET /health``, ``GET /signing-key``;
* the payment check runs first (as the gateway's middleware wraps its app): an unpaid request
  gets 402 with ``PAYMENT-REQUIRED`` (``upto``, ``eip155:8453``, OPG, the 0.1 OPG session cap,
  ``extra {name "OpenGradient", version "1", assetTransferMethod "permit2",
  facilitatorAddress}``, extension ``erc20ApprovalGasSponsoring``); a valid payment opens an
  ``X-Upto-Session`` bound to the method and path; a request riding a session that is unknown,
  bound to another route, settling or settled, used up (its charges reached the cap), or near
  its permit deadline (``serve_margin``) gets a **bare 402** ``{"error": "Session expired or
  exhausted"}`` with no ``PAYMENT-REQUIRED``; a payment whose deadline is too near is refused
  the same way (``"Payment authorization deadline missing or too soon"``);
* then the application: unknown model → 400 ``{"error": "Model '…' is not supported"}`` (after
  the payment was taken, as the gateway does); no ``Authorization: Bearer <token>`` → 401 (the
  value is not checked, unless the test-double option ``bearer_token`` is set); every answer
  carries the ``X-Upto-Session`` header, errors included;
* charges: per answer, prompt words * ``input_price`` + completion words * ``output_price``
  (atomic OPG), reported only in the unsigned body block ``opengradient {cost_opg, cost_usd,
  opg_price_usd}`` (no charge header, no ``PAYMENT-RESPONSE``); only 2xx answers are charged;
  a charge past the cap saturates at it (the session is then used up);
* deferred settlement: a sweep settles sessions that are idle (``idle_timeout``; OpenGradient:
  100 s), used up, or within ``settle_margin`` of their permit deadline, through the
  facilitator's ``POST /settle`` (202 and a job ``payment-<uuid>``), then polls
  ``GET /settle/<jobId>`` until ``succeeded`` / ``failed``; a failed job is retried while the
  deadline allows. The facilitator settles onchain through ``X402UptoPermit2Proxy.settle``
  from the account whose key is in ``AGENTGUARD_OG_FACILITATOR_KEY``;
* the enclave proof on every answer (``tee_signature`` RSA-PSS-SHA256 salt 32 over
  ``keccak256(request_hash ‖ output_hash ‖ uint256(timestamp))``, ``tee_request_hash`` and
  ``tee_output_hash`` as hex **without** ``0x``, ``tee_timestamp``, ``tee_id`` = ``0x`` +
  keccak256 of the key's DER), over the gateway's canonical request form (written here from
  the gateway's code, independently of the client's); ``finish_reason`` is ``stop`` or
  ``tool_calls`` (a completion: always ``stop``); on a stream the proof, ``usage`` and the cost
  block ride the final frame before ``data: [DONE]``.

Not imitated: the data settlement of ``batch``/``individual`` modes (no ``x-settlement-tx-hash``
header is sent), the OPG/USD price feed (``opg_price_usd`` is fixed), real token counts.
Test-double extensions: ``GET /x402/sessions/{id}`` (a session's status, cap, charged total,
settlement job and payment transaction), the facilitator's API mounted at ``/facilitator``,
and ``bearer_token``.

    AGENTGUARD_OG_FACILITATOR_KEY=0x… python -m agentguard_opengradient.server \\
        --rpc-url http://127.0.0.1:8545 --asset 0xOPG… --pay-to 0x… [--signing-key key.pem]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from eth_account import Account
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from agentguard.chain import load_artifact
from agentguard.x402 import UPTO_PERMIT2_PROXY
from agentguard_opengradient._models import KNOWN_MODELS

__all__ = ["ServerConfig", "create_app", "main", "serve"]

SESSION_CAP = 10**17  # 0.1 OPG, OpenGradient's session maximum
SESSION_HEADER = "X-Upto-Session"
SESSION_ENDED = {"error": "Session expired or exhausted"}
_HOPELESS = 6  # the facilitator refuses a permit this close to its deadline
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_ROLES = ("system", "user", "assistant", "tool", "function")


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
    opg_price_usd: Decimal = Decimal("0.10")
    """The OPG/USD price reported in the cost block (the gateway reads a price feed)."""
    idle_timeout: float = 100.0
    max_timeout_seconds: int = 300
    serve_margin: int = 60
    """Stop serving a session this many seconds before its permit deadline, and refuse a new
    permit closer than this (og-x402's settlement safety margin; newer gateways: 420)."""
    settle_margin: int = 30
    """Settle a session this many seconds before its permit deadline (newer gateways: 120)."""
    models: frozenset[str] = KNOWN_MODELS
    bearer_token: str | None = field(default=None, repr=False)
    """Test double only: require this bearer token (the gateway checks only that one is sent)."""
    sweep_interval: float | None = None
    """Seconds between settlement sweeps (default: from ``idle_timeout``, at most 1 s)."""


@dataclass
class _Session:
    id: str
    route: tuple[str, str]
    payer: str
    payment: Mapping[str, Any]
    """The x402 payment payload as received (what the facilitator settles)."""
    signature: bytes
    cap: int
    deadline: int
    charged: int = 0
    last_used: float = field(default_factory=time.monotonic)
    status: Literal["open", "settling", "settled", "failed"] = "open"
    job: str = ""
    transaction: str = ""
    error: str = ""

    @property
    def authorization(self) -> Mapping[str, Any]:
        return self.payment["payload"]["permit2Authorization"]  # type: ignore[no-any-return]

    @property
    def used_up(self) -> bool:
        return self.charged >= self.cap


class _Refusal(Exception):
    """A payment this server will not accept; the text is the x402 error reason."""


def _b64json(document: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


# -- the facilitator --------------------------------------------------------------------------


class _Facilitator:
    """OpenGradient's inference facilitator, as far as payment settlement goes: ``POST /settle``
    queues a job and answers 202; a worker settles it onchain (``X402UptoPermit2Proxy.settle``
    from the facilitator account); ``GET /settle/{jobId}`` reports ``queued`` / ``processing``
    / ``succeeded`` (``result {success, transaction, …}``) / ``failed``."""

    def __init__(self, rpc_url: str, key: str, network: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.account = Account.from_key(key)
        self.network = network
        self.proxy = self.w3.eth.contract(
            address=to_checksum_address(UPTO_PERMIT2_PROXY),
            abi=load_artifact("X402UptoPermit2Proxy").abi,
        )
        self.jobs: dict[str, dict[str, Any]] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._lock = threading.Lock()  # one transaction at a time: nonces stay in order

    def _call(self, payload: Mapping[str, Any], amount: int) -> Any:
        inner = payload["payload"]
        auth = inner["permit2Authorization"]
        witness = auth["witness"]
        return self.proxy.functions.settle(
            (
                (to_checksum_address(auth["permitted"]["token"]), int(auth["permitted"]["amount"])),
                int(auth["nonce"]),
                int(auth["deadline"]),
            ),
            amount,
            to_checksum_address(auth["from"]),
            (
                to_checksum_address(witness["to"]),
                to_checksum_address(witness["facilitator"]),
                int(witness["validAfter"]),
            ),
            bytes.fromhex(str(inner["signature"]).removeprefix("0x")),
        )

    def verify(self, payload: Mapping[str, Any], cap: int) -> None:
        """Would settling the whole cap succeed now? (signature, nonce, allowance, balance)"""
        try:
            self._call(payload, cap).call({"from": self.account.address})
        except (ContractLogicError, Web3RPCError, ValueError) as exc:
            raise _Refusal(f"permit2_simulation_failed: {exc}"[:300]) from None

    def settle(self, payload: Mapping[str, Any], amount: int) -> str:
        with self._lock:
            tx = self._call(payload, amount).build_transaction(
                {
                    "from": self.account.address,
                    "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                }
            )
            # The payee's key, not the agent's: signed through ``Account`` so a test's
            # SigningSpy (which watches LocalAccount, the agent's) does not count it when this
            # server runs in the test's process.
            signed = Account.sign_transaction(tx, self.account.key)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise RuntimeError(f"settlement 0x{bytes(tx_hash).hex()} reverted")
        return "0x" + bytes(tx_hash).hex()

    async def work(self) -> None:
        while True:
            job = self.jobs[await self.queue.get()]
            job["status"] = "processing"
            payload, amount = job.pop("_payload"), job.pop("_amount")
            try:
                transaction = await asyncio.to_thread(self.settle, payload, amount)
            except Exception as exc:  # a revert or a node failure: the job fails
                job.update(status="failed", error=repr(exc)[:300])
                continue
            job.update(
                status="succeeded",
                result={
                    "success": True,
                    "transaction": transaction,
                    "network": self.network,
                    "payer": payload["payload"]["permit2Authorization"]["from"],
                    "amount": str(amount),
                },
            )

    async def enqueue(self, request: Request) -> Response:
        try:
            body = await request.json()
            payload, requirements = body["paymentPayload"], body["paymentRequirements"]
            amount = int(requirements["amount"])
            payload["payload"]["permit2Authorization"]["witness"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "Missing paymentPayload or paymentRequirements"}, 400)
        job_id = f"payment-{uuid.uuid4()}"
        self.jobs[job_id] = {
            "jobId": job_id,
            "queue": "payment",
            "status": "queued",
            "_payload": payload,
            "_amount": amount,
        }
        self.queue.put_nowait(job_id)
        return JSONResponse({"paymentJob": self.public(job_id)}, status_code=202)

    def public(self, job_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[job_id].items() if not k.startswith("_")}

    async def status(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if job_id not in self.jobs:
            return JSONResponse({"error": f"Settlement job not found: {job_id}"}, 404)
        return JSONResponse(self.public(job_id))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/settle", self.enqueue, methods=["POST"]),
                Route("/settle/{job_id}", self.status),
            ]
        )


# -- the gateway's canonical request form (from tee_gateway's controllers) ----------------------


def _user_content(content: Any) -> Any:
    """The gateway's ``canonical_user_content``: text parts kept, attachments reduced to
    ``{type[, filename]}`` (their bytes are not hashed)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    parts: list[Any] = []
    for part in content:
        if not isinstance(part, dict):
            parts.append({"type": "text", "text": str(part)})
        elif part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "") or ""})
        else:
            stub: dict[str, Any] = {"type": part.get("type")}
            file = part.get("file")
            name = (file.get("filename") if isinstance(file, dict) else None) or part.get(
                "filename"
            )
            if name:
                stub["filename"] = name
            parts.append(stub)
    return parts


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    role, content = message.get("role"), message.get("content")
    if role == "system":
        return {"role": "system", "content": content}
    if role == "user":
        return {"role": "user", "content": _user_content(content)}
    if role == "assistant":
        entry: dict[str, Any] = {"role": "assistant", "content": content or ""}
        if message.get("tool_calls"):
            entry["tool_calls"] = [
                {
                    "id": call.get("id"),
                    "type": call.get("type"),
                    "function": {
                        "name": call.get("function", {}).get("name"),
                        "arguments": call.get("function", {}).get("arguments"),
                    },
                }
                for call in message["tool_calls"]
            ]
        return entry
    if role == "tool":
        return {"role": "tool", "content": content, "tool_call_id": message.get("tool_call_id")}
    if role == "function":
        return {"role": "function", "content": content, "name": message.get("name")}
    raise ValueError(f"Unknown role: {role}")


def _canonical(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    temperature = body.get("temperature")
    canonical: dict[str, Any] = {
        "model": body.get("model"),
        "temperature": float(temperature) if temperature is not None else 0.0,
    }
    if kind == "chat":
        canonical["messages"] = [_message(m) for m in body.get("messages") or []]
    else:
        canonical["prompt"] = body.get("prompt")
    if body.get("max_tokens") is not None:
        canonical["max_tokens"] = body["max_tokens"]
    extras = ("stop", "tools", "response_format") if kind == "chat" else ("stop",)
    for name in extras:
        if body.get(name):
            canonical[name] = body[name]
    if body.get("web_search"):
        canonical["web_search"] = True
    return canonical


class _Enclave:
    """The enclave's signing key and proof fields (hashes as hex without ``0x``)."""

    def __init__(self, key: RSAPrivateKey) -> None:
        self.key = key
        self.public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.tee_id = "0x" + keccak(der).hex()

    def prove(self, canonical: Mapping[str, Any], output: str) -> dict[str, Any]:
        timestamp = int(time.time())
        request_hash = keccak(json.dumps(canonical, sort_keys=True).encode("utf-8"))
        output_hash = keccak(output.encode("utf-8"))
        message = keccak(request_hash + output_hash + timestamp.to_bytes(32, "big"))
        signature = self.key.sign(message, _PSS, hashes.SHA256())
        return {
            "tee_signature": base64.b64encode(signature).decode("ascii"),
            "tee_request_hash": request_hash.hex(),
            "tee_output_hash": output_hash.hex(),
            "tee_timestamp": timestamp,
            "tee_id": self.tee_id,
        }


# -- the deterministic responder ----------------------------------------------------------------


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _tool_calls(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """With ``tools``, a last user message that starts with a tool's name is answered with one
    call to it, its arguments the rest of the message if that is a JSON object (else ``{}``).
    ``tool_choice``: ``"none"`` never calls; ``"required"`` calls the first tool if no name
    matched; ``{"function": {"name": ...}}`` always calls that one."""
    tools = body.get("tools")
    if not tools:
        return []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise ValueError("tools must be a list of {type: function, function: {name, ...}}")
    names = [t["function"]["name"] for t in tools]
    last = body["messages"][-1]
    choice = body.get("tool_choice", "auto")
    if last.get("role") != "user" or choice == "none":
        return []
    name, _, rest = _content_text(last.get("content")).strip().partition(" ")
    function = choice.get("function") if isinstance(choice, dict) else None
    forced = function.get("name") if isinstance(function, dict) else None
    if forced is not None and forced not in names:
        raise ValueError(f"tool_choice names {forced!r}, which is not among the tools")
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
    kind: str
    model: str
    canonical: dict[str, Any]
    text: str
    calls: list[dict[str, Any]]
    usage: dict[str, int]

    @property
    def finish(self) -> str:
        return "tool_calls" if self.calls else "stop"

    @property
    def signed_output(self) -> str:
        """What the enclave hashes: the text, or the tool calls as sorted JSON."""
        return json.dumps(self.calls, sort_keys=True) if self.calls else self.text


def _respond(kind: str, body: Mapping[str, Any]) -> _Answer:
    max_tokens = body.get("max_tokens", 100)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError("max_tokens must be a positive integer")
    canonical = _canonical(kind, body)
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        prompt = sum(len(_content_text(m.get("content")).split()) for m in messages)
        users = [m for m in messages if m.get("role") == "user"]
        reply = "You said: " + (_content_text(users[-1].get("content")) if users else "")
    else:
        if not isinstance(body.get("prompt"), str):
            raise ValueError("prompt must be a string")
        prompt = len(body["prompt"].split())
        reply = "Echo: " + body["prompt"]
    text = " ".join(reply.split()[:max_tokens])
    calls = _tool_calls(body) if kind == "chat" else []
    if calls:
        text = ""
    completion = len((json.dumps(calls) if calls else text).split())
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return _Answer(kind, str(body.get("model")), canonical, text, calls, usage)


# -- the gateway --------------------------------------------------------------------------------


class _Gateway:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.asset = to_checksum_address(config.asset)
        self.pay_to = to_checksum_address(config.pay_to)
        self.facilitator = _Facilitator(config.rpc_url, config.facilitator_key, config.network)
        self.enclave = _Enclave(config.signing_key)
        self.models = frozenset(m.strip().lower() for m in config.models)
        self.sessions: dict[str, _Session] = {}
        self.by_payment: dict[str, str] = {}
        self.lock = asyncio.Lock()

    # -- x402 ---------------------------------------------------------------------------------

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

    def payment_required(self, request: Request, reason: str) -> Response:
        document = {
            "x402Version": 2,
            "error": reason,
            "resource": {
                "url": str(request.url),
                "description": "Chat completion" if "chat" in request.url.path else "Completion",
                "mimeType": "application/json",
            },
            "accepts": [self.requirement()],
            "extensions": {"erc20ApprovalGasSponsoring": {}},
        }
        return JSONResponse({}, 402, headers={"PAYMENT-REQUIRED": _b64json(document)})

    def read_payment(self, header: str, route: tuple[str, str]) -> _Session:
        try:
            document = json.loads(base64.b64decode(header, validate=True))
            accepted, payload = document["accepted"], document["payload"]
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
        checks = {
            "payer": isinstance(payer, str) and is_address(payer),
            "token": str(token).lower() == self.asset.lower(),
            "amount": amount == self.config.session_cap,
            "spender": str(auth.get("spender", "")).lower() == UPTO_PERMIT2_PROXY.lower(),
            "recipient": str(witness.get("to", "")).lower() == self.pay_to.lower(),
            "facilitator": str(witness.get("facilitator", "")).lower()
            == self.facilitator.account.address.lower(),
            "valid_after": valid_after <= int(time.time()),
            "deadline": deadline >= int(time.time()) + _HOPELESS,
            "nonce": 0 <= nonce < 2**256,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise _Refusal(f"invalid_upto_evm_payload: {', '.join(wrong)} mismatch")
        return _Session(
            id=str(uuid.uuid4()),
            route=route,
            payer=to_checksum_address(payer),
            payment=document,
            signature=signature,
            cap=amount,
            deadline=deadline,
        )

    def usable(self, session: _Session | None, route: tuple[str, str]) -> bool:
        """og-x402: a session serves while open, not used up, bound to this route, and not
        within ``serve_margin`` of its permit deadline."""
        return (
            session is not None
            and session.status == "open"
            and not session.used_up
            and session.route == route
            and time.time() < session.deadline - self.config.serve_margin
        )

    async def admit(self, request: Request, route: tuple[str, str]) -> _Session | Response:
        """The payment middleware: the session this request may use, or the 402 to send."""
        ended = JSONResponse(SESSION_ENDED, 402)
        session_id = request.headers.get(SESSION_HEADER)
        async with self.lock:
            if session_id:
                session = self.sessions.get(session_id)
                return session if session is not None and self.usable(session, route) else ended
            header = request.headers.get("PAYMENT-SIGNATURE") or request.headers.get("X-PAYMENT")
            if header is None:
                return self.payment_required(request, "Payment required")
            known = self.by_payment.get(hashlib.sha256(header.encode()).hexdigest())
            if known is not None:  # the same payment again: its session, if it still serves
                session = self.sessions[known]
                return session if self.usable(session, route) else ended
        try:
            session = self.read_payment(header, route)
            await asyncio.to_thread(self.facilitator.verify, session.payment, session.cap)
        except _Refusal as refusal:
            return self.payment_required(request, str(refusal))
        if session.deadline < time.time() + self.config.serve_margin:
            return JSONResponse(
                {"error": "Payment authorization deadline missing or too soon"}, 402
            )
        async with self.lock:
            self.sessions[session.id] = session
            self.by_payment[hashlib.sha256(header.encode()).hexdigest()] = session.id
        return session

    async def charge(self, session: _Session, answer: _Answer) -> None:
        """Add an answer's cost, saturating at the cap (the answer was already served)."""
        async with self.lock:
            if session.status != "open":
                return
            session.charged = min(session.cap, session.charged + self.cost(answer))
            session.last_used = time.monotonic()

    def cost(self, answer: _Answer) -> int:
        usage = answer.usage
        return (
            usage["prompt_tokens"] * self.config.input_price
            + usage["completion_tokens"] * self.config.output_price
        )

    def cost_block(self, answer: _Answer) -> dict[str, str]:
        opg = self.cost(answer)
        usd = Decimal(opg) / Decimal(10**18) * self.config.opg_price_usd
        return {
            "cost_opg": str(opg),
            "cost_usd": format(usd, "f"),
            "opg_price_usd": format(self.config.opg_price_usd, "f"),
        }

    # -- settlement ---------------------------------------------------------------------------

    async def sweep(self, client: httpx.AsyncClient) -> None:
        """One pass of the gateway's reaper: settle what is due, poll jobs, drop empty idle
        sessions (recorded as settled with nothing moved)."""
        now, wall = time.monotonic(), time.time()
        async with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            if session.status == "settling" and session.job:
                await self.poll(client, session)
                continue
            if session.status != "open":
                continue
            idle = now - session.last_used > self.config.idle_timeout
            due_deadline = wall >= session.deadline - self.config.settle_margin
            if session.charged == 0:
                if idle or due_deadline:
                    session.status = "settled"  # nothing to take; the permit expires unused
                continue
            if idle or session.used_up or due_deadline:
                await self.settle(client, session)

    async def settle(self, client: httpx.AsyncClient, session: _Session) -> None:
        if time.time() >= session.deadline - _HOPELESS:
            session.status, session.error = "failed", "permit deadline passed before settlement"
            return
        session.status = "settling"
        requirements = {**self.requirement(), "amount": str(session.charged)}
        answer = await client.post(
            "/settle",
            json={
                "x402Version": 2,
                "paymentPayload": session.payment,
                "paymentRequirements": requirements,
            },
        )
        job = answer.json().get("paymentJob", {}) if answer.status_code == 202 else {}
        if not job.get("jobId"):
            session.status = "open"  # enqueue failed: the next sweep tries again
            return
        session.job = job["jobId"]
        await self.poll(client, session)

    async def poll(self, client: httpx.AsyncClient, session: _Session) -> None:
        answer = await client.get(f"/settle/{session.job}")
        job = answer.json() if answer.status_code in (200, 404) else {}
        status = job.get("status", "not_found" if answer.status_code == 404 else None)
        if status == "succeeded":
            result = job.get("result") or {}
            if result.get("success") is False:
                session.status, session.error = "failed", str(result.get("errorReason"))
            else:
                session.status, session.transaction = "settled", str(result["transaction"])
        elif status in ("failed", "not_found"):
            session.job, session.error = "", str(job.get("error", status))
            hopeless = time.time() >= session.deadline - _HOPELESS
            session.status = "failed" if hopeless else "open"  # re-driven on the next sweep

    async def run_sweeps(self, client: httpx.AsyncClient) -> None:
        interval = self.config.sweep_interval or max(0.05, min(1.0, self.config.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            await self.sweep(client)

    async def shutdown(self, client: httpx.AsyncClient, timeout: float = 30.0) -> None:
        """Settle every session with charges and wait (bounded) for the jobs."""
        for session in list(self.sessions.values()):
            if session.status == "settling" and not session.job:  # a sweep cut off mid-post
                session.status = "open"
            if session.status == "open" and session.charged:
                await self.settle(client, session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(
            s.status == "settling" for s in self.sessions.values()
        ):
            await asyncio.sleep(0.1)
            for session in list(self.sessions.values()):
                if session.status == "settling" and session.job:
                    await self.poll(client, session)

    # -- the application ----------------------------------------------------------------------

    def application(self, request: Request, body: object, kind: str) -> Response | _Answer:
        """What the gateway's app answers after the payment middleware: the pricing gate, the
        bearer check, then the controller."""
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model and model.strip().lower() not in self.models:
            return JSONResponse({"error": f"Model '{model}' is not supported"}, 400)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        wanted = self.config.bearer_token
        if scheme.lower() != "bearer" or not token.strip() or (wanted and token != wanted):
            problem = {
                "detail": "No authorization token provided",
                "status": 401,
                "title": "Unauthorized",
                "type": "about:blank",
            }
            return JSONResponse(problem, 401, media_type="application/problem+json")
        if not isinstance(body, dict):
            return JSONResponse({"error": "Request must be a JSON object"}, 400)
        try:
            return _respond(kind, body)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return JSONResponse({"error": str(exc) or "Request processing failed"}, 500)

    async def handle(self, request: Request, kind: str) -> Response:
        route = (request.method, request.url.path)
        admitted = await self.admit(request, route)
        if isinstance(admitted, Response):
            return admitted
        session = admitted
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        result = self.application(request, body, kind)
        headers = {SESSION_HEADER: session.id}
        if isinstance(result, Response):
            result.headers.update(headers)
            return result
        if kind == "chat" and isinstance(body, dict) and body.get("stream"):
            return StreamingResponse(
                self.frames(session, result),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        document = self.document(result)
        await self.charge(session, result)
        return JSONResponse(document, headers=headers)

    def document(self, answer: _Answer) -> dict[str, Any]:
        created = int(time.time())
        if answer.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": answer.text}
            if answer.calls:
                message["tool_calls"] = answer.calls
            choice: dict[str, Any] = {"index": 0, "message": message}
            head = {"id": f"chatcmpl-{uuid.uuid4()}", "object": "chat.completion"}
        else:
            choice = {"text": answer.text, "index": 0}
            head = {"id": f"cmpl-{uuid.uuid4()}", "object": "text_completion"}
        choice["finish_reason"] = answer.finish
        return {
            **head,
            "created": created,
            "model": answer.model,
            "choices": [choice],
            **self.enclave.prove(answer.canonical, answer.signed_output),
            "usage": answer.usage,
            "opengradient": self.cost_block(answer),
        }

    async def frames(self, session: _Session, answer: _Answer) -> AsyncIterator[str]:
        """The gateway's SSE: text deltas, buffered tool calls, the signed final frame."""

        def frame(data: Mapping[str, Any]) -> str:
            return f"data: {json.dumps(data)}\n\n"

        def delta(content: Mapping[str, Any]) -> dict[str, Any]:
            choice = {"delta": content, "index": 0, "finish_reason": None}
            return {"choices": [choice], "model": answer.model}

        words = answer.text.split(" ") if answer.text else []
        for i, word in enumerate(words):
            yield frame(delta({"content": word if i == 0 else " " + word, "role": "assistant"}))
        for index, call in enumerate(answer.calls):
            yield frame(delta({"role": "assistant", "tool_calls": [{"index": index, **call}]}))
        final = {
            "choices": [{"delta": {}, "index": 0, "finish_reason": answer.finish}],
            "model": answer.model,
            **self.enclave.prove(answer.canonical, answer.signed_output),
            "usage": answer.usage,
            "opengradient": self.cost_block(answer),
        }
        yield frame(final)
        yield "data: [DONE]\n\n"
        await self.charge(session, answer)  # after the stream, as the middleware does

    def session_status(self, session_id: str) -> dict[str, Any] | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        return {
            "session": session.id,
            "route": " ".join(session.route),
            "status": session.status,
            "payer": session.payer,
            "cap": str(session.cap),
            "charged": str(session.charged),
            "settlement_job": session.job,
            "payment_transaction": session.transaction,
            "error": session.error,
        }


def create_app(config: ServerConfig) -> Starlette:
    gateway = _Gateway(config)
    facilitator_app = gateway.facilitator.app()

    async def chat(request: Request) -> Response:
        return await gateway.handle(request, "chat")

    async def completions(request: Request) -> Response:
        return await gateway.handle(request, "completion")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "OK", "version": "1.0.0", "tee_enabled": True})

    async def signing_key(_: Request) -> Response:
        return JSONResponse(
            {"public_key": gateway.enclave.public_pem, "tee_id": gateway.enclave.tee_id}
        )

    async def session_status(request: Request) -> Response:
        status = gateway.session_status(request.path_params["session_id"])
        if status is None:
            return JSONResponse({"error": "unknown session"}, status_code=404)
        return JSONResponse(status)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        transport = httpx.ASGITransport(app=facilitator_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://facilitator") as client:
            loop = asyncio.get_running_loop()
            worker = loop.create_task(gateway.facilitator.work())
            sweeper = loop.create_task(gateway.run_sweeps(client))
            try:
                yield
            finally:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
                await gateway.shutdown(client)
                worker.cancel()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/health", health),
            Route("/signing-key", signing_key),
            Route("/x402/sessions/{session_id}", session_status),
            Mount("/facilitator", app=facilitator_app),
        ],
        lifespan=lifespan,
    )


@contextlib.contextmanager
def serve(
    config: ServerConfig,
    *,
    startup_timeout: float = 30.0,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> Iterator[str]:
    """Run the server on a free 127.0.0.1 port in a background thread; yields its URL.

    ``tls_cert`` (PEM, with the key unless ``tls_key`` is given): serve HTTPS with it, as an
    enclave presents the certificate registered for it in OpenGradient's TEE registry.
    Leaving the block stops it, which settles every session with charges onchain (as ``main``
    does)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host="127.0.0.1",
            port=0,
            log_level="error",
            ssl_certfile=None if tls_cert is None else str(tls_cert),
            ssl_keyfile=None if tls_key is None else str(tls_key),
        )
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
        yield f"{'http' if tls_cert is None else 'https'}://127.0.0.1:{port}"
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
    parser.add_argument("--serve-margin", type=int, default=60)
    parser.add_argument("--settle-margin", type=int, default=30)
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (and key)")
    parser.add_argument("--tls-key", help="the certificate's key, if not in --tls-cert")
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
            serve_margin=args.serve_margin,
            settle_margin=args.settle_margin,
        )
        app = create_app(config)
    except (ValueError, OSError) as exc:
        print(f"server: {exc}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    scheme = "http" if args.tls_cert is None else "https"
    print(
        f"opengradient test server listening on {scheme}://127.0.0.1:{port} "
        f"tee_id={_Enclave(config.signing_key).tee_id}",
        flush=True,
    )
    uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            ssl_certfile=args.tls_cert,
            ssl_keyfile=args.tls_key,
        )
    ).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
