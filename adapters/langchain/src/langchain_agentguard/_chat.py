"""``ChatOpenGradient``: a LangChain chat model whose answers are paid through the guard and
proven by OpenGradient's enclave.

Every call goes through ``agentguard_opengradient.OpenGradientClient``: the x402 ``upto``
session that pays for it is authorized by the network before the agent's key signs, reserved
in the ledger, and each answer's TEE proof is checked before the answer is returned. A proof
that does not hold raises ``agentguard.ProofError`` and the answer is dropped; a refused or
over-budget payment raises its typed agentguard error (a chat model that turned a refusal into
text would let an agent take the refusal for the model's answer).

``bind_tools`` offers tools; the calls in an answer are part of what the enclave signed, so a
rewritten call fails the proof before anything can run it. Not supported: streaming
(``stream()`` yields the whole answer once, after its proof is checked), structured output /
JSON mode, and non-text inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from agentguard_opengradient import InferenceResult, OpenGradientClient
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, field_validator, model_validator

from agentguard import (
    ConfigurationError,
    ExecutionError,
    IntentError,
    Ledger,
    ProofError,
    ReservationError,
    Token,
    format_amount,
    strict_loads,
)

__all__ = ["ChatOpenGradient"]

PROVIDER = "opengradient"
_OPTIONS = frozenset({"model", "temperature", "max_tokens", "stop", "tools", "tool_choice"})
_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ChatOpenGradient(BaseChatModel):
    """OpenGradient TEE inference as a LangChain chat model, paid per call under attestation.

        og = OpenGradientClient(None, guard.x402(...), tee=TeeRegistry.from_rpc(rpc_url))
        chat = ChatOpenGradient(client=og, model="openai/gpt-4.1", ledger=ledger)
        answer = chat.invoke("What is an attestation?")
        answer.response_metadata["payment"]["authorized"]        # "0.1 OPG": counted
        answer.response_metadata["payment"]["reported_charge"]   # "0.000012 OPG": the server's
        answer.response_metadata["tee_proof"]           # {"verified": True, "tee_id": ...}

    ``require_proof`` (default): the client must hold the enclave's key, so no answer is
    returned unverified. ``ledger`` (the one the client's ``X402Auth`` reserves in) adds the
    attestation's task id to the payment metadata. ``tokens`` names assets the known-token
    registry lacks (a local OPG), so amounts read in human units. Retries are never made: a
    retried paid call would be paid again.
    """

    client: OpenGradientClient = Field(exclude=True)
    model: str = "openai/gpt-4.1"
    temperature: float = 0.0
    max_tokens: int | None = 100
    stop: list[str] | None = None
    require_proof: bool = True
    ledger: Ledger | None = Field(default=None, exclude=True)
    tokens: tuple[Token, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _client(cls, values: Any) -> Any:
        """A missing or wrong client is agentguard's error, not a pydantic one."""
        client = values.get("client") if isinstance(values, Mapping) else None
        if not isinstance(client, OpenGradientClient):
            raise ConfigurationError(
                "ChatOpenGradient needs client=agentguard_opengradient.OpenGradientClient(...)"
            )
        return values

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> tuple[Token, ...]:
        if value is None:
            return ()
        if isinstance(value, Token):
            return (value,)
        if isinstance(value, Mapping):
            value = value.values()
        if isinstance(value, Iterable) and not isinstance(value, str | bytes):
            found = tuple(value)
            if all(isinstance(t, Token) for t in found):
                return found
        raise ConfigurationError("tokens= takes a Token, an iterable or a mapping of Tokens")

    @model_validator(mode="after")
    def _verifying_client(self) -> ChatOpenGradient:
        if self.require_proof and not self.client.verifies_proofs:
            raise ConfigurationError(
                "ChatOpenGradient needs an OpenGradientClient with tee= (OpenGradient's TEE "
                "registry) or tee_signing_key= so every answer's enclave proof is checked (or "
                "require_proof=False to accept unproven answers)"
            )
        return self

    @property
    def _llm_type(self) -> str:
        return "opengradient-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = PROVIDER
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model, opts = self._request(stop, kwargs)
        result = self.client.chat(model, to_openai_messages(messages), **opts)
        return self._chat_result(result, offered=_names(opts.get("tools", ())))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model, opts = self._request(stop, kwargs)
        result = await self.client.achat(model, to_openai_messages(messages), **opts)
        return self._chat_result(result, offered=_names(opts.get("tools", ())))

    def _request(
        self, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The model id and OpenAI options of one call; anything else is refused, not sent
        (``stream``, ``response_format``, ``n`` would change what is paid for or proven)."""
        unknown = sorted(set(kwargs) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"ChatOpenGradient does not support {', '.join(unknown)}; "
                f"per-call options are {', '.join(sorted(_OPTIONS))}"
            )
        opts: dict[str, Any] = {"temperature": kwargs.get("temperature", self.temperature)}
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            opts["max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            opts["stop"] = list(stops)
        if kwargs.get("tools"):
            tools = _openai_tools(kwargs["tools"])
            opts["tools"] = tools
            if kwargs.get("tool_choice") is not None:
                opts["tool_choice"] = _tool_choice(kwargs["tool_choice"], tools)
        return str(kwargs.get("model", self.model)), opts

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` (OpenAI function format) on every call. The enclave's proof covers
        the tools offered and the calls answered. ``tool_choice``: ``"auto"``, ``"none"``,
        ``"required"`` / ``"any"`` / ``True``, or a tool's name."""
        if kwargs:
            raise ConfigurationError(
                f"ChatOpenGradient.bind_tools does not support {', '.join(sorted(kwargs))}"
            )
        formatted = _openai_tools(tools)
        bound: dict[str, Any] = {"tools": formatted}
        if tool_choice is not None:
            bound["tool_choice"] = _tool_choice(tool_choice, formatted)
        return self.bind(**bound)

    def _chat_result(self, result: InferenceResult, *, offered: Sequence[str]) -> ChatResult:
        """The answer for LangChain; tool calls only to tools this call offered."""
        called = sorted({call["function"]["name"] for call in result.tool_calls} - set(offered))
        if called:
            raise ExecutionError(
                f"OpenGradient answered with calls to {', '.join(called)}, which this call did "
                f"not offer (offered: {', '.join(offered) or 'no tools'}); the answer is not "
                "returned"
            )
        if self.require_proof and result.proof is None:  # the client checks when it has a key
            raise ProofError("the answer carries no verified TEE proof; it is not returned")
        usage = _usage(result.usage)
        metadata: dict[str, Any] = {
            "model_name": result.model,
            "model_provider": PROVIDER,
            "finish_reason": result.finish_reason,
            "token_usage": dict(result.usage),
            "payment": self._payment(result),
            "tee_proof": _proof(result),
            "data_settlement_tx_hash": result.data_settlement_tx_hash,
        }
        answer_id = result.raw.get("id")
        calls, invalid = _parsed_calls(result.tool_calls)
        message = AIMessage(
            # with tool calls the enclave signs only the calls: any text beside them is unproven
            content="" if result.tool_calls else result.text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            id=answer_id if isinstance(answer_id, str) else None,
            response_metadata=metadata,
            usage_metadata=usage,
        )
        generation = ChatGeneration(
            message=message, generation_info={"finish_reason": result.finish_reason}
        )
        return ChatResult(
            generations=[generation],
            llm_output={"model_name": result.model, "token_usage": dict(result.usage)},
        )

    def _payment(self, result: InferenceResult) -> dict[str, Any] | None:
        """What this answer cost: ``authorized`` (signed and counted; ``upto``: the session's
        maximum, counted until the chain shows the settlement) and ``reported_charge`` (the
        server's unverified report), each in human units and exact (``*_atomic``)."""
        paid = result.receipt
        if paid is None:
            return None
        chain_id = _chain_id(paid.network)

        def human(atomic: int | None) -> str | None:
            if atomic is None or chain_id is None:
                return None
            return format_amount(atomic, paid.asset, chain_id, self.tokens)

        task_id = None
        if self.ledger is not None and paid.reservation_id:
            try:
                task_id = self.ledger.get(paid.reservation_id).task_id
            except ReservationError:
                raise ConfigurationError(
                    "ledger= is not the ledger the client's X402Auth reserves in (it has no "
                    f"reservation {paid.reservation_id}); pass that one, or none"
                ) from None
        return {
            "authorized": human(paid.authorized),
            "authorized_atomic": paid.authorized,
            "reported_charge": human(paid.reported_charge),
            "reported_charge_atomic": paid.reported_charge,
            "asset": paid.asset,
            "scheme": paid.scheme,
            "network": paid.network,
            "payer": paid.payer,
            "pay_to": paid.pay_to,
            "session": paid.session,
            "reservation_id": paid.reservation_id,
            "task_id": task_id,
            "pending": paid.pending,
        }


def _openai_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        raise ConfigurationError("tools must be a list of tools, functions, models or schemas")
    try:
        return [convert_to_openai_tool(t) for t in tools]
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"a tool cannot be offered to OpenGradient: {exc}") from None


def _names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools]


