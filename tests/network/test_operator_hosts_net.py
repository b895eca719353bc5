"""Operator hosts in real processes, where a user meets them (``ReferenceNetwork(hosts=...)``):
a host with every key serves a 2-of-3 quorum the client's verifier accepts, a mixed network
(a host with 2 keys and a separate operator), and the gateway refusing a hostile host."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import NewtonGateway, Verifier
from agentguard._exceptions import ConfigurationError
from agentguard.network.config import OperatorEntry
from agentguard.network.gateway._operators import operator_links
from agentguard.network.launcher import ReferenceNetwork

from .conftest import NETCHECK, RPC, decision, fresh_agent, fresh_client, params, transfer


@pytest.fixture(scope="module")
def hosted() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, hosts=1) as net:
        yield net


@pytest.fixture(scope="module")
def hosted_client(hosted: ReferenceNetwork) -> str:
    client = fresh_client()
    hosted.register_policy_client(client, NETCHECK, params())
    return client


def signers(result: dict[str, Any]) -> set[str]:
    return {s["operator"].lower() for s in result["attestation"]["signatures"]}


def test_one_host_with_three_keys_serves_a_two_of_three_quorum(
    hosted: ReferenceNetwork, hosted_client: str
) -> None:
    assert len({op.process.pid for op in hosted.operators if op.process}) == 1
    assert len({op.url for op in hosted.operators}) == 1
    health = httpx.get(f"http://127.0.0.1:{hosted.operators[0].port}/health").json()
    assert sorted(health["operators"]) == sorted(hosted.operator_addresses)
    verifier = Verifier(hosted.operator_addresses, policy_client=hosted_client)
    seen: set[str] = set()
    with NewtonGateway(hosted.url, policy_client=hosted_client, api_key=hosted.api_key) as gw:
        for amount in (1, 2, 3):
            intent = transfer(fresh_agent(), amount=amount)
            attestation = gw.authorize(intent)
            assert attestation.decision == "allow"
            assert len(attestation.signatures) == 2
            verifier.verify(attestation, intent)
            seen |= {s.operator.lower() for s in attestation.signatures}
    assert seen == {a.lower() for a in hosted.operator_addresses}  # rotation reaches every key


def test_a_mixed_network_a_host_of_two_keys_and_a_separate_operator() -> None:
    with ReferenceNetwork(operators=3, hosts=2) as net:
        host, alone = net.operators[:2], net.operators[2]
        assert host[0].url == host[1].url != alone.url
        assert host[0].process is host[1].process is not alone.process
        client = fresh_client()
        net.register_policy_client(client, NETCHECK, params())
        rpc = RPC(net, net.api_key)
        results = [rpc.create(client, transfer(fresh_agent())) for _ in range(3)]
        for result in results:
            assert decision(result) == "allow" and len(signers(result)) == 2
        assert set().union(*map(signers, results)) == {a.lower() for a in net.operator_addresses}
        net.stop_operator(1)  # stops the host: both of its keys
        assert not host[0].running and not host[1].running and alone.running
        down = rpc.create(client, transfer(fresh_agent()))
        assert down["status"] == "failed" and down["error"].startswith("quorum_not_reached")
        failed = {e["operator_address"]: e["error_type"] for e in down["operator_errors"]}
        assert failed == {host[0].address: "unreachable", host[1].address: "unreachable"}
        net.start_operator(0)
        assert host[1].running
        assert decision(rpc.create(client, transfer(fresh_agent()))) == "allow"


@contextmanager
def hostile_host(net: ReferenceNetwork, mode: str) -> Iterator[None]:
    """Replace the network's host by one that answers as ``mode`` says, with the real keys."""
    op = net.operators[0]
    net.stop_operator(0)
    keys = [arg for key in net.operators for arg in ("--key-file", str(key.key_file))]
    process = subprocess.Popen(  # as a module from the checkout: it imports this checkout
        [
            sys.executable,
            "-m",
            "tests.network.hostile_host",
            "--port",
            str(op.port),
            "--token-file",
            str(op.token_file),
            "--mode",
            mode,
            *keys,
        ],
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{op.port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "host did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)
        net.start_operator(0)


@pytest.mark.parametrize(
    ("mode", "error_type", "message"),
    [
        ("extra", "invalid_response", "not asked for, or twice for one"),
        ("duplicate", "invalid_response", "not asked for, or twice for one"),
        ("wrong_signer", "bad_signature", "not to the operator's registered key"),
        ("wrong_task", "bad_signature", "not to the operator's registered key"),
    ],
)
def test_a_hostile_host_gets_nothing_counted(
    hosted: ReferenceNetwork, hosted_client: str, mode: str, error_type: str, message: str
) -> None:
    rpc = RPC(hosted, hosted.api_key)
    with hostile_host(hosted, mode):
        result = rpc.create(hosted_client, transfer(fresh_agent()))
    assert result["status"] == "failed" and result["error"].startswith("quorum_not_reached")
    assert result["attestation"] is None
    errors = result["operator_errors"]
    assert {e["operator_address"] for e in errors} == set(hosted.operator_addresses)
    assert {e["error_type"] for e in errors} == {error_type}
    assert all(message in e["message"] for e in errors)
    # the real host is back: the same client is served again
    assert decision(rpc.create(hosted_client, transfer(fresh_agent()))) == "allow"


def test_a_signature_copied_under_another_key_counts_for_nobody_but_its_signer(
    hosted: ReferenceNetwork, hosted_client: str
) -> None:
    rpc = RPC(hosted, hosted.api_key)
    with hostile_host(hosted, "copied"):
        result = rpc.create(hosted_client, transfer(fresh_agent()))
    # the first key asked signed for real; the second's copy is refused; the third, asked
    # alone after that failure, answers honestly: two distinct signers make the quorum
    assert decision(result) == "allow"
    [copied] = result["operator_errors"]
    assert copied["error_type"] == "bad_signature"
    assert copied["operator_address"].lower() not in signers(result)
    assert len(signers(result)) == 2
    assert len({s["signature"] for s in result["attestation"]["signatures"]}) == 2


def test_operators_at_one_url_must_share_its_token(tmp_path: Path) -> None:
    for name, token in (("a", "one" * 8), ("b", "two" * 8)):
        (tmp_path / name).write_text(token + "\n")
    url = "http://127.0.0.1:9/rpc"
    same = [
        OperatorEntry("0x" + "11" * 20, url, str(tmp_path / "a")),
        OperatorEntry("0x" + "22" * 20, url, str(tmp_path / "a")),
    ]
    links = operator_links(same)
    assert all(link.hosted for link in links) and links[0].http is links[1].http
    other = [same[0], OperatorEntry("0x" + "22" * 20, url, str(tmp_path / "b"))]
    with pytest.raises(ConfigurationError, match="share the URL"):
        operator_links(other)
    for link in links:
        link.http.close()
