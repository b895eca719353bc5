"""Streamed (SSE) chat as OpenGradient's gateway sends it: text deltas, then the final frame
carrying the proof, usage and cost. The proof is checked over all the streamed text; a stream
whose final frame is missing, altered, followed by more text, or replaced by an error frame
ends in ``StreamUnverified`` after its text, and the payment stays counted. Today's adapter
had no streaming (``stream=True`` was refused)."""

# ruff: noqa: F811 - pytest fixtures imported from test_og_inference are parameters here

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval
from conftest import AGENT, Chain
from test_og_inference import (  # noqa: F401 - fixtures
    APPROVAL,
    MODEL,
    SESSION_CAP,
    Server,
    chain,
    charge,
    make_auth,
    network,
    pem,
    policies,
    server,
    wallet,
)

from agentguard import ConfigurationError, ExecutionError, StreamUnverified
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy

HELLO = [{"role": "user", "content": "hello there streaming friend"}]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture
def approved(chain: Chain, network: ReferenceNetwork, policies: None) -> None:
    ensure_permit2_approval(
        wallet(chain, network), chain.opg.address, APPROVAL, APPROVAL, web3=chain.w3
    )


class Rewriting(httpx.BaseTransport):
    """A relay on the wire that rewrites each event stream's frames (a hostile gateway)."""

    def __init__(self, rewrite: Callable[[list[str]], list[str]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        if not answer.headers.get("content-type", "").startswith("text/event-stream"):
            return answer
        frames = [f for f in answer.read().decode().split("\n\n") if f]
        body = "".join(f + "\n\n" for f in self.rewrite(frames)).encode()
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() != "content-length"]
        return httpx.Response(answer.status_code, headers=headers, content=body)


def data(frame: str) -> dict[str, object]:
    return json.loads(frame.removeprefix("data: "))  # type: ignore[no-any-return]


def test_a_streamed_chat_is_verified_on_its_final_frame(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            with og.stream_chat(MODEL, HELLO, max_tokens=20) as stream:
                pieces = list(stream)
            assert len(pieces) > 1 and stream.verified
            result = stream.result
            assert "".join(pieces) == result.text == "You said: hello there streaming friend"
            assert result.finish_reason == "stop" and result.proof is not None
            assert result.usage["completion_tokens"] == 6
            assert result.cost is not None
            assert result.cost.cost_opg == charge(HELLO[0]["content"], result.text)
            assert (
                result.receipt is not None
                and result.receipt.reported_charge == result.cost.cost_opg
            )
            with og.stream_chat(MODEL, HELLO) as again:  # rides the same session
                list(again)
            assert again.result.receipt and again.result.receipt.session == result.receipt.session
        assert signing_spy.calls == ["sign_typed_data"]
        auth.close()


async def test_an_async_stream_with_a_tool_call_is_verified(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        async with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            ask = [{"role": "user", "content": 'lookup {"city": "Oslo"}'}]
            async with og.astream_chat(MODEL, ask, tools=TOOLS) as stream:
                pieces = [piece async for piece in stream]
        await auth.aclose()
    result = stream.result
    assert pieces == [] and stream.verified and result.finish_reason == "tool_calls"
    ((call,),) = [result.tool_calls]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("rewrite", "why"),
    [
        (lambda frames: frames[:-2] + frames[-1:], "without the final frame"),
        (lambda frames: frames[:-2], "without the final frame"),
        (
            lambda frames: [frames[0].replace("You", "Yuo"), *frames[1:]],
            "not the output the enclave signed",
        ),
        (lambda frames: [*frames[:-1], frames[1], frames[-1]], "after its final"),
        (
            lambda frames: [*frames[:-2], 'data: {"error": "boom", "exception_type": "X"}'],
            "with an error: boom",
        ),
    ],
    ids=["final-dropped", "cut-off", "text-altered", "text-after-final", "error-frame"],
)
def test_an_unproven_stream_ends_in_stream_unverified_and_stays_counted(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    server: Server,
    rewrite: Callable[[list[str]], list[str]],
    why: str,
) -> None:
    """The text streams, then the end says it is unproven; the signed maximum stays counted."""
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        og = OpenGradientClient(
            server.url, auth, tee_signing_key=pem(server.key), transport=Rewriting(rewrite)
        )
        with og, og.stream_chat(MODEL, HELLO) as stream:
            pieces: list[str] = []
            with pytest.raises(StreamUnverified, match=why) as info:
                for piece in stream:
                    pieces.append(piece)
        assert pieces and info.value.text == stream.text == "".join(pieces)
        assert not stream.verified
        with pytest.raises(ExecutionError, match="not ended"):
            _ = stream.result
        assert ledger.usage(AGENT.address, 3600).spent == {chain.opg.address.lower(): SESSION_CAP}
        auth.close()


def test_stream_options_are_checked_before_anything_is_sent(
    chain: Chain, network: ReferenceNetwork
) -> None:
    with Ledger() as ledger:
        og = OpenGradientClient("http://127.0.0.1:1", make_auth(network, chain, ledger))
        with pytest.raises(ConfigurationError, match="stream_chat"):
            og.chat(MODEL, HELLO, stream=True)
        with pytest.raises(ConfigurationError, match="stream_chat"):
            og.stream_chat(MODEL, HELLO, stream=False)


def test_a_json_answer_to_a_stream_request_is_refused(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    def not_a_stream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        og = OpenGradientClient(server.url, auth, transport=httpx.MockTransport(not_a_stream))
        with og, pytest.raises(ExecutionError, match="not a stream"):
            og.stream_chat(MODEL, HELLO).__enter__()


def test_a_stream_is_read_once_and_only_inside_its_block(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            stream = og.stream_chat(MODEL, HELLO)
            with pytest.raises(ExecutionError, match="open the stream first"):
                list(stream)
            with stream:
                text = "".join(stream)
                with pytest.raises(ExecutionError, match="already read"):
                    list(stream)
            assert stream.verified and stream.text == text
        auth.close()