def _tool_choice(choice: str | dict[str, Any] | bool, tools: Sequence[dict[str, Any]]) -> Any:
    """LangChain's ``tool_choice`` in OpenAI's form; a name must be one of the tools."""
    if choice is True:
        return "required"
    if isinstance(choice, dict):
        return choice
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return _TOOL_CHOICES[choice]
    names = _names(tools)
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    raise ConfigurationError(
        f"tool_choice {choice!r} is not auto, none, required, any or one of {names}"
    )


def _parsed_calls(
    raw: Sequence[Mapping[str, Any]],
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """The answer's calls for LangChain; arguments that are not one strict JSON object (no
    duplicate key, no NaN) are reported as invalid tool calls (the agent loop tells the
    model), never run."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in raw:
        try:  # strictly: a duplicate key would be read differently by another reader
            args = strict_loads(call["function"]["arguments"])
        except (ValueError, TypeError):
            args = None
        if isinstance(args, dict):
            calls.append(tool_call(name=call["function"]["name"], args=args, id=call["id"]))
        else:
            invalid.append(
                invalid_tool_call(
                    name=call["function"]["name"],
                    args=call["function"]["arguments"],
                    id=call["id"],
                    error="the arguments are not a JSON object",
                )
            )
    return calls, invalid


def _chain_id(network: str) -> int | None:
    """``eip155:8453`` → 8453 (x402 v2 names networks by CAIP-2)."""
    namespace, _, reference = network.partition(":")
    return int(reference) if namespace == "eip155" and reference.isdigit() else None


def _usage(usage: Mapping[str, int]) -> UsageMetadata | None:
    if "prompt_tokens" not in usage and "completion_tokens" not in usage:
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return UsageMetadata(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=usage.get("total_tokens", prompt + completion),
    )


def _proof(result: InferenceResult) -> dict[str, Any]:
    proof = result.proof
    if proof is None:
        return {"verified": False, "tee_id": None}
    return {
        "verified": True,
        "tee_id": proof.tee_id,
        "request_hash": proof.request_hash,
        "output_hash": proof.output_hash,
        "timestamp": proof.timestamp,
    }


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat messages (text only)."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        entry: dict[str, Any] = {"role": _role(message), "content": _text(message)}
        if isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
        elif isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                }
                for call in message.tool_calls
            ]
        converted.append(entry)
    return converted


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage) and message.role in _ROLES:
        return _ROLES[message.role]
    raise IntentError(
        f"a {type(message).__name__} cannot be sent to OpenGradient "
        "(system, human, ai and tool messages can)"
    )


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            raise IntentError(
                f"ChatOpenGradient sends text only; a {block.get('type')!r} content block "
                "cannot be sent"
            )
    return "".join(parts)
