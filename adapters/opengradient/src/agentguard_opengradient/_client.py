"""``OpenGradientClient``: OpenAI-shaped inference on OpenGradient, paid through ``X402Auth``.

The client builds the request, hands it to an ``httpx`` client whose auth is the agent's
``X402Auth`` (so the ``upto`` session maximum is authorized by the network, reserved in the
ledger and signed once per session, and each answer's charge is counted), then checks the
enclave's proof on the answer before returning it. A request the enclave would not hash
(unknown message role) is refused before anything is sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx

from agentguard import ConfigurationError, ExecutionError, ProofError, strict_loads
from agentguard.x402 import Receipt, X402Auth, receipt
from agentguard_opengradient._proof import (
    TeeProof,
    canonical_chat_request,
    canonical_completion_request,
    tee_id,
    verify_proof,
)

__all__ = ["SETTLEMENT_TYPE", "InferenceResult", "OpenGradientClient", "SettlementMode"]

SettlementMode = Literal["private", "batch", "individual"]
SETTLEMENT_TYPE = "X-SETTLEMENT-TYPE"
"""Client → server: how OpenGradient records the inference (payment only, Merkle batch of
input/output hashes, or each one individually)."""
SETTLEMENT_TX_HASH = "x-settlement-tx-hash"


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """One answer: the text, what it cost, and (with a signing key) the enclave's proof."""

    text: str
    finish_reason: str | None
    usage: Mapping[str, int]
    model: str
    receipt: Receipt | None
    """The x402 payment behind this answer: ``authorized``, the session's signed maximum (counted
    until the chain shows the settlement); ``reported_charge``, what the server says this request
    charged (its report, not proof)."""
    proof: TeeProof | None
    """Verified proof; ``None`` only when the client was given no signing key."""
    settlement_tx_hash: str | None
    raw: Mapping[str, Any] = field(repr=False)
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """With ``finish_reason == "tool_calls"``: the calls, OpenAI-shaped (``id``, ``type``,
    ``function {name, arguments}``); ``text`` is then their sorted JSON, which the proof covers."""


@dataclass(frozen=True, slots=True)
class _Call:
    path: str
    body: dict[str, Any]
    canonical: dict[str, Any]
    kind: Literal["chat", "completion"]


