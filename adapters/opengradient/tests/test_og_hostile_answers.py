"""A hostile inference server's unreadable answer is an agentguard error, never a crash."""

from __future__ import annotations

import httpx
import pytest
from agentguard_opengradient._client import OpenGradientClient, _Call

from agentguard import ExecutionError

CALL = _Call("/v1/chat/completions", {"model": "m"}, {}, "chat")


def _result(body: bytes) -> object:
    client = OpenGradientClient.__new__(OpenGradientClient)
    client._key = None  # no TEE key: only the shape of the answer is read
    response = httpx.Response(200, content=body, request=httpx.Request("POST", "http://127.0.0.1"))
    return client._result(CALL, response)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,  # deeper than any parser's recursion limit
        b"not json",
        b"[]",
        b'{"choices": "x"}',
        b'{"choices": [{"message": 7}]}',
    ],
    ids=["deep", "text", "list", "choices-str", "message-int"],
)
def test_an_unreadable_answer_is_an_execution_error(body: bytes) -> None:
    with pytest.raises(ExecutionError, match="not readable"):
        _result(body)


def test_usage_of_the_wrong_type_is_ignored() -> None:
    body = b'{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": [1]}'
    result = _result(body)
    assert result.usage == {}  # type: ignore[attr-defined]
