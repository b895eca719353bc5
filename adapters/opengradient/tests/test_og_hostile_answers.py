"""A hostile inference server's unreadable answer is an agentguard error, never a crash."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from agentguard_opengradient import _stream
from agentguard_opengradient._client import OpenGradientClient, _Call, inference_cost

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


@pytest.mark.parametrize(
    "block",
    [
        None,
        "12",
        {"cost_opg": "-1", "cost_usd": "0", "opg_price_usd": "0.1"},
        {"cost_opg": "1e30", "cost_usd": "0", "opg_price_usd": "0.1"},
        {"cost_opg": "1" * 41, "cost_usd": "0", "opg_price_usd": "0.1"},
        {"cost_opg": True, "cost_usd": "0", "opg_price_usd": "0.1"},
        {"cost_opg": 1.5, "cost_usd": "0", "opg_price_usd": "0.1"},
        {"cost_opg": "١٢", "cost_usd": "0", "opg_price_usd": "0.1"},  # non-ASCII digits
        {"cost_opg": "12", "cost_usd": "NaN", "opg_price_usd": "0.1"},
        {"cost_opg": "12", "cost_usd": "-0.1", "opg_price_usd": "0.1"},
        {"cost_opg": "12", "cost_usd": "x", "opg_price_usd": "0.1"},
        {"cost_opg": "12", "opg_price_usd": "0.1"},
    ],
)
def test_a_malformed_cost_block_is_no_report(block: object) -> None:
    """The gateway's cost block is unsigned: a value it would never write is dropped (no
    reported charge), never a crash and never counted."""
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    result = _result(json.dumps({**body, "opengradient": block}).encode())
    assert result.cost is None  # type: ignore[attr-defined]
    assert inference_cost(block) is None


def test_a_well_formed_cost_block_is_read_exactly() -> None:
    block = {"cost_opg": "123456789012345678901", "cost_usd": "12.5", "opg_price_usd": "0.1"}
    cost = inference_cost(block)
    assert cost is not None and cost.cost_opg == 123456789012345678901
    assert (cost.cost_usd, cost.opg_price_usd) == (Decimal("12.5"), Decimal("0.1"))


def test_an_endless_stream_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server streaming forever: past the bound the stream ends unverified."""
    monkeypatch.setattr(_stream, "MAX_STREAM_BYTES", 1000)
    assembler = _stream._Assembler(CALL)
    frame = 'data: {"choices": [{"delta": {"content": "x"}, "index": 0}]}'
    fed = 0
    while not assembler.done:
        assembler.feed(frame)
        fed += 1
    assert fed < 30 and assembler.problem is not None and "cut off" in assembler.problem
