"""Streamed (SSE) chat as OpenGradient's gateway sends it, with the proof checked at the end.

The gateway streams ``data: {json}`` frames: text deltas (``choices[0].delta.content``), tool
calls (``delta.tool_calls`` fragments by ``index``), then one final frame with an empty delta,
the ``finish_reason``, the five ``tee_*`` proof fields, ``usage`` and the ``opengradient`` cost
block, then ``data: [DONE]``. An error after the stream started is an in-band frame
``{"error", "exception_type"}`` with no ``[DONE]``.

Text is handed to the caller as it comes, and is unverified until the final frame's proof
checks out over all of it. A stream that ends without that frame, with text after it, with an
in-band error, or whose proof fails raises ``StreamUnverified`` at its end (``.text`` holds
what streamed); the payment stays counted as for any paid answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

from agentguard import ExecutionError, ProofError, StreamUnverified, strict_loads
from agentguard_opengradient._client import (
    InferenceResult,
    OpenGradientClient,
    _Call,
    checked_tool_calls,
    refused,
    tool_calls_text,
)

__all__ = ["AsyncChatStream", "ChatStream"]

MAX_STREAM_BYTES = 16 * 2**20
"""A stream longer than this is cut off (a hostile server could stream forever)."""
_PROOF = "tee_signature"


class _Assembler:
    """Reads SSE lines; collects the text and tool calls, and the final frame."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.pieces: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.final: dict[str, Any] | None = None
        self.problem: str | None = None
        self.done = False
        self.size = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def feed(self, line: str) -> str | None:
        """One line of the stream; the text it adds, if any."""
        self.size += len(line) + 1
        if self.size > MAX_STREAM_BYTES:
            self.problem = f"the stream passed {MAX_STREAM_BYTES} bytes and was cut off"
            self.done = True
            return None
        if self.done or not line.startswith("data:"):
            return None
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            frame = strict_loads(data)
        except ValueError:
            return self._fail("a stream frame is not JSON")
        if not isinstance(frame, dict):
            return self._fail("a stream frame is not a JSON object")
        if "error" in frame:
            error = str(frame["error"])[:200]
            return self._fail(f"the gateway ended the stream with an error: {error}")
        if self.final is not None:
            return self._fail("the stream went on after its final (signed) frame")
        if _PROOF in frame:
            self.final = frame
        return self._delta(frame)

    def _fail(self, problem: str) -> str | None:
        self.problem, self.done = problem, True
        return None

    def _delta(self, frame: Mapping[str, Any]) -> str | None:
        choices = frame.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return None
        for fragment in delta.get("tool_calls") or ():
            self._tool_call(fragment)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.pieces.append(content)
            return content
        return None

    def _tool_call(self, fragment: object) -> None:
        if not isinstance(fragment, dict) or not isinstance(fragment.get("index", 0), int):
            return
        entry = self.calls.setdefault(
            fragment.get("index", 0),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        function = fragment.get("function") or {}
        if isinstance(fragment.get("id"), str) and fragment["id"]:
            entry["id"] = fragment["id"]
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and function["name"]:
                entry["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                entry["function"]["arguments"] += function["arguments"]

    def result(self, client: OpenGradientClient, response: httpx.Response) -> InferenceResult:
        """The verified result, or ``StreamUnverified`` saying why not."""
        text = self.text
        if self.problem is None and self.final is None:
            self.problem = "the stream ended without the final frame carrying the enclave's proof"
        if self.problem is not None:
            raise StreamUnverified(f"{self.call.path}: {self.problem}", text=text)
        assert self.final is not None
        choices = self.final.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        if not isinstance(finish, str):
            raise StreamUnverified(
                f"{self.call.path}: the final frame has no finish_reason", text=text
            )
        calls: tuple[Mapping[str, Any], ...] = ()
        output = text
        if finish == "tool_calls":
            if text:
                # the enclave signs only the tool calls of such an answer: text beside them is
                # the relay's, never the model's as far as the proof can tell
                raise StreamUnverified(
                    f"{self.call.path}: text streamed beside tool calls, which the proof does "
                    "not cover",
                    text=text,
                )
            try:
                calls = checked_tool_calls([self.calls[i] for i in sorted(self.calls)])
            except TypeError as exc:
                raise StreamUnverified(f"{self.call.path}: {exc}", text=text) from None
            output = tool_calls_text(calls)
        try:
            return client._verified(self.call, response, self.final, output, finish, calls)
        except ProofError as exc:
            raise StreamUnverified(f"{self.call.path}: {exc.message}", text=text) from None


def _opened(call: _Call, response: httpx.Response) -> None:
    """Refuse an answer that is not a stream (its body has been read)."""
    if not response.is_success:
        raise refused(call.path, response)
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise ExecutionError(f"OpenGradient answered {call.path} with {kind[:80]!r}, not a stream")


class _Stream:
    """What both stream kinds show: the text so far, and the result once verified."""

    def __init__(self, client: OpenGradientClient, call: _Call) -> None:
        self._client = client
        self._call = call
        self._assembler = _Assembler(call)
        self._context: Any = None
        self._response: httpx.Response | None = None
        self._result: InferenceResult | None = None
        self._reading = False

    @property
    def text(self) -> str:
        """The text streamed so far (unverified unless ``verified``)."""
        return self._assembler.text

    @property
    def verified(self) -> bool:
        """Whether the stream ended with a final frame whose proof verified over all its text
        (always ``False`` for a client without a TEE key)."""
        return self._result is not None and self._result.proof is not None

    @property
    def result(self) -> InferenceResult:
        """The checked result once the stream has ended (iterate it first)."""
        if self._result is None:
            raise ExecutionError("the stream has not ended yet (or ended unverified)")
        return self._result

    def _start(self) -> httpx.Response:
        """The open response, once: a stream is read a single time."""
        if self._response is None:
            raise ExecutionError("open the stream first: with og.stream_chat(...) as stream")
        if self._reading:
            raise ExecutionError("this stream was already read; its text is in .text")
        self._reading = True
        return self._response


class ChatStream(_Stream):
    """A streamed chat answer (``OpenGradientClient.stream_chat``)."""

    def __enter__(self) -> ChatStream:
        http = self._client._client()

        def open_stream(call: _Call) -> httpx.Response:
            context = http.stream("POST", call.url, json=call.body)
            response = context.__enter__()
            self._context = context
            return response

        response = self._client._send(self._call, open_stream)
        self._response = response
        if not response.is_success or not _is_stream(response):
            response.read()
            self.__exit__(None, None, None)
            _opened(self._call, response)
        return self

    def __iter__(self) -> Iterator[str]:
        response = self._start()
        try:
            for line in response.iter_lines():
                piece = self._assembler.feed(line)
                if piece:
                    yield piece
                if self._assembler.done:
                    break
        except httpx.TransportError as exc:
            self._assembler.problem = f"the stream broke off ({type(exc).__name__})"
        self._result = self._assembler.result(self._client, response)

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


class AsyncChatStream(_Stream):
    """The async twin of ``ChatStream`` (``OpenGradientClient.astream_chat``)."""

    async def __aenter__(self) -> AsyncChatStream:
        http = self._client._async_client()

        async def open_stream(call: _Call) -> httpx.Response:
            context = http.stream("POST", call.url, json=call.body)
            response = await context.__aenter__()
            self._context = context
            return response

        response = await self._client._asend(self._call, open_stream)
        self._response = response
        if not response.is_success or not _is_stream(response):
            await response.aread()
            await self.__aexit__(None, None, None)
            _opened(self._call, response)
        return self

    async def __aiter__(self) -> AsyncIterator[str]:
        response = self._start()
        try:
            async for line in response.aiter_lines():
                piece = self._assembler.feed(line)
                if piece:
                    yield piece
                if self._assembler.done:
                    break
        except httpx.TransportError as exc:
            self._assembler.problem = f"the stream broke off ({type(exc).__name__})"
        self._result = self._assembler.result(self._client, response)

    async def __aexit__(self, *exc: object) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.__aexit__(None, None, None)


def _is_stream(response: httpx.Response) -> bool:
    return str(response.headers.get("content-type", "")).startswith("text/event-stream")
