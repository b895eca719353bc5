"""The provable lower bound of a task's history, piece by piece: which earlier tasks count,
from which moment, in which window, and on whose signatures. Each rule here is one a lying
gateway, or a challenger framing an honest one, would try to bend."""

from __future__ import annotations

from typing import Any

from coincurve import PrivateKey

from agentguard._attestation import (
    Attestation,
    attestation_digest,
    operator_address,
    sign_attestation,
)
from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.challenge._chain import ChainFact
from agentguard.challenge._evidence import TaskEvidence
from agentguard.challenge._history import (
    Candidate,
    Quorum,
    Totals,
    check_task,
    compare,
    lower_bound,
)
from agentguard.network.registration import Registration
from tests.network.conftest import NETCHECK, TOKEN, UNIT, params

KEYS = [PrivateKey(keccak(f"history operator {i}".encode())) for i in range(3)]
STRANGERS = [PrivateKey(keccak(f"history stranger {i}".encode())) for i in range(2)]
OWNER = PrivateKey(keccak(b"history owner"))
CLIENT = operator_address(OWNER)  # a self-owned (EOA) client: the agent is the client
QUORUM = Quorum(frozenset(operator_address(k).lower() for k in KEYS), 2)
EXPIRE = 300
REGISTRATION = Registration.sign(
    OWNER,
    policy_client=CLIENT,
    policy=NETCHECK,
    params=params(),
    expire_after=EXPIRE,
    chain_id=8453,
    version=1,
)
WINDOWS = [60, 3600, 86400]


def allowed(
    now: int,
    amount: int = UNIT,
    *,
    n: int = 0,
    keys: list[PrivateKey] | None = None,
    allow: bool = True,
    registration: Registration = REGISTRATION,
) -> tuple[TransactionIntent, Attestation]:
    intent = TransactionIntent.erc20_transfer(
        sender=CLIENT,
        token=TOKEN,
        recipient="0x" + f"{0xBEEF0000 + n:040x}",
        amount=amount,
        chain_id=8453,
    )
    task_id = keccak(f"task {now} {n}".encode())
    fields: dict[str, Any] = {
        "chain_id": 8453,
        "policy_client": bytes.fromhex(CLIENT[2:]),
        "task_id": task_id,
        "policy_id": registration.policy_id,
        "intent_hash": intent.intent_hash,
        "allow": allow,
        "expires_at": now + EXPIRE,
    }
    digest = attestation_digest(**fields)
    signers = keys if keys is not None else KEYS[:2]
    attestation = Attestation.from_json(
        {
            "decision": "allow" if allow else "deny",
            "task_id": "0x" + task_id.hex(),
            "policy_id": "0x" + registration.policy_id.hex(),
            "policy_client": CLIENT,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "expires_at": now + EXPIRE,
            "signatures": [
                {
                    "operator": operator_address(k),
                    "signature": "0x" + sign_attestation(k, digest).hex(),
                }
                for k in signers
            ],
        }
    )
    return intent, attestation


def candidate(now: int, amount: int = UNIT, n: int = 0, **kw: Any) -> Candidate:
    intent, attestation = allowed(now, amount, n=n)
    return Candidate.of(intent, attestation, REGISTRATION, **kw)


def bound(cands: list[Candidate], at: int, seq: int | None = None) -> dict[int, Totals]:
    totals, _ = lower_bound(cands, task_id="0x" + "ab" * 32, at=at, windows=WINDOWS, seq=seq)
    return totals


def spent(totals: Totals) -> int:
    return totals.spent.get(TOKEN.lower(), 0)


def test_a_quorums_allow_is_accepted_and_its_time_comes_from_the_signed_expiry() -> None:
    intent, attestation = allowed(1_000)
    assert QUORUM.signed(attestation, intent) is None
    assert Candidate.of(intent, attestation, REGISTRATION).now == 1_000


def test_signatures_outside_the_operator_set_or_below_quorum_count_for_nothing() -> None:
    """A challenger framing an honest gateway with tasks of its own making gets nowhere."""
    intent, forged = allowed(1_000, keys=STRANGERS)
    assert "0 valid signature" in str(QUORUM.signed(forged, intent))
    intent, lone = allowed(1_000, keys=KEYS[:1])
    assert "1 valid signature" in str(QUORUM.signed(lone, intent))
    intent, denied = allowed(1_000, allow=False)
    assert "not allowed" in str(QUORUM.signed(denied, intent))
    other, _ = allowed(1_000, n=7)
    _, attestation = allowed(1_000)
    assert "another intent" in str(QUORUM.signed(attestation, other))


