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
    Signer,
    TransactionIntent,
)
from agentguard._eip712 import keccak
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
