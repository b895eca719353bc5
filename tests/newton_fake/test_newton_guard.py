"""``Guard``, the pipeline and the ``Signer`` against the fake Newton gateway, with
``NewtonBindingVerifier`` (binding fields only, no BLS check): nothing is signed for an EOA,
Newton's block-number expiry reaches the ledger as a unix deadline, and the attacks a lying
gateway can try fail closed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from web3 import Web3

from agentguard import (
    AsyncGuard,
    AttestationExpired,
    AttestationReplayed,
    ConfigurationError,
    GatewayUnavailable,
    Guard,
    IntentMismatch,
    NewtonBindingVerifier,
    NewtonGateway,
    Signer,
    TransactionIntent,
)
from agentguard._defaults import Defaults
from agentguard._exceptions import OnchainCheckRequired, ReservationError
from agentguard._value import Spend
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Limits
from agentguard.newton import DEFAULT_THRESHOLD_FLOOR, NewtonVerifier
from agentguard.pipeline import Action, Landed, Prepared, Runner, Signed
from tests.newton_fake.gateway import POLICY_ID, REFERENCE_BLOCK, Answer, FakeNewton
from tests.unit.conftest import PAYEE, POLICY_CLIENT, TOKEN

SIGNER = Signer.from_key("0x" + "5e" * 32)
ETH = "0x" + "00" * 20


def transfer(amount: int = 1_000_000) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=SIGNER.address, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=8453
    )


def newton_guard(
    fake: FakeNewton, *, block: int | None = None, max_lifetime: int = 3600, **defaults: Any
) -> Guard:
    chain_block = REFERENCE_BLOCK + 1 if block is None else block
    verifier = NewtonBindingVerifier(
        policy_client=POLICY_CLIENT,
        block_number=lambda: chain_block,
        policy_id=POLICY_ID,
        max_lifetime=max_lifetime,
    )
    gateway = NewtonGateway(fake.url, policy_client=POLICY_CLIENT, policy_id=POLICY_ID)
    return Guard(gateway, verifier, Defaults(**defaults))


class VaultLikePort:
    """What a vault port does: its contract checks the attestation onchain, so nothing here
    signs with the agent's key; the agent pays the network fee (held in the budget)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        return Prepared(fee=Spend(asset=ETH, amount=10**12, recipient=None, kind="native"))

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        return Signed(reference=f"vault:{verified.task_id}", payload=None)

    def abandon(self, prepared: Prepared) -> None:
        pass

    def send(self, signed: Signed) -> Landed:
        self.sent.append(signed.reference)
        return Landed(signed.reference)

    def confirm(self, signed: Signed) -> Landed:
        raise AssertionError("send answered with an outcome")


def test_block_expiry_reaches_the_ledger_as_a_unix_deadline(newton: FakeNewton) -> None:
    """Before: ``VerifiedAttestation.expires_at`` was Newton's expiration block (40,000,100),
    which the ledger reads as a unix time in 1971: the fee hold was refused ("not in the
    future") and the bound hold was already expired, so no Newton-authorized action could run
    through the pipeline. Now it is the ticket's unix deadline for every scheme."""
    ledger, port = Ledger(), VaultLikePort()
    guard = newton_guard(newton)
    action = Action(agent=SIGNER.address, intent=transfer(), limits=Limits(), rail="transaction")
    before = time.time()
    settled = Runner(guard, ledger).run(action, port)
    assert port.sent and settled is not None
    assert ledger.usage(SIGNER.address, 3600).spent[TOKEN.lower()] == 1_000_000
    # the block number itself is not a deadline the ledger can hold to
    with pytest.raises(ReservationError, match="not in the future"):
        ledger.reserve(
            SIGNER.address,
            transfer().spend,
            key="block-as-time",
            expires_at=REFERENCE_BLOCK + 100,
            limits=Limits(),
        )
    verified = newton_guard(newton).authorize(transfer(2))
    assert before < verified.expires_at <= time.time() + 100 * 2.0
    assert verified.attestation.expires_at == REFERENCE_BLOCK + 100


def test_an_eoa_signs_nothing_on_an_unchecked_newton_attestation(newton: FakeNewton) -> None:
    verified = newton_guard(newton).authorize(transfer())
    assert verified.assurance == "newton-bls-binding" and verified.signers == ()
    with pytest.raises(OnchainCheckRequired):
        SIGNER.sign_transaction(
            verified, nonce=0, gas=100_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=10**6
        )


def test_an_offchain_call_does_not_run_on_an_unchecked_newton_attestation(
    newton: FakeNewton,
) -> None:
    """Before: ``guard.run_call`` ran the function on a Newton attestation whose operator
    signatures nobody had checked (a gateway could forge the allow). Now the call port, like
    the Signer, refuses the ``newton-bls-binding`` assurance."""
    guard = newton_guard(newton, signer=SIGNER, ledger=Ledger(), limits=Limits())
    ran: list[bool] = []
    with pytest.raises(OnchainCheckRequired):
        guard.run_call("send_email", {"to": "a"}, lambda: ran.append(True))
    assert ran == []