def test_only_strictly_earlier_tasks_inside_the_window_count() -> None:
    """Same second: it may have been reserved after the task (not provable); exactly at the
    window's start: the gateway no longer counts it (``created_at > now - window``)."""
    at = 100_000
    cands = [
        candidate(at - 1, 1 * UNIT, 1),
        candidate(at, 2 * UNIT, 2),  # same second
        candidate(at + 5, 4 * UNIT, 3),  # later
        candidate(at - 60, 8 * UNIT, 4),  # exactly 60 s before: outside the 60 s window
        candidate(at - 59, 16 * UNIT, 5),
    ]
    totals = bound(cands, at)
    assert (totals[60].count, spent(totals[60])) == (2, 17 * UNIT)
    assert (totals[3600].count, spent(totals[3600])) == (3, 25 * UNIT)


def test_an_expired_task_counts_only_with_proof_it_was_never_given_back() -> None:
    """A release gives an attestation back at its expiry: after that, only a commit, a status
    read once this task was recorded, or the chain shows it still counted."""
    at = 100_000
    old = at - EXPIRE - 10  # expired before ``at``
    fact = ChainFact("executed", 8453, "0x01", 1, "0x02", 0, CLIENT, None, {})
    cases = {
        "released": candidate(old, n=1, status="released", status_seq=99),
        "attested, read before": candidate(old, n=2, status="attested", status_seq=4),
        "attested, read after": candidate(old, n=3, status="attested", status_seq=5),
        "committed": candidate(old, n=4, status="committed", status_seq=0),
        "landed": candidate(old, n=5, facts=(fact,)),
        "live": candidate(at - 10, n=6, status="released", status_seq=99),
    }
    counted = {
        name
        for name, c in cases.items()
        if c.why_counted(at, seq=5)  # the task checked was recorded as seq 5
    }
    assert counted == {"attested, read after", "committed", "landed", "live"}


def test_under_reporting_is_found_and_over_reporting_is_only_a_warning() -> None:
    at = 100_000
    cands = [candidate(at - 10, 5 * UNIT, 1), candidate(at - 20, 5 * UNIT, 2)]
    honest = {"86400": {"count": 2, "spent": {TOKEN.lower(): str(10 * UNIT)}}}
    check = compare(honest, cands, task_id="0x" + "ab" * 32, at=at, windows=[86400])
    assert check.under == () and check.over == ()
    lying = {"86400": {"count": 0, "spent": {}}}
    check = compare(lying, cands, task_id="0x" + "ab" * 32, at=at, windows=[86400])
    assert check.under == (86400,) and check.over == ()
    inflated = {"86400": {"count": 5, "spent": {TOKEN.lower(): str(40 * UNIT)}}}
    check = compare(inflated, cands, task_id="0x" + "ab" * 32, at=at, windows=[86400])
    assert check.under == () and check.over == (86400,)


def test_a_window_missing_from_the_record_counts_as_empty() -> None:
    at = 100_000
    check = compare({}, [candidate(at - 10)], task_id="0x" + "ab" * 32, at=at, windows=[60])
    assert check.under == (60,)


APPROVING = Registration.sign(
    OWNER,
    policy_client=CLIENT,
    policy=NETCHECK,
    params=params(daily_cap=100 * UNIT, approval_above=2 * UNIT),
    expire_after=EXPIRE,
    chain_id=8453,
    version=2,
)


def test_a_history_proof_never_rests_on_the_approval_flag() -> None:
    """The approval flag is the gateway's word like the history: a challenger that records an
    approved task as not approved, with its history zeroed, must not frame the honest
    gateway. Before the fix the re-evaluation kept the recorded flag: approval_required,
    "proven"."""
    at = 100_000
    earlier = [
        Candidate.of(*allowed(at - 10, UNIT, n=1, registration=APPROVING), APPROVING),
    ]
    intent, attestation = allowed(at, 3 * UNIT, n=2, registration=APPROVING)
    wasm = {
        "now": at,
        "intent_hash": "0x" + intent.intent_hash.hex(),
        "approved": False,  # the frame: it was approved
        "spend": intent.spend.wasm(),
        "history": {},
    }
    evidence = TaskEvidence(
        task_id="0x" + attestation.task_id.hex(),
        policy_client=CLIENT,
        intent=intent.wire(),
        wasm=wasm,
        attestation=attestation.to_json(),
        created_at=at,
        source="state",
    )
    finding = check_task(evidence, APPROVING, NETCHECK, earlier, at=at)
    assert finding.check.under  # the recorded history is below the bound...
    assert finding.recomputed is not None and finding.recomputed.decision == "allow"
    assert not finding.proven  # ...but on it the policy allows (as approved): nothing proven