class OpenGradientClient:
    """Chat and completion calls against an OpenGradient TEE endpoint (or the local server).

    ``tee_signing_key`` is the enclave's RSA public key (PEM), e.g. from OpenGradient's TEE
    registry; with it every answer's proof is checked and a bad one raises ``ProofError``.
    The client does not own ``auth``: close the auth to end its ``upto`` sessions.
    """

    def __init__(
        self,
        base_url: str,
        auth: X402Auth,
        *,
        tee_signing_key: str | bytes | None = None,
        expected_tee_id: str | None = None,
        settlement_mode: SettlementMode = "batch",
        timeout: float = 60.0,
    ) -> None:
        if not isinstance(auth, X402Auth):
            raise ConfigurationError("OpenGradientClient needs an agentguard X402Auth")
        if settlement_mode not in get_args(SettlementMode):
            raise ConfigurationError(
                f"settlement_mode {settlement_mode!r} is not one of {get_args(SettlementMode)}"
            )
        if tee_signing_key is not None:
            try:
                key_id = tee_id(tee_signing_key)
            except ProofError as exc:
                raise ConfigurationError(exc.message) from None
            if expected_tee_id is not None and expected_tee_id.lower() != key_id:
                raise ConfigurationError(
                    f"the signing key is TEE {key_id}, not the expected {expected_tee_id}"
                )
        elif expected_tee_id is not None:
            raise ConfigurationError("expected_tee_id needs the TEE's tee_signing_key to check")
        self._base_url = base_url.rstrip("/")
        self._auth = auth
        self._key = tee_signing_key
        self._expected_tee_id = expected_tee_id
        self._mode = settlement_mode
        self._timeout = timeout
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._lock = threading.Lock()  # lazy creation of the httpx client

    def __repr__(self) -> str:
        return f"OpenGradientClient({self._base_url!r}, settlement_mode={self._mode!r})"

    @property
    def verifies_proofs(self) -> bool:
        """Whether every answer's enclave proof is checked (the client was given a TEE key)."""
        return self._key is not None

    # -- requests ---------------------------------------------------------------------------

    def chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> InferenceResult:
        """``POST /v1/chat/completions``; ``opts`` are OpenAI fields (``max_tokens``, …)."""
        call = self._chat_call(model, messages, opts)
        return self._result(call, self._post(call))

    def completion(self, model: str, prompt: str, **opts: Any) -> InferenceResult:
        """``POST /v1/completions``."""
        call = self._completion_call(model, prompt, opts)
        return self._result(call, self._post(call))

    async def achat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> InferenceResult:
        call = self._chat_call(model, messages, opts)
        return self._result(call, await self._apost(call))

    async def acompletion(self, model: str, prompt: str, **opts: Any) -> InferenceResult:
        call = self._completion_call(model, prompt, opts)
        return self._result(call, await self._apost(call))

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def __enter__(self) -> OpenGradientClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def __aenter__(self) -> OpenGradientClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {SETTLEMENT_TYPE: self._mode}

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._sync is None:
                self._sync = self._auth.client(
                    base_url=self._base_url, headers=self._headers(), timeout=self._timeout
                )
            return self._sync

    def _post(self, call: _Call) -> httpx.Response:
        # Racing first calls open one session: X402Auth lets one pay and the others ride it.
        return self._client().post(call.path, json=call.body)

    async def _apost(self, call: _Call) -> httpx.Response:
        return await self._async_client().post(call.path, json=call.body)

    def _async_client(self) -> httpx.AsyncClient:
        if self._async is None:
            self._async = self._auth.async_client(
                base_url=self._base_url, headers=self._headers(), timeout=self._timeout
            )
        return self._async

    @staticmethod
    def _body(model: str, opts: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("model must be a model id such as 'openai/gpt-4.1'")
        # As OpenGradient's SDK: "provider/model" ids travel as the model name alone.
        body: dict[str, Any] = {"model": model.split("/", 1)[-1], "max_tokens": 100}
        body["temperature"] = 0.0
        body.update(opts)
        if body.get("stream"):
            raise ConfigurationError("streaming is not supported by this client")
        return body

    def _chat_call(
        self, model: str, messages: Sequence[Mapping[str, Any]], opts: Mapping[str, Any]
    ) -> _Call:
        body = self._body(model, opts)
        body["messages"] = [dict(m) for m in messages]
        return _Call("/v1/chat/completions", body, canonical_chat_request(body), "chat")

    def _completion_call(self, model: str, prompt: str, opts: Mapping[str, Any]) -> _Call:
        body = self._body(model, opts)
        body["prompt"] = prompt
        return _Call("/v1/completions", body, canonical_completion_request(body), "completion")

    def _result(self, call: _Call, response: httpx.Response) -> InferenceResult:
        paid = receipt(response)
        if not response.is_success:
            raise ExecutionError(
                f"OpenGradient answered HTTP {response.status_code} to {call.path}"
                + (" after a payment" if paid else "")
                + f": {response.text[:300]}"
            )
        try:
            body = strict_loads(response.content)  # a hostile server's JSON: depth-bounded
            choice = body["choices"][0]
            text, finish = _output(choice, call.kind)
            calls = _tool_calls(choice) if finish == "tool_calls" else ()
        except (ValueError, KeyError, IndexError, TypeError):
            raise ExecutionError(f"OpenGradient's answer to {call.path} is not readable") from None
        proof = None
        if self._key is not None:
            proof = verify_proof(
                body,
                canonical_request=call.canonical,
                output=text,
                signing_key=self._key,
                expected_tee_id=self._expected_tee_id,
            )
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return InferenceResult(
            text=text,
            finish_reason=finish,
            usage={k: v for k, v in usage.items() if isinstance(v, int)},
            model=str(body.get("model", call.body["model"])),
            receipt=paid,
            proof=proof,
            settlement_tx_hash=response.headers.get(SETTLEMENT_TX_HASH),
            raw=body,
            tool_calls=calls,
        )


def _output(choice: Mapping[str, Any], kind: str) -> tuple[str, str | None]:
    """The text the enclave hashed: the message (or the tool calls as sorted JSON), or the
    completion text."""
    if not isinstance(choice, Mapping):
        raise TypeError("a choice is not an object")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise TypeError("finish_reason is not a string")
    if kind == "completion":
        return _text(choice["text"]), finish
    message = choice["message"]
    if not isinstance(message, Mapping):
        raise TypeError("the message is not an object")
    if finish == "tool_calls" and isinstance(message.get("tool_calls"), list):
        return json.dumps(message["tool_calls"], sort_keys=True), finish
    return _text(message.get("content") or ""), finish


def _tool_calls(choice: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """The answer's tool calls, each ``{id, type: function, function: {name, arguments}}``."""
    calls = choice["message"].get("tool_calls")
    if not isinstance(calls, list) or not calls:
        raise TypeError("finish_reason is tool_calls but there are none")
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not (
            isinstance(function, Mapping)
            and isinstance(call.get("id"), str)
            and call.get("type") == "function"
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        ):
            raise TypeError("a tool call is not {id, type: function, function: {name, arguments}}")
    return tuple(calls)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("answer text is not a string")
    return value
