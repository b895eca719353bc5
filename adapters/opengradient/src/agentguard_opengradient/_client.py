"""``OpenGradientClient``: OpenAI-shaped inference on OpenGradient's TEE gateway, paid through
``X402Auth``.

The client speaks the gateway as OpenGradient's own SDK does (OpenGradient/OpenGradient-SDK
@0afa3f3, gateway OpenGradient/tee-gateway @cb95a5c and later indexed versions):

* every request carries ``Authorization: Bearer <token>`` (the gateway requires the header and
  does not check its value; the SDK's placeholder is the default) and ``X-SETTLEMENT-TYPE``;
* the model is checked against the gateway's model list before anything is paid;
* the ``upto`` session maximum is authorized by the network, reserved in the ledger and signed
  once per session by ``X402Auth``; when the gateway ends a session it answers the request
  riding it with a bare 402 (no ``PAYMENT-REQUIRED``): the session is dropped and the request
  sent once more without it, to get a fresh 402 (as OpenGradient's client does), never more;
* the answer's unsigned ``opengradient`` cost block is read as the server's report
  (``receipt.reported_charge``, ``cost``): the ledger keeps the signed maximum counted until
  the chain shows the settlement;
* an error answer to a request that carried a payment or rode a paid session is
  ``PaidRequestRefused`` (the signed maximum stays counted), never a silent loss;
* the enclave's proof is checked on every answer: with ``tee=`` (a ``TeeRegistry``) under the
  key OpenGradient's onchain registry holds for the TEE the answer names, which must be active
  and registered at the endpoint the answer came from, over TLS pinned to the registered
  certificate; or under a ``tee_signing_key`` the user supplies.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import httpx

from agentguard import (
    ConfigurationError,
    ExecutionError,
    PaidRequestRefused,
    PaymentRequiredError,
    ProofError,
    strict_loads,
)
from agentguard.x402 import UPTO_SESSION, Receipt, X402Auth, receipt
from agentguard_opengradient._models import ModelList
from agentguard_opengradient._proof import (
    TeeProof,
    canonical_chat_request,
    canonical_completion_request,
    tee_id,
    verify_proof,
)
from agentguard_opengradient._tee_registry import TeeRegistry, origin
from agentguard_opengradient._tls import AsyncPinnedTransport, PinnedTransport

if TYPE_CHECKING:
    from agentguard_opengradient._stream import AsyncChatStream, ChatStream

__all__ = [
    "DATA_SETTLEMENT_TX_HASH",
    "PLACEHOLDER_API_KEY",
    "SETTLEMENT_TYPE",
    "InferenceCost",
    "InferenceResult",
    "OpenGradientClient",
    "SettlementMode",
]

SettlementMode = Literal["private", "batch", "individual"]
SETTLEMENT_TYPE = "X-SETTLEMENT-TYPE"
"""Client → server: how OpenGradient records the inference (payment only, Merkle batch of
input/output hashes, or each one individually)."""
DATA_SETTLEMENT_TX_HASH = "x-settlement-tx-hash"
"""Server → client: the *data*-settlement transaction (the inference's input/output hashes
recorded onchain, ``individual`` mode). It is not the payment: the payment settles later, for
the whole session, and shows onchain as the upto proxy's ``Settled`` event."""
PLACEHOLDER_API_KEY = "0x" + "1234567890abcdef" * 4
"""What OpenGradient's SDK sends as the bearer token: the gateway requires the header but does
not check its value (access is paid for, not granted)."""
_PAYMENT_HEADERS = ("PAYMENT-SIGNATURE", "X-PAYMENT")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class InferenceCost:
    """The gateway's unsigned ``opengradient`` block: what it says this request cost. A report
    for display and estimates; what the budget counts is the receipt's ``authorized``."""

    cost_opg: int
    """Atomic OPG (18 decimals) the gateway says it adds to the session."""
    cost_usd: Decimal
    opg_price_usd: Decimal


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
    cost (the body's ``opengradient.cost_opg``: its report, not proof)."""
    proof: TeeProof | None
    """Verified proof; ``None`` only when the client was given no signing key."""
    data_settlement_tx_hash: str | None
    """``x-settlement-tx-hash``: the transaction recording this inference's input/output hashes
    (``individual`` mode). Not the payment's settlement."""
    raw: Mapping[str, Any] = field(repr=False)
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """With ``finish_reason == "tool_calls"``: the calls, OpenAI-shaped (``id``, ``type``,
    ``function {name, arguments}``); ``text`` is then their sorted JSON, which the proof covers."""
    cost: InferenceCost | None = None
    """The gateway's own cost report (unsigned), when it sent one."""


@dataclass(frozen=True, slots=True)
class _Call:
    path: str
    body: dict[str, Any]
    canonical: dict[str, Any]
    kind: Literal["chat", "completion"]
    base: str = ""
    """The endpoint this call goes to (with a registry: an active TEE's, fixed per call)."""

    @property
    def url(self) -> str:
        return self.base + self.path


class OpenGradientClient:
    """Chat and completion calls against an OpenGradient TEE endpoint (or the local server).

    ``tee``: OpenGradient's onchain TEE registry (``agentguard_opengradient.tee.TeeRegistry``),
    the way to use the client. With it, ``base_url`` (``None``: an active TEE the registry
    picks, re-picked when it stops being listed) must be a registered, active TEE; requests go
    through ``PinnedTransport`` / ``AsyncPinnedTransport`` on that registry (``transport`` /
    ``async_transport`` may be such transports, configured), without environment proxies; and
    every answer's proof is checked with the key the registry holds for the TEE it names, which
    must be active and registered at ``base_url`` (``TeeNotActive`` otherwise).
    ``tee_signing_key``: without a registry, the enclave's RSA public key (PEM) to check proofs
    with (``expected_tee_id`` pins its id); giving both is a ``ConfigurationError``.
    ``api_key``: the bearer token sent on every request (default: the SDK's placeholder).
    ``models`` replaces, ``extra_models`` extends, the pinned list of models the gateway serves;
    any other model raises ``UnknownModel`` before anything is paid. The client does not own
    ``auth``: close the auth to end its ``upto`` sessions.
    """

    _tee: TeeRegistry | None = None  # also for clients built by tests without __init__

    def __init__(
        self,
        base_url: str | None,
        auth: X402Auth,
        *,
        tee: TeeRegistry | None = None,
        tee_signing_key: str | bytes | None = None,
        expected_tee_id: str | None = None,
        settlement_mode: SettlementMode = "batch",
        api_key: str = PLACEHOLDER_API_KEY,
        models: Iterable[str] | None = None,
        extra_models: Iterable[str] = (),
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        if not isinstance(auth, X402Auth):
            raise ConfigurationError("OpenGradientClient needs an agentguard X402Auth")
        if settlement_mode not in get_args(SettlementMode):
            raise ConfigurationError(
                f"settlement_mode {settlement_mode!r} is not one of {get_args(SettlementMode)}"
            )
        if not isinstance(api_key, str) or not api_key.strip() or not api_key.isprintable():
            raise ConfigurationError(
                "api_key must be a non-empty printable token (the gateway requires the header)"
            )
        if tee is not None:
            _check_registry_options(tee, base_url, tee_signing_key, expected_tee_id)
            transport, async_transport = _pinned(tee, transport, async_transport)
        elif base_url is None:
            raise ConfigurationError("base_url is needed without a TEE registry (tee=)")
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
        self._base_url = base_url.rstrip("/") if base_url is not None else None
        self._chosen: str | None = None
        self._auth = auth
        self._tee = tee
        self._key = tee_signing_key
        self._expected_tee_id = expected_tee_id
        self._mode = settlement_mode
        self._api_key = api_key
        self._models = ModelList(models, extra_models)
        self._transport = transport
        self._async_transport = async_transport
        self._timeout = timeout
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._lock = threading.Lock()  # lazy creation of the httpx client

    def __repr__(self) -> str:  # the bearer token stays out
        where = self._base_url or self._chosen or "a TEE from the registry"
        return f"OpenGradientClient({where!r}, settlement_mode={self._mode!r})"

    @property
    def verifies_proofs(self) -> bool:
        """Whether every answer's enclave proof is checked (a registry or a TEE key)."""
        return self._tee is not None or self._key is not None

    def _endpoint(self) -> str:
        """The endpoint the next call goes to. With a registry: ``base_url`` if an active TEE
        is registered there (``TeeNotActive`` otherwise), else the TEE last picked while the
        registry still lists it, else a newly picked active TEE (reads the registry when its
        cache is stale)."""
        if self._base_url is not None:
            if self._tee is not None:
                self._tee.for_url(self._base_url)  # TeeNotActive before anything is sent
            return self._base_url
        assert self._tee is not None
        active = self._tee.active()
        with self._lock:
            if self._chosen is None or all(_base(t.endpoint) != self._chosen for t in active):
                self._chosen = _base(self._tee.choose().endpoint)
            return self._chosen

    # -- requests ---------------------------------------------------------------------------

    def chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> InferenceResult:
        """``POST /v1/chat/completions``; ``opts`` are OpenAI fields (``max_tokens``, …)."""
        call = self._chat_call(model, messages, opts)
        return self._result(call, self._send(call, self._post))

    def completion(self, model: str, prompt: str, **opts: Any) -> InferenceResult:
        """``POST /v1/completions``."""
        call = self._completion_call(model, prompt, opts)
        return self._result(call, self._send(call, self._post))

    async def achat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> InferenceResult:
        call = self._chat_call(model, messages, opts)
        return self._result(call, await self._asend(call, self._apost))

    async def acompletion(self, model: str, prompt: str, **opts: Any) -> InferenceResult:
        call = self._completion_call(model, prompt, opts)
        return self._result(call, await self._asend(call, self._apost))

    def stream_chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> ChatStream:
        """Streamed (SSE) chat: iterate the text as it comes; the proof is checked on the final
        frame. Use as a context manager::

            with og.stream_chat(model, messages) as stream:
                for text in stream:      # unverified until the stream ends
                    ...
            stream.result                # InferenceResult; the proof verified

        A stream whose final frame is missing or whose proof fails raises ``StreamUnverified``
        at its end, after the text; the payment stays counted as for any paid answer."""
        from agentguard_opengradient._stream import ChatStream

        return ChatStream(self, self._chat_call(model, messages, opts, stream=True))

    def astream_chat(
        self, model: str, messages: Sequence[Mapping[str, Any]], **opts: Any
    ) -> AsyncChatStream:
        """The async twin of ``stream_chat`` (``async with`` / ``async for``)."""
        from agentguard_opengradient._stream import AsyncChatStream

        return AsyncChatStream(self, self._chat_call(model, messages, opts, stream=True))

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

    # -- internals (also used by _stream) ---------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", SETTLEMENT_TYPE: self._mode}

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._sync is None:
                self._sync = self._auth.client(
                    headers=self._headers(),
                    timeout=self._timeout,
                    transport=self._transport or self._registry_transport(),
                    trust_env=self._tee is None,  # a proxy from the environment: not pinned
                )
            return self._sync

    def _async_client(self) -> httpx.AsyncClient:
        if self._async is None:
            self._async = self._auth.async_client(
                headers=self._headers(),
                timeout=self._timeout,
                transport=self._async_transport or self._registry_async_transport(),
                trust_env=self._tee is None,
            )
        return self._async

    def _registry_transport(self) -> httpx.BaseTransport | None:
        return PinnedTransport(self._tee) if self._tee is not None else None

    def _registry_async_transport(self) -> httpx.AsyncBaseTransport | None:
        return AsyncPinnedTransport(self._tee) if self._tee is not None else None

    def _post(self, call: _Call) -> httpx.Response:
        # Racing first calls open one session: X402Auth lets one pay and the others ride it.
        return self._client().post(call.url, json=call.body)

    async def _apost(self, call: _Call) -> httpx.Response:
        return await self._async_client().post(call.url, json=call.body)

    def _session_key(self, call: _Call) -> str:
        url = httpx.URL(call.url)
        return f"POST {url.scheme}://{url.netloc.decode('ascii')}{url.path}"

    def _riding(self, call: _Call) -> str | None:
        """The ``upto`` session this call's request will ride, if one is open."""
        open_session = self._auth.sessions.get(self._session_key(call))
        return open_session[0] if open_session else None

    def _ended(self, call: _Call, riding: str | None) -> bool:
        """Whether the session the request rode was ended by the server's answer (a bare 402:
        ``X402Auth`` dropped the session and found no payment requirements in it)."""
        return riding is not None and self._riding(call) != riding

    def _send(self, call: _Call, send: Callable[[_Call], _T]) -> _T:
        """Send once; if the gateway ended the session the request rode, once more without it
        (fresh 402, new payment). Never a third time."""
        for attempt in (0, 1):
            riding = self._riding(call)
            try:
                return send(call)
            except PaymentRequiredError:
                self._session_end(call, riding, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _asend(self, call: _Call, send: Callable[[_Call], Awaitable[_T]]) -> _T:
        for attempt in (0, 1):
            riding = self._riding(call)
            try:
                return await send(call)
            except PaymentRequiredError:
                self._session_end(call, riding, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _session_end(self, call: _Call, riding: str | None, attempt: int) -> None:
        """Inside ``except PaymentRequiredError``: return to re-send after a first session end,
        else re-raise (a session ended twice in a row says so)."""
        if not self._ended(call, riding):
            raise
        if attempt:
            raise PaymentRequiredError(
                f"OpenGradient ended the upto session {call.path} rode again right after a new "
                "one was opened (bare 402 'Session expired or exhausted'); not re-sent a third "
                "time: retry the call"
            ) from None

    def _body(self, model: str, opts: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("model must be a model id such as 'openai/gpt-4.1'")
        # As OpenGradient's SDK: "provider/model" ids travel as the model name alone.
        body: dict[str, Any] = {"model": model.split("/", 1)[-1], "max_tokens": 100}
        body["temperature"] = 0.0
        body.update(opts)
        if "stream" in body:
            raise ConfigurationError(
                "pass no stream option: use stream_chat / astream_chat for a streamed answer"
            )
        if stream:
            body["stream"] = True
        self._models.check(body["model"])  # before anything is paid
        return body

    def _chat_call(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        opts: Mapping[str, Any],
        *,
        stream: bool = False,
    ) -> _Call:
        body = self._body(model, opts, stream=stream)
        body["messages"] = [dict(m) for m in messages]
        canonical = canonical_chat_request(body)
        return _Call("/v1/chat/completions", body, canonical, "chat", self._endpoint())

    def _completion_call(self, model: str, prompt: str, opts: Mapping[str, Any]) -> _Call:
        body = self._body(model, opts, stream=False)
        body["prompt"] = prompt
        canonical = canonical_completion_request(body)
        return _Call("/v1/completions", body, canonical, "completion", self._endpoint())

    def _result(self, call: _Call, response: httpx.Response) -> InferenceResult:
        if not response.is_success:
            raise refused(call.path, response)
        try:
            body = strict_loads(response.content)  # a hostile server's JSON: depth-bounded
            choice = body["choices"][0]
            text, finish = _output(choice, call.kind)
            calls = _tool_calls(choice) if finish == "tool_calls" else ()
        except (ValueError, KeyError, IndexError, TypeError):
            raise ExecutionError(f"OpenGradient's answer to {call.path} is not readable") from None
        return self._verified(call, response, body, text, finish, calls)

    def _verified(
        self,
        call: _Call,
        response: httpx.Response,
        body: Mapping[str, Any],
        text: str,
        finish: str | None,
        calls: tuple[Mapping[str, Any], ...],
    ) -> InferenceResult:
        """The checked result of an answer (``body``: the JSON answer or a stream's final frame
        with the assembled choice): its proof verified when the client has a registry or a key."""
        proof = None
        if self._tee is not None:
            # The key is the registry's for the TEE the answer names; that TEE must be active
            # and registered where the answer came from (not relayed from another enclave).
            proof = self._tee.verify(
                body, canonical_request=call.canonical, output=text, endpoint=call.base
            )
        elif self._key is not None:
            proof = verify_proof(
                body,
                canonical_request=call.canonical,
                output=text,
                signing_key=self._key,
                expected_tee_id=self._expected_tee_id,
            )
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        cost = inference_cost(body.get("opengradient"))
        paid = receipt(response)
        if paid is not None and cost is not None:
            paid = dataclasses.replace(paid, reported_charge=cost.cost_opg)
        return InferenceResult(
            text=text,
            finish_reason=finish,
            usage={
                k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)
            },
            model=str(body.get("model", call.body["model"])),
            receipt=paid,
            proof=proof,
            data_settlement_tx_hash=response.headers.get(DATA_SETTLEMENT_TX_HASH),
            raw=body,
            tool_calls=calls,
            cost=cost,
        )


def _base(endpoint: str) -> str:
    return endpoint.rstrip("/")


def _check_registry_options(
    tee: TeeRegistry,
    base_url: str | None,
    tee_signing_key: str | bytes | None,
    expected_tee_id: str | None,
) -> None:
    if not isinstance(tee, TeeRegistry):
        raise ConfigurationError("tee must be an agentguard_opengradient.tee.TeeRegistry")
    if tee_signing_key is not None or expected_tee_id is not None:
        raise ConfigurationError(
            "give either tee= (the registry supplies each TEE's key) or tee_signing_key= "
            "(and expected_tee_id=), not both"
        )
    if base_url is not None:
        origin(base_url)  # an https URL, as the registry records endpoints


def _pinned(
    tee: TeeRegistry,
    transport: httpx.BaseTransport | None,
    async_transport: httpx.AsyncBaseTransport | None,
) -> tuple[PinnedTransport | None, AsyncPinnedTransport | None]:
    """The user's transports, if they are pinned to this registry (their own configuration:
    limits, retries); any other transport would bypass the registry's certificates."""
    if transport is not None and not (
        isinstance(transport, PinnedTransport) and transport.registry is tee
    ):
        raise ConfigurationError("with tee=, transport must be a PinnedTransport on that registry")
    if async_transport is not None and not (
        isinstance(async_transport, AsyncPinnedTransport) and async_transport.registry is tee
    ):
        raise ConfigurationError(
            "with tee=, async_transport must be an AsyncPinnedTransport on that registry"
        )
    return transport, async_transport


def refused(path: str, response: httpx.Response) -> ExecutionError:
    """The error for an error answer: ``PaidRequestRefused`` when the request carried a signed
    payment or rode a paid session (the payee holds a signature; it stays counted)."""
    sent = response.request.headers
    paid = receipt(response)
    detail = response.text[:300]  # the caller read the body
    if any(h in sent for h in _PAYMENT_HEADERS) or UPTO_SESSION in sent:
        how = "a signed payment" if any(h in sent for h in _PAYMENT_HEADERS) else "a paid session"
        return PaidRequestRefused(
            f"OpenGradient answered HTTP {response.status_code} to {path}, a request carrying "
            f"{how}; the signed maximum stays counted until the chain shows the settlement: "
            f"{detail}",
            status=response.status_code,
            reference=paid.reference if paid else None,
            reservation_id=paid.reservation_id if paid else None,
        )
    return ExecutionError(f"OpenGradient answered HTTP {response.status_code} to {path}: {detail}")


_MAX_OPG = 10**36  # far above any real cost (10^18 OPG); a larger figure is not a report


def inference_cost(block: object) -> InferenceCost | None:
    """The ``opengradient`` cost block, or ``None`` if absent or not as the gateway writes it
    (``cost_opg`` an integer string, the others decimal strings)."""
    if not isinstance(block, Mapping):
        return None
    fields = [block.get(k) for k in ("cost_opg", "cost_usd", "opg_price_usd")]
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in fields):
        return None
    opg, usd, price = (str(v) for v in fields)
    if not (opg.isascii() and opg.isdigit() and len(opg) <= 40) or int(opg) > _MAX_OPG:
        return None
    try:
        decimals = [Decimal(usd), Decimal(price)]
    except InvalidOperation:
        return None
    if not all(d.is_finite() and d >= 0 for d in decimals):
        return None
    return InferenceCost(int(opg), decimals[0], decimals[1])


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
        return tool_calls_text(message["tool_calls"]), finish
    return _text(message.get("content") or ""), finish


def tool_calls_text(calls: Sequence[Any]) -> str:
    """What the enclave hashes for an answer with tool calls: the calls as sorted JSON."""
    return json.dumps(list(calls), sort_keys=True)


def _tool_calls(choice: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    """The answer's tool calls, each ``{id, type: function, function: {name, arguments}}``."""
    return checked_tool_calls(choice["message"].get("tool_calls"))


def checked_tool_calls(calls: object) -> tuple[Mapping[str, Any], ...]:
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
