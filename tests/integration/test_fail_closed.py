"""No signature is ever produced unless a verified quorum attestation binds the exact intent.

Real processes: the gateway and three operators run as subprocesses of the reference network;
a tampering proxy (real HTTP on loopback) plays the compromised or broken gateway.
"""

from __future__ import annotations

import time

import pytest

from agentguard import (
    AttestationExpired,
    DuplicateSignature,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    Guard,
    InsufficientQuorum,
    NewtonGateway,
    PolicyDenied,
    QuorumNotReached,
    Signer,
    TransactionIntent,
    UnknownOperator,
    VerificationError,
    Verifier,
)
from agentguard.network.launcher import ReferenceNetwork

from .conftest import (
    AGENT_KEY,
    CAP,
    POLICY_CLIENT,
    SHORT_LIVED_CLIENT,
    STRANGER,
    transfer,
)


def guarded_sign(guard: Guard, signer: Signer, intent: TransactionIntent) -> bytes:
    """The whole path in miniature: authorize → verify → sign."""
    verified = guard.authorize(intent)
    return signer.sign_transaction(
        verified, nonce=0, gas=100_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=10**6
    ).raw


def make_guard(network: ReferenceNetwork, url: str, **options) -> Guard:
    return Guard.connect(
        url,
        policy_client=POLICY_CLIENT,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[POLICY_CLIENT],
        **{"attempts": 2, "deadline": 15.0, "task_timeout": 5, **options},
    )


def test_allowed_intent_is_signed_once(network, signer, signing_spy):
    with make_guard(network, network.url) as guard:
        raw = guarded_sign(guard, signer, transfer(signer))
    assert raw and signing_spy.calls == ["sign_transaction"]


def test_deny_is_readable_and_nothing_is_signed(network, signer, signing_spy):
    with make_guard(network, network.url) as guard:
        with pytest.raises(PolicyDenied) as over_cap:
            guarded_sign(guard, signer, transfer(signer, amount=CAP + 1))
        with pytest.raises(PolicyDenied) as stranger:
            guarded_sign(guard, signer, transfer(signer, recipient=STRANGER))
    assert str(CAP) in str(over_cap.value)
    assert STRANGER.lower() in str(stranger.value).lower()
    assert signing_spy.calls == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("status-502", GatewayUnavailable),
        ("garbage", GatewayProtocolError),
        ("truncated", GatewayProtocolError),
        # the network honestly signs the intent the proxy substituted, under the task id that
        # intent derives: the client refuses it as not the task asked for before its Verifier
        # would (IntentMismatch, still met in tests/redteam/test_s9_client_attestation.py)
        ("other-intent", GatewayProtocolError),
        # the policy client is registered (owner-signed) for chain 8453 only: the network
        # refuses a task on another chain before any operator signs
        ("other-chain", GatewayRPCError),
        ("other-chain-forged", GatewayRPCError),
        ("unknown-keys", UnknownOperator),
        ("duplicate-signature", DuplicateSignature),
        ("one-signature", InsufficientQuorum),
        ("no-signatures", InsufficientQuorum),
    ],
)
def test_tampered_answers_never_lead_to_a_signature(
    network, proxy, signer, signing_spy, mode, error
):
    proxy.mode = mode
    try:
        with make_guard(network, proxy.url) as guard, pytest.raises(error):
            guarded_sign(guard, signer, transfer(signer))
    finally:
        proxy.mode = "pass"
    assert signing_spy.calls == []


def test_a_deny_flipped_to_allow_by_the_gateway_is_caught(network, proxy, signer, signing_spy):
    proxy.mode = "flip-deny-to-allow"
    try:
        with make_guard(network, proxy.url) as guard, pytest.raises(UnknownOperator):
            guarded_sign(guard, signer, transfer(signer, amount=CAP + 1))
    finally:
        proxy.mode = "pass"
    assert signing_spy.calls == []


def test_gateway_timeout_fails_closed(network, proxy, signer, signing_spy):
    proxy.mode = "hang"
    try:
        guard = make_guard(network, proxy.url, task_timeout=1, attempts=1)
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable):
            guarded_sign(guard, signer, transfer(signer))
        assert time.monotonic() - started < 15
    finally:
        proxy.mode = "pass"
    assert signing_spy.calls == []


def test_replayed_answer_is_refused(network, proxy, signer, signing_spy):
    """A genuine answer to an earlier request, replayed for the same intent: its task id
    derives from the earlier request's id, so the client refuses it as not the task asked
    for before the replay guard is reached (which still stops what a task id cannot: a
    replay of the same attestation, tests/redteam/test_redteam_pipeline_core.py)."""
    guard = make_guard(network, proxy.url)
    proxy.mode = "record"
    guarded_sign(guard, signer, transfer(signer))
    proxy.mode = "replay"
    try:
        with pytest.raises(GatewayProtocolError, match="not the one asked for"):
            guarded_sign(guard, signer, transfer(signer))
    finally:
        proxy.mode = "pass"
    assert signing_spy.calls == ["sign_transaction"]  # only the first, genuine one


def test_expired_attestation_is_refused(network, signer, signing_spy):
    intent = transfer(signer)
    gateway = NewtonGateway(network.url, policy_client=SHORT_LIVED_CLIENT, api_key=network.api_key)
    attestation = gateway.authorize(intent)
    assert attestation.decision == "allow"
    time.sleep(max(0.0, attestation.expires_at - time.time()) + 0.05)
    verifier = Verifier(network.operator_addresses, policy_client=SHORT_LIVED_CLIENT)
    with pytest.raises(AttestationExpired):
        verifier.verify(attestation, intent)
    assert signing_spy.calls == []


def test_gateway_down_fails_closed(network, signer, signing_spy):
    guard = make_guard(network, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(GatewayUnavailable):
        guarded_sign(guard, signer, transfer(signer))
    assert signing_spy.calls == []


def test_one_operator_down_still_succeeds_two_down_is_denied(network, signer, signing_spy):
    with make_guard(network, network.url) as guard:
        network.stop_operator(0)
        try:
            guarded_sign(guard, signer, transfer(signer))
            assert signing_spy.calls == ["sign_transaction"]
            network.stop_operator(1)
            try:
                with pytest.raises(QuorumNotReached) as info:
                    guarded_sign(guard, signer, transfer(signer))
            finally:
                network.start_operator(1)
        finally:
            network.start_operator(0)
    assert "quorum" in str(info.value).lower()
    assert len(info.value.operator_errors) == 2
    assert signing_spy.calls == ["sign_transaction"]


def test_verified_attestation_for_one_intent_cannot_sign_another(network, signer, signing_spy):
    with make_guard(network, network.url) as guard:
        verified = guard.authorize(transfer(signer))
    other_signer = Signer.from_key("0x" + "b2" * 32)
    with pytest.raises(VerificationError):
        other_signer.sign_transaction(
            verified, nonce=0, gas=1, max_fee_per_gas=1, max_priority_fee_per_gas=1
        )
    assert signing_spy.calls == []


def test_secrets_never_reach_logs_or_errors(network, proxy, signer, capfd, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    messages = []
    for mode in ("garbage", "unknown-keys", "pass"):
        proxy.mode = mode
        try:
            guarded_sign(make_guard(network, proxy.url), signer, transfer(signer, amount=CAP + 1))
        except Exception as exc:
            messages.append(str(exc) + repr(exc))
    proxy.mode = "pass"
    out, err = capfd.readouterr()
    everything = "\n".join([*messages, out, err, caplog.text, repr(signer), repr(network)])
    assert AGENT_KEY[2:] not in everything
    assert network.api_key not in everything
    assert network.admin_key not in everything
