"""An attack on the reference network through an offchain call's arguments: the documented way
for a policy to read them is ``json.unmarshal``, which runs inside every operator (and the
gateway, for shadow mode's simulate)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode

from agentguard import (
    OFFCHAIN_TARGET,
    AgentGuardError,
    Guard,
    IntentError,
    Signer,
    TransactionIntent,
    call_intent,
)
from agentguard._eip712 import keccak
from agentguard.actions import MAX_ARGUMENT_VALUES
from agentguard.network.launcher import ReferenceNetwork
from tests.wallet.conftest import AGENT

from .conftest import MAIL_DOMAIN

PARAMS = {"domain": "example.com"}


@pytest.fixture
def own_network() -> Iterator[ReferenceNetwork]:
    """A network of its own: before the fix this test killed every process it evaluated in."""
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def _guard(net: ReferenceNetwork) -> Guard:
    key = "0x" + "a7" * 32
    client = Signer.from_key(key).address
    pid = net.register_policy_client(client, MAIL_DOMAIN, PARAMS, owner_key=key)
    return Guard.connect(
        net.url,
        policy_client=client,
        operators=net.operator_addresses,
        api_key=net.api_key,
        policy_id=pid,
    )


def _send_email(arguments: str) -> TransactionIntent:
    """What a hostile agent host can build by hand (the SDK's own call_intent nests at most
    32 levels): ``send_email(string)`` to OFFCHAIN_TARGET with any string."""
    signature = "send_email(string)"
    return TransactionIntent(
        from_=AGENT.address,
        to=OFFCHAIN_TARGET,
        value=0,
        data=keccak(signature.encode())[:4] + abi_encode(["string"], [arguments]),
        chain_id=8453,
        function_signature=signature,
    )


def test_deeply_nested_arguments_do_not_crash_the_operators(own_network: ReferenceNetwork) -> None:
    """A hostile agent host sends ``send_email(string)`` whose argument is 60 KB of JSON nested
    30,000 levels deep to a client whose policy does ``json.unmarshal`` on it (the pattern the
    docs show). Before the fix rego-cpp overflowed its stack: the operators failed the task and
    shadow mode's ``simulate`` killed the gateway process (SIGSEGV), so the network was down
    for every client and the next honest call got ConnectError. Now the engine refuses the
    document, the call is refused, and the network keeps answering."""
    guard = _guard(own_network)
    deep = '{"to":' + "[" * 30_000 + "]" * 30_000 + "}"
    with pytest.raises(AgentGuardError):
        guard.authorize(_send_email(deep))
    with pytest.raises(AgentGuardError):
        gateway: Any = guard.authorizer
        gateway.simulate(_send_email(deep))  # the gateway's own engine
    verified = guard.authorize(_send_email('{"to":"ann@example.com"}'))
    assert verified.attestation.decision == "allow"


def test_a_huge_flat_array_cannot_stall_the_operators(own_network: ReferenceNetwork) -> None:
    """rego-cpp's ``json.unmarshal`` is quadratic in the number of values (8,000 took 1 s,
    16,000 took 4.6 s). Before the fix ``run_call("send_email", {"to": [0] * 30_000})`` (60 KB,
    within MAX_ARGUMENTS_BYTES: a prompt-injected model can ask for it) held every operator's
    engine lock for about 17 s per call, and a hand-built intent had no bound at all, so a
    few such calls kept the network from answering anyone. Now the SDK refuses more than
    MAX_ARGUMENT_VALUES values before asking, and the engine refuses an input string with
    more than 4,096 JSON values, so a hand-built one is refused too."""
    guard = _guard(own_network)
    with pytest.raises(IntentError, match="values"):
        call_intent(AGENT.address, "send_email", {"to": [0] * 30_000}, chain_id=8453)
    at_most = {"to": [0] * (MAX_ARGUMENT_VALUES - 2)}  # the object and the list count too
    call_intent(AGENT.address, "send_email", at_most, chain_id=8453)
    flat = '{"to":[' + ",".join(["0"] * 30_000) + "]}"
    with pytest.raises(AgentGuardError, match="4096"):
        guard.authorize(_send_email(flat))
    commas_in_text = '{"to":"ann@example.com","body":"' + "," * 10_000 + '"}'
    assert guard.authorize(_send_email(commas_in_text)).attestation.decision == "allow"