def test_a_gateway_answering_for_another_intent_is_refused(newton: FakeNewton) -> None:
    newton.answer(Answer(intent=transfer(10**12).wire()))
    with pytest.raises(IntentMismatch):
        newton_guard(newton).authorize(transfer(1))


def test_a_replayed_newton_answer_verifies_once(newton: FakeNewton) -> None:
    same = "0x" + "77" * 32
    newton.answer(Answer(task_id=same), Answer(task_id=same))
    guard = newton_guard(newton)
    guard.authorize(transfer())
    with pytest.raises(AttestationReplayed):
        guard.authorize(transfer())


def test_a_far_future_expiration_buys_no_more_than_max_lifetime(newton: FakeNewton) -> None:
    newton.answer(Answer(expire_after=2**31))
    verified = newton_guard(newton, max_lifetime=60).authorize(transfer())
    assert verified.attestation.expires_at == REFERENCE_BLOCK + 2**31
    assert verified.expires_at <= time.time() + 60


@pytest.mark.parametrize("blocks_past", [0, 1, 10_000])
def test_a_block_expiry_already_passed_is_expired(newton: FakeNewton, blocks_past: int) -> None:
    guard = newton_guard(newton, block=REFERENCE_BLOCK + 100 + blocks_past)
    with pytest.raises(AttestationExpired, match="block"):
        guard.authorize(transfer())


def test_shadow_mode_on_a_lying_simulation_signs_and_holds_nothing(newton: FakeNewton) -> None:
    """A simulation that says allow for anything is only recorded: no task is created, nothing
    verified, held or signed; the call runs as shadow mode promises."""
    newton.default = Answer(simulate_allow=True, decision="deny")
    ledger = Ledger()
    guard = newton_guard(newton, signer=SIGNER, ledger=ledger, limits=Limits())
    assert guard.run_call("drain", {"all": True}, lambda: "ran", shadow=True) == "ran"
    assert [r["method"] for r in newton.requests] == ["newt_simulateTask"]
    assert ledger.usage(SIGNER.address, 3600).count == 0
    # and the same action enforced is what the network really says
    with pytest.raises(Exception, match="denied"):
        guard.run_call("drain", {"all": True}, lambda: "ran")


# -- Guard.connect picks the verifier ----------------------------------------------------


def _web3() -> Web3:
    """A Web3 that is never reached: NewtonVerifier reads the chain on first verification."""
    return Web3(Web3.HTTPProvider("http://127.0.0.1:9"))


def test_connect_without_operators_is_newton_bls(newton: FakeNewton) -> None:
    web3 = _web3()
    guard = Guard.connect(newton.url, policy_client=POLICY_CLIENT, policy_id=POLICY_ID, web3=web3)
    verifier = guard.verifier
    assert isinstance(verifier, NewtonVerifier)
    assert verifier._web3 is web3 and verifier.policy_id == bytes.fromhex(POLICY_ID[2:])
    assert verifier.threshold_floor == DEFAULT_THRESHOLD_FLOOR  # nothing lowers Newton's floor
    # it asked the gateway what it is, once; Newton's gateway does not know the method
    assert [r["method"] for r in newton.requests] == ["agentguard_networkInfo"]
    # so a task whose answer is lost is never sent twice
    newton.answer(Answer(http=502))
    with pytest.raises(GatewayUnavailable, match="a task may exist"):
        guard.authorizer.authorize(transfer())
    assert len(newton.calls("newt_createTask")) == 1


