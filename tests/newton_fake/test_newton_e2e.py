"""End to end against Newton's shapes: the fake Newton gateway answers with full task responses
that a real BN254 operator quorum certified (tests/newton/newton_quorum.py), ``Guard.connect``
with no operators verifies them with ``NewtonVerifier`` reading the operator table on anvil
(chain 8453), and an EOA transfer and an x402 payment go through the one pipeline.

Issue 9: "no signature in any mode unless the BLS aggregate verifies". Each bad certificate
below is what a lying gateway could send; before ``NewtonVerifier`` was wired in, an EOA
refused every Newton attestation (or, with ``NewtonBindingVerifier``, checked no signature),
so these tests also show the certificate is the only thing standing between the gateway and
the agent's key: each one would sign if its named check were dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from web3 import Web3

from agentguard import AsyncGuard, Guard, Signer
from agentguard._exceptions import (
    AttestationExpired,
    AttestationReplayed,
    InsufficientQuorum,
    PolicyDenied,
    VerificationError,
)
from agentguard.ledger import Ledger, Limits
from agentguard.newton import BN254Certificate, TaskResponse, Witness
from agentguard.newton._certificate import OperatorInfo
from agentguard.x402 import Allowances
from tests.integration.pipeline_trace import PipelineTrace
from tests.newton.conftest import Chain, chain, chain_session  # noqa: F401 (fixtures)
from tests.newton.newton_quorum import NewtonQuorum, make_operators
from tests.newton_fake.gateway import POLICY_ID, Answer, FakeNewton, fake_newton
from tests.unit.conftest import POLICY_CLIENT
from tests.x402.fakes import TOKEN, FakeServer

# anvil's second dev account: funded, so a verified transfer really lands
SIGNER = Signer.from_key("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
PAYEE = Web3.to_checksum_address("0x3333333333333333333333333333333333333333")
PAID = "http://shop.test/paid"
Certify = Callable[[dict[str, Any]], dict[str, Any]]


def _with_certificate(result: dict[str, Any], cert: BN254Certificate) -> dict[str, Any]:
    return {**result, "signature_data": "0x" + cert.encode().hex()}


def _digest(result: dict[str, Any]) -> bytes:
    return TaskResponse.parse(result["task_response"]).consensus_digest()


def below_quorum(q: NewtonQuorum) -> Certify:
    """One of three equal operators signs (33 %); the others are honest non-signers."""
    return lambda r: q.certify(r, signers=[0])


def wrong_message(q: NewtonQuorum) -> Certify:
    """All operators signed, but another task response: the one for a bigger payment."""

    def certify(result: dict[str, Any]) -> dict[str, Any]:
        other = dict(result["task_response"])
        other["intent"] = {**other["intent"], "value": hex(10**24)}
        return _with_certificate(result, q.certificate(_digest({"task_response": other})))

    return certify


def relabelled_message(q: NewtonQuorum) -> Certify:
    """``messageHash`` says this response, the signature is over another one."""

    def certify(result: dict[str, Any]) -> dict[str, Any]:
        honest = q.certificate(_digest(result))
        forged = q.certificate(b"\x99" * 32)
        return _with_certificate(result, dataclasses.replace(honest, signature=forged.signature))

    return certify


def other_reference_timestamp(q: NewtonQuorum) -> Certify:
    """Signed at one reference timestamp, presented at another (a newer table exists)."""

    def certify(result: dict[str, Any]) -> dict[str, Any]:
        newer = q.reference_timestamp + 1
        if newer not in q.tables:
            q.register(newer, q.operators)
        cert = q.certificate(_digest(result))
        return _with_certificate(result, dataclasses.replace(cert, reference_timestamp=newer))

    return certify


def forged_witness(q: NewtonQuorum) -> Certify:
    """One operator signs; the two non-signers' witnesses claim they weigh nothing, so nothing
    would be subtracted and the one signature would count as the whole stake."""

    def certify(result: dict[str, Any]) -> dict[str, Any]:
        cert = q.certificate(_digest(result), signers=[0])
        light = tuple(
            Witness(w.operator_index, w.proof, OperatorInfo(w.operator_info.pubkey, (0,)))
            for w in cert.non_signer_witnesses
        )
        return _with_certificate(result, dataclasses.replace(cert, non_signer_witnesses=light))

    return certify


BAD = {
    "below quorum": (below_quorum, Answer(), InsufficientQuorum),
    "wrong message": (wrong_message, Answer(), VerificationError),
    "relabelled message": (relabelled_message, Answer(), VerificationError),
    "other reference timestamp": (other_reference_timestamp, Answer(), VerificationError),
    "forged witness": (forged_witness, Answer(), VerificationError),
    # the task's threshold is the gateway's unsigned claim: 1 % would pass one signer of three
    "gateway 1% threshold": (below_quorum, Answer(threshold=1), InsufficientQuorum),
    # operators really signed, but a deny, or for a block already reached
    "signed deny": (lambda q: q.certify, Answer(decision="deny"), PolicyDenied),
    "expired at the block": (lambda q: q.certify, Answer(expire_after=0), AttestationExpired),
}


@pytest.fixture
def newton(chain: Chain) -> Iterator[FakeNewton]:  # noqa: F811
    with fake_newton(chain.quorum.certify, chain_block=lambda: chain.w3.eth.block_number) as fake:
        yield fake


def _connect(cls: type[Any], fake: FakeNewton, chain: Chain, ledger: Ledger) -> Any:  # noqa: F811
    return cls.connect(
        fake.url,
        policy_client=POLICY_CLIENT,
        policy_id=POLICY_ID,
        web3=chain.w3,  # no operators=: Newton, BLS verified against the table on anvil
        newton={"certificate_verifier": chain.quorum.table.address, "source_avs": chain.quorum.avs},
        signer=SIGNER,
        ledger=ledger,
        budget=Limits(),
    )


def _armed(
    case: str,
    cls: type[Any],
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> tuple[Any, Ledger, type[Exception]]:
    """A guard on a gateway that answers with the bad certificate ``case``."""
    make, answer, error = BAD[case]
    newton.certify, newton.default = make(chain.quorum), answer
    ledger = Ledger()
    return _connect(cls, newton, chain, ledger), ledger, error


def _nothing(trace: PipelineTrace, ledger: Ledger, w3: Web3) -> None:
    """No signature was made, no transaction sent, and the ledger holds nothing."""
    assert trace.signatures == 0 and _nonce(w3) == 0
    assert ledger.usage(SIGNER.address, 3600).count == 0


def _nonce(w3: Web3) -> int:
    return int(w3.eth.get_transaction_count(Web3.to_checksum_address(SIGNER.address)))


# -- the transfer: signed and landed only on a verified certificate -----------------------


def test_an_eoa_transfer_is_signed_and_lands_on_a_verified_certificate(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    ledger = Ledger()
    guard = _connect(Guard, newton, chain, ledger)
    connected = len(newton.requests)
    before = chain.w3.eth.get_balance(PAYEE)
    with PipelineTrace() as trace:
        receipt = guard.wallet().transfer(PAYEE, 10**15)
    trace.assert_signed_by_pipeline(1)
    assert chain.w3.eth.get_balance(PAYEE) - before == 10**15
    assert receipt is not None and _nonce(chain.w3) == 1
    assert ledger.usage(SIGNER.address, 3600).count == 1
    [task] = newton.calls("newt_createTask")
    assert task["params"]["intent"]["chain_id"] == hex(8453)
    _only_newton_calls(newton, connected)


def _only_newton_calls(newton: FakeNewton, since: int) -> None:
    """A whole transfer sends Newton's gateway only ``newt_*`` methods: before the fix the
    pipeline also sent ``agentguard_commitTask`` (the reference network's bookkeeping), which
    Newton's gateway does not know."""
    methods = [r.get("method") for r in newton.requests[since:]]
    assert methods and all(str(m).startswith("newt_") for m in methods), methods


async def test_an_async_eoa_transfer_is_signed_on_a_verified_certificate(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    guard = _connect(AsyncGuard, newton, chain, Ledger())
    connected = len(newton.requests)
    with PipelineTrace() as trace:
        await guard.wallet().transfer(PAYEE, 10**15)
    trace.assert_signed_by_pipeline(1)
    assert _nonce(chain.w3) == 1
    _only_newton_calls(newton, connected)


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_certificate_signs_and_holds_nothing_for_a_transfer(
    case: str,
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    guard, ledger, error = _armed(case, Guard, newton, chain)
    with PipelineTrace() as trace, pytest.raises(error):
        guard.wallet().transfer(PAYEE, 10**15)
    _nothing(trace, ledger, chain.w3)
    assert len(newton.calls("newt_createTask")) == 1  # the gateway was asked, and believed not


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_bad_certificate_signs_nothing_for_an_async_transfer(
    case: str,
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    guard, ledger, error = _armed(case, AsyncGuard, newton, chain)
    with PipelineTrace() as trace, pytest.raises(error):
        await guard.wallet().transfer(PAYEE, 10**15)
    _nothing(trace, ledger, chain.w3)


def test_an_uncertified_answer_signs_nothing(newton: FakeNewton, chain: Chain) -> None:  # noqa: F811
    """A gateway that answers allow with no certificate at all (Newton's shape otherwise)."""
    newton.certify = lambda result: result
    ledger = Ledger()
    with PipelineTrace() as trace, pytest.raises(VerificationError, match="signature_data"):
        _connect(Guard, newton, chain, ledger).wallet().transfer(PAYEE, 10**15)
    assert trace.signatures == 0 and ledger.usage(SIGNER.address, 3600).count == 0


def test_another_operator_set_of_the_same_avs_signs_nothing(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    """The task's ``quorumNumbers`` is not covered by the certificate. The gateway names
    operator set 1 of the same AVS (whose table lists keys it holds) instead of the set 0 the
    client asked for, and certifies with those keys. Before the verifier pinned the operator
    set the client asked for, this verified and the EOA signed."""
    q = chain.quorum
    rogue = NewtonQuorum(q.w3, q.table, make_operators((1,), b"rogue"), q.reference_timestamp,
                         operator_set_id=1, avs=q.avs)  # fmt: skip
    rogue.register(rogue.reference_timestamp, rogue.operators)
    newton.certify, newton.default = rogue.certify, Answer(quorum="0x01")
    ledger = Ledger()
    with PipelineTrace() as trace, pytest.raises(VerificationError, match="operator set"):
        _connect(Guard, newton, chain, ledger).wallet().transfer(PAYEE, 10**15)
    _nothing(trace, ledger, chain.w3)


def test_a_certificate_replayed_for_a_second_transfer_signs_once(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    """The gateway answers the second request with the first task (same id, same certificate):
    the intent is the same, the certificate valid, but a task authorizes one signature."""
    same = "0x" + "5a" * 32
    guard = _connect(Guard, newton, chain, Ledger())
    newton.answer(Answer(task_id=same), Answer(task_id=same))
    with PipelineTrace() as trace:
        guard.wallet().transfer(PAYEE, 10**15)
        with pytest.raises(AttestationReplayed):
            guard.wallet().transfer(PAYEE, 10**15)
    assert trace.signatures == 1 and _nonce(chain.w3) == 1
    assert [c["params"]["intent"] for c in newton.calls("newt_createTask")] == [
        newton.calls("newt_createTask")[0]["params"]["intent"]
    ] * 2


async def test_two_racing_transfers_on_one_certificate_sign_once(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    """Two transfers at once, both answered with the same (valid) task: one signature."""
    same = "0x" + "5b" * 32
    guard = _connect(AsyncGuard, newton, chain, Ledger())
    newton.answer(Answer(task_id=same), Answer(task_id=same))
    wallet = guard.wallet()
    with PipelineTrace() as trace:
        outcomes = await asyncio.gather(
            wallet.transfer(PAYEE, 10**15), wallet.transfer(PAYEE, 10**15), return_exceptions=True
        )
    assert sorted(type(o).__name__ for o in outcomes) == ["AttestationReplayed", "Receipt"]
    assert trace.signatures == 1 and _nonce(chain.w3) == 1


# -- the x402 payment ---------------------------------------------------------------------


def _x402(guard: Any, ledger: Ledger) -> Any:
    return guard.x402(signer=SIGNER, ledger=ledger, allowances=Allowances({TOKEN: 100_000}))


def test_an_x402_payment_is_signed_on_a_verified_certificate(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    server, ledger = FakeServer(), Ledger()
    auth = _x402(_connect(Guard, newton, chain, ledger), ledger)
    with PipelineTrace() as trace, auth.client(transport=server.transport()) as http:
        assert http.get(PAID).status_code == 200
    trace.assert_signed_by_pipeline(1)
    assert server.payers == [SIGNER.address]
    assert ledger.usage(SIGNER.address, 3600).spent[TOKEN.lower()] == 10_000


async def test_an_async_x402_payment_is_signed_on_a_verified_certificate(
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    server, ledger = FakeServer(), Ledger()
    auth = _x402(_connect(AsyncGuard, newton, chain, ledger), ledger)
    with PipelineTrace() as trace:
        async with auth.async_client(transport=server.async_transport()) as http:
            assert (await http.get(PAID)).status_code == 200
    trace.assert_signed_by_pipeline(1)


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_certificate_pays_nothing(case: str, newton: FakeNewton, chain: Chain) -> None:  # noqa: F811
    guard, ledger, error = _armed(case, Guard, newton, chain)
    server, auth = FakeServer(), _x402(guard, ledger)
    with (
        PipelineTrace() as trace,
        auth.client(transport=server.transport()) as http,
        pytest.raises(error),
    ):
        http.get(PAID)
    _nothing(trace, ledger, chain.w3)
    assert server.payments == []


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_bad_certificate_pays_nothing_async(
    case: str,
    newton: FakeNewton,
    chain: Chain,  # noqa: F811
) -> None:
    guard, ledger, error = _armed(case, AsyncGuard, newton, chain)
    server, auth = FakeServer(), _x402(guard, ledger)
    with PipelineTrace() as trace, pytest.raises(error):
        async with auth.async_client(transport=server.async_transport()) as http:
            await http.get(PAID)
    _nothing(trace, ledger, chain.w3)
    assert server.payments == []
