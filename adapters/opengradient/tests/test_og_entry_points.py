"""The OpenGradient adapter's paths to a signature go through agentguard's one pipeline: the
Permit2 approval (a wallet call) and the paid inference calls (``X402Auth``), sync and async.
See ``tests/integration/test_entry_points.py`` in the repository for the full list."""

# ruff: noqa: F811 - pytest fixtures imported from test_og_inference are parameters here

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval
from conftest import Chain
from test_og_inference import (  # noqa: F401 - fixtures
    APPROVAL,
    MODEL,
    SESSION_CAP,
    Server,
    chain,
    make_auth,
    network,
    pem,
    policies,
    server,
    wallet,
)

from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.integration.pipeline_trace import PipelineTrace

TYPED = frozenset({"sign_typed_data"})  # the server's facilitator signs settlement txs


def test_permit2_approval_then_sync_and_async_inference(
    chain: Chain,
    network: ReferenceNetwork,
    policies: None,
    server: Server,
) -> None:
    with PipelineTrace() as trace:
        approval = ensure_permit2_approval(
            wallet(chain, network), chain.opg.address, SESSION_CAP, APPROVAL, web3=chain.w3
        )
    assert approval.receipt is not None
    trace.assert_signed_by_pipeline(1)

    for call in ("chat", "completion"):
        auth = make_auth(network, chain, Ledger())
        with PipelineTrace(TYPED) as trace:
            with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
                for _ in range(2):  # the second call rides the same upto session
                    result: Any = (
                        og.chat(MODEL, [{"role": "user", "content": "hi"}])
                        if call == "chat"
                        else og.completion(MODEL, "one two")
                    )
                    assert result.proof is not None
            auth.close()
        trace.assert_signed_by_pipeline(1)


async def test_async_inference(
    chain: Chain,
    network: ReferenceNetwork,
    policies: None,
    server: Server,
) -> None:
    ensure_permit2_approval(
        wallet(chain, network), chain.opg.address, SESSION_CAP, APPROVAL, web3=chain.w3
    )
    auth = make_auth(network, chain, Ledger())
    with PipelineTrace(TYPED) as trace:
        async with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            async with og.astream_chat(MODEL, [{"role": "user", "content": "hi"}]) as stream:
                assert [piece async for piece in stream] and stream.verified
            await og.achat(MODEL, [{"role": "user", "content": "hi"}])  # the same session
            await og.acompletion(MODEL, "one two")
        await auth.aclose()
    trace.assert_signed_by_pipeline(2)  # one upto session per endpoint


def test_streamed_inference(
    chain: Chain,
    network: ReferenceNetwork,
    policies: None,
    server: Server,
) -> None:
    ensure_permit2_approval(
        wallet(chain, network), chain.opg.address, SESSION_CAP, APPROVAL, web3=chain.w3
    )
    auth = make_auth(network, chain, Ledger())
    with PipelineTrace(TYPED) as trace:
        with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            for _ in range(2):  # the second stream rides the same upto session
                with og.stream_chat(MODEL, [{"role": "user", "content": "hi"}]) as stream:
                    assert list(stream) and stream.verified
        auth.close()
    trace.assert_signed_by_pipeline(1)