def test_connect_points_the_bls_verifier_at_other_contracts(newton: FakeNewton) -> None:
    table, avs = "0x" + "ab" * 20, "0x" + "cd" * 20
    guard = Guard.connect(
        newton.url,
        policy_client=POLICY_CLIENT,
        policy_id=POLICY_ID,
        web3=_web3(),
        newton={"certificate_verifier": table, "source_avs": avs, "max_lifetime": 60},
    )
    verifier = guard.verifier
    assert isinstance(verifier, NewtonVerifier)
    assert verifier._certificate_verifier == Web3.to_checksum_address(table)
    assert verifier._source_avs == Web3.to_checksum_address(avs)
    assert verifier._max_lifetime == 60
    assert verifier.quorum_numbers == b"\x00"  # the quorum the gateway is asked for
    pinned = Guard.connect(
        newton.url,
        policy_client=POLICY_CLIENT,
        policy_id=POLICY_ID,
        web3=_web3(),
        quorum_number="01",
    ).verifier
    assert isinstance(pinned, NewtonVerifier) and pinned.quorum_numbers == b"\x01"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"policy_client": "0x" + "11" * 20}, "newton= takes"),  # cannot swap the client
        ({"clock": time.time}, "newton= takes"),
        ("certificate_verifier=0x", "mapping"),
        ({"certificate_verifier": "0x1234"}, "certificate_verifier"),
    ],
)
def test_connect_refuses_unknown_or_malformed_newton_options(
    newton: FakeNewton, options: Any, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Guard.connect(
            newton.url,
            policy_client=POLICY_CLIENT,
            policy_id=POLICY_ID,
            web3=_web3(),
            newton=options,
        )


def test_connect_refuses_newton_options_with_operators(newton: FakeNewton) -> None:
    with pytest.raises(ConfigurationError, match="one or the other"):
        Guard.connect(
            newton.url,
            policy_client=POLICY_CLIENT,
            policy_id=POLICY_ID,
            operators=["0x" + "12" * 20, "0x" + "34" * 20],
            newton={"source_avs": "0x" + "cd" * 20},
        )


def test_connect_without_operators_needs_the_chain(newton: FakeNewton) -> None:
    with pytest.raises(ConfigurationError, match="AGENTGUARD_RPC_URL"):
        Guard.connect(newton.url, policy_client=POLICY_CLIENT, policy_id=POLICY_ID)


def test_newton_contracts_from_the_environment() -> None:
    from agentguard._env import connect_options

    table = "0x" + "ab" * 20
    env = {
        "AGENTGUARD_GATEWAY_URL": "http://127.0.0.1:9/rpc",
        "AGENTGUARD_POLICY_CLIENT": POLICY_CLIENT,
        "AGENTGUARD_POLICY_ID": POLICY_ID,
        "AGENTGUARD_NEWTON_CERTIFICATE_VERIFIER": table,
    }
    assert connect_options(env)["newton"] == {
        "certificate_verifier": Web3.to_checksum_address(table)
    }
    with pytest.raises(ConfigurationError, match="AGENTGUARD_NEWTON_SOURCE_AVS"):
        connect_options({**env, "AGENTGUARD_NEWTON_SOURCE_AVS": "0x12"})


def test_the_rpc_from_the_environment_has_a_request_timeout() -> None:
    """A stalled node must fail in bounded time: the Web3 built from ``AGENTGUARD_RPC_URL``
    carries an explicit request timeout (before: web3's default, tens of seconds per call)."""
    from agentguard._env import RPC_TIMEOUT, connect_options

    env = {
        "AGENTGUARD_GATEWAY_URL": "http://127.0.0.1:9/rpc",
        "AGENTGUARD_POLICY_CLIENT": POLICY_CLIENT,
        "AGENTGUARD_POLICY_ID": POLICY_ID,
        "AGENTGUARD_RPC_URL": "http://127.0.0.1:9",
    }
    provider = connect_options(env)["web3"].provider
    assert provider.get_request_kwargs()["timeout"] == RPC_TIMEOUT


@pytest.mark.parametrize("cls", [Guard, AsyncGuard])
def test_a_newton_url_claiming_to_dedupe_is_not_believed(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (a hostile or spoofed endpoint at a Newton URL): it answers the probe with
    ``dedupes: true`` so that a lost ``newt_createTask`` is sent again (two tasks, two
    attestations for one intent). Before the fix the claim was believed; now a Newton URL
    never dedupes, and gets none of the reference network's commit/release bookkeeping."""
    from agentguard import _guard

    monkeypatch.setattr(
        _guard, "probe_network", lambda url, key: {"scheme": "bls", "dedupes": True}
    )
    guard = cls.connect(
        "https://gateway.newton.xyz/rpc",
        policy_client=POLICY_CLIENT,
        policy_id=POLICY_ID,
        web3=Web3(Web3.HTTPProvider("http://127.0.0.1:9")),
    )
    cfg = guard.authorizer._cfg
    assert cfg.dedupe is False and cfg.bookkeeping is False


def test_a_reference_network_keeps_commit_and_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference network answered the probe: its bookkeeping calls are still sent."""
    from agentguard import _guard

    monkeypatch.setattr(
        _guard, "probe_network", lambda url, key: {"scheme": "ecdsa", "dedupes": True}
    )
    guard = Guard.connect(
        "http://127.0.0.1:9/rpc",
        policy_client=POLICY_CLIENT,
        policy_id=POLICY_ID,
        operators=["0x" + "12" * 20],
    )
    cfg = guard.authorizer._cfg
    assert cfg.dedupe is True and cfg.bookkeeping is True


def test_connect_with_operators_is_the_ecdsa_verifier(newton: FakeNewton) -> None:
    from agentguard import Verifier

    operators = ["0x" + "12" * 20, "0x" + "34" * 20, "0x" + "56" * 20]
    guard = Guard.connect(
        newton.url, policy_client=POLICY_CLIENT, policy_id=POLICY_ID, operators=operators
    )
    assert isinstance(guard.verifier, Verifier) and guard.verifier.threshold == 2
