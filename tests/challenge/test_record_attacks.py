"""A challenge record is untrusted input: every edit an attacker could make to frame honest
operators or to fake a proof is "not proven", and anything that is not a record at all is
``NotAChallengeRecord`` (never a traceback). Records are built here offline, with local keys
and the real engine, exactly as ``challenge run`` builds them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import Attestation, operator_address, sign_attestation
from agentguard._task_id import task_id
from agentguard.challenge import (
    NotAChallengeRecord,
    TaskEvidence,
    build_record,
    load_record,
    reevaluate,
    register_kind,
    verify_record,
)
from agentguard.challenge._record import KINDS, KindResult, RecordContext
from agentguard.cli import main
from agentguard.network.registration import Registration
from tests.network.conftest import NETCHECK, UNIT, params, transfer

NOW = 1_764_000_000
OWNER = PrivateKey(b"\x01" * 32)
OPERATORS = [PrivateKey(bytes([i + 2]) * 32) for i in range(3)]
CLIENT = "0x" + "c1" * 20
AGENT = "0x" + "a1" * 20
REQUEST_ID = "the-agents-request"


def _registration(**changes: Any) -> Registration:
    return Registration.sign(
        changes.pop("owner", OWNER), policy_client=CLIENT, policy=NETCHECK,
        params=changes.pop("params", params(daily_cap=20 * UNIT, approval_above=8 * UNIT)),
        expire_after=300, chain_id=8453, version=1,
    )  # fmt: skip


def _window(spent: int, amount: int, asset: str) -> dict[str, Any]:
    return {
        "count": 1 if spent else 0,
        "spent": {asset: str(spent)} if spent else {},
        "projected": {asset: str(spent + amount)},
    }


def _evidence(
    amount: int, *, spent: int = 0, approved: bool = False, signers: range = range(2)
) -> TaskEvidence:
    """A task whose operators ``signers`` signed allow, with the policy data a gateway
    would have sent."""
    registration = _registration()
    intent = transfer(AGENT, amount)
    asset = intent.spend.asset.lower()
    wasm = {
        "now": NOW,
        "intent_hash": "0x" + intent.intent_hash.hex(),
        "approved": approved,
        "spend": intent.spend.wasm(),
        "history": {w: _window(spent, amount, asset) for w in ("60", "3600", "86400")},
    }
    tid = task_id(CLIENT, intent.intent_hash, None, REQUEST_ID)  # as the gateway derives it
    unsigned = Attestation(
        decision="allow", task_id=tid, policy_id=registration.policy_id,
        policy_client=CLIENT, intent_hash=intent.intent_hash, expires_at=NOW + 300,
    )  # fmt: skip
    digest = unsigned.digest_for(intent.intent_hash, 8453)
    signatures = tuple(
        {"operator": operator_address(OPERATORS[i]), "signature": sign_attestation(OPERATORS[i], digest)}
        for i in signers
    )  # fmt: skip
    attestation = unsigned.model_copy(
        update={"signatures": tuple(Attestation.model_validate({
            **unsigned.model_dump(), "signatures": signatures}).signatures)}
    )  # fmt: skip
    return TaskEvidence(
        task_id="0x" + tid.hex(), policy_client=CLIENT, intent=intent.wire(), wasm=wasm,
        attestation=attestation.to_json(), created_at=NOW, source="gateway", request_id=REQUEST_ID,
    )  # fmt: skip


def _record(evidence: TaskEvidence, signers: range = range(2)) -> dict[str, Any]:
    registration = _registration()
    recomputed = reevaluate(evidence, registration, NETCHECK)
    wrong = [operator_address(OPERATORS[i]) for i in signers]
    return build_record(
        evidence, registration, NETCHECK, recomputed, kind="decision", wrong_signers=wrong
    )


@pytest.fixture
def record() -> dict[str, Any]:
    """Two operators signed allow for 15 units: over max_per_tx (10), whatever the history."""
    built = _record(_evidence(15 * UNIT))
    assert built["recomputed"]["decision"] == "deny"
    return built


def test_a_true_record_is_proven_and_names_its_signers(record: dict[str, Any]) -> None:
    check = verify_record(record)
    assert check.proven, check.reason
    assert check.wrong_signers == sorted(operator_address(OPERATORS[i]).lower() for i in range(2))
    assert verify_record(record, operators=[operator_address(k) for k in OPERATORS]).proven


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[int(last) if isinstance(target, list) else last] = value

    return edit


def _swap_signatures(doc: dict[str, Any]) -> None:
    sigs = doc["attestation"]["signatures"]
    sigs[0]["signature"], sigs[1]["signature"] = sigs[1]["signature"], sigs[0]["signature"]


def _stranger_signs(doc: dict[str, Any]) -> None:
    """A key that is not the named operator's signs the very same digest."""
    stranger = PrivateKey(b"\x55" * 32)
    evidence = TaskEvidence(**{k: doc[k] for k in ("task_id", "policy_client", "intent", "wasm",
                                                    "attestation", "created_at", "source")})  # fmt: skip
    intent = transfer(AGENT, 15 * UNIT)
    digest = Attestation.from_json(evidence.attestation).digest_for(intent.intent_hash, 8453)
    doc["attestation"]["signatures"][0]["signature"] = (
        "0x" + sign_attestation(stranger, digest).hex()
    )


def _edit_policy(doc: dict[str, Any]) -> None:
    name = next(iter(doc["policy"]["modules"]))
    doc["policy"]["modules"][name] += "\n# edited\n"


def _edited_params_resigned(doc: dict[str, Any]) -> None:
    """The attacker re-signs a registration with looser params as a new owner: its policy id
    is not the attestation's."""
    doc["registration"] = _registration(owner=PrivateKey(b"\x66" * 32), params=params()).to_json()


def _other_intent(doc: dict[str, Any]) -> None:
    doc["intent"] = transfer(AGENT, 16 * UNIT).wire()


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "attestation decision edited to deny": _set("attestation.decision", "deny"),
    "recomputed decision edited to allow": _set("recomputed.decision", "allow"),
    "recomputed decision edited to approval_required": _set(
        "recomputed.decision", "approval_required"
    ),
    "signatures swapped between the two operators": _swap_signatures,
    "a stranger's signature under an operator's name": _stranger_signs,
    "an honest operator added to the wrong signers": _set(
        "wrong_signers.0", operator_address(OPERATORS[2]).lower()
    ),
    "no wrong signer named": _set("wrong_signers", []),
    "policy material edited": _edit_policy,
    "params edited, owner signature kept": _set("registration.params.max_per_tx", "1"),
    "params edited and re-signed by another owner": _edited_params_resigned,
    "the policy id stated in the registration edited": _set(
        "registration.policy_id", "0x" + "11" * 32
    ),
    "another intent": _other_intent,
    "the policy data's time edited": _set("wasm.now", NOW - 100),
    "the task id edited": _set("task_id", "0x" + "08" * 32),
    "an unknown kind": _set("kind", "rumour"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_tampered_record_is_not_proven(record: dict[str, Any], tamper: str) -> None:
    forged = copy.deepcopy(record)
    TAMPERS[tamper](forged)
    check = verify_record(forged)
    assert not check.proven and check.reason


def test_verify_refuses_an_operator_outside_the_given_set(record: dict[str, Any]) -> None:
    check = verify_record(record, operators=[operator_address(OPERATORS[2])])
    assert not check.proven and "among the given operators" in check.reason


def test_honest_operators_cannot_be_framed_with_invented_history() -> None:
    """The attack: take an honest allow (5 units, nothing spent before) and record invented
    history (19 of the daily 20 already spent), so the policy "gives deny" on the record.
    The operators never signed the history; before the most-permissive check this record was
    proven and accused the honest operators."""
    honest = _evidence(5 * UNIT)
    assert reevaluate(honest, _registration(), NETCHECK).decision == "allow"
    framed = TaskEvidence(**{**honest.__dict__, "wasm": {
        **honest.wasm, "history": _evidence(5 * UNIT, spent=19 * UNIT).wasm["history"]}})  # fmt: skip
    record = _record(framed)
    assert record["recomputed"]["decision"] == "deny"
    check = verify_record(record)
    assert not check.proven and "history" in check.reason


def test_honest_operators_cannot_be_framed_by_dropping_the_approval() -> None:
    """The attack: an allow given after a person approved (9 units > approval_above 8) is
    recorded with ``approved`` false, so the policy "gives approval_required"."""
    approved = _evidence(9 * UNIT, approved=True)
    assert reevaluate(approved, _registration(), NETCHECK).decision == "allow"
    framed = TaskEvidence(**{**approved.__dict__, "wasm": {**approved.wasm, "approved": False}})
    record = _record(framed)
    assert record["recomputed"]["decision"] == "approval_required"
    assert not verify_record(record).proven


def test_a_history_kind_checker_can_be_registered(record: dict[str, Any]) -> None:
    """The watch registers its kind: its checker vouches for the policy data to evaluate."""
    seen: list[str] = []

    def checker(context: RecordContext) -> KindResult:
        seen.append(context.record["kind"])
        return KindResult(context.evidence.wasm, notes=["chain facts not re-checked"])

    register_kind("test-kind", checker)
    try:
        check = verify_record({**record, "kind": "test-kind"})
    finally:
        KINDS.pop("test-kind")
    assert check.proven and seen == ["test-kind"] and "chain facts not re-checked" in check.notes


NOT_RECORDS: dict[str, Any] = {
    "a list": [1, 2],
    "a string": "record",
    "no format": {"kind": "decision"},
    "another format": {"format": "agentguard.challenge/2"},
    "wrong_signers as text": "wrong_signers",
    "created_at as text": "created_at",
    "created_at as a bool": "created_at_bool",
    "a set inside": "set",
    "nested 10,000 deep": "deep",
}


def _not_a_record(kind: str, record: dict[str, Any]) -> Any:
    value = NOT_RECORDS[kind]
    if value == "wrong_signers":
        return {**record, "wrong_signers": "0xabc"}
    if value == "created_at":
        return {**record, "created_at": "1"}
    if value == "created_at_bool":
        return {**record, "created_at": True}
    if value == "set":
        return {**record, "wasm": {"history": {1, 2}}}
    if value == "deep":
        deep: Any = []
        for _ in range(10_000):
            deep = [deep]
        return {**record, "extra": {"x": deep}}
    return value


@pytest.mark.parametrize("kind", list(NOT_RECORDS))
def test_what_is_not_a_record_is_refused_as_such(record: dict[str, Any], kind: str) -> None:
    with pytest.raises(NotAChallengeRecord):
        verify_record(_not_a_record(kind, record))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"format": "agentguard.challenge/1", "format": "x"}',
        b'{"created_at": NaN}',
        b" " * (9 << 20),
    ],
    ids=["empty", "not utf-8", "deep", "duplicate key", "NaN", "huge"],
)
def test_malformed_files_are_not_records(raw: bytes) -> None:
    with pytest.raises(NotAChallengeRecord):
        load_record(raw)


def test_the_cli_says_proven_not_proven_or_not_a_record(
    record: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, forged, garbage = tmp_path / "good.json", tmp_path / "forged.json", tmp_path / "x.json"
    good.write_text(json.dumps(record))
    forged.write_text(json.dumps({**record, "recomputed": {"decision": "allow"}}))
    garbage.write_bytes(b"[" * 100_000)
    assert main(["challenge", "verify", str(good)]) == 0
    assert "proven (decision): the policy gives deny" in capsys.readouterr().out
    assert main(["challenge", "verify", str(forged)]) == 1
    assert "not proven:" in capsys.readouterr().err
    assert main(["challenge", "verify", str(garbage)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["challenge", "verify", str(tmp_path / "missing.json")]) == 2


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _mutated(
    doc: dict[str, Any], rng: Any, paths: list[tuple[Any, ...]], values: list[Any]
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """A copy of ``doc`` with one field (at one of ``paths``) replaced or removed."""
    forged = copy.deepcopy(doc)
    path = rng.choice(paths)
    target: Any = forged
    for part in path[:-1]:
        target = target[part]
    if rng.random() < 0.2 and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = rng.choice(values)
    return forged, path


def test_random_edits_give_a_verdict_never_a_crash(record: dict[str, Any]) -> None:
    """Every field of a true record, replaced by values of every JSON type or removed: the
    answer is "not proven" or ``NotAChallengeRecord``, never another exception (and never
    "proven" for an edit that changes what was signed or evaluated)."""
    import random

    rng = random.Random(7)
    values: list[Any] = [
        None,
        True,
        0,
        -1,
        2**300,
        1.5,
        "",
        "0x",
        "0x" + "ab" * 32,
        [],
        {},
        [1],
        {"a": 1},
    ]
    paths = _paths(record)
    for _ in range(400):
        forged, path = _mutated(record, rng, paths, values)
        if json.dumps(forged, sort_keys=True) == json.dumps(record, sort_keys=True):
            continue  # a value replaced by itself (``[]`` for ``[]``): no edit at all
            continue
        try:
            check = verify_record(forged)
        except NotAChallengeRecord:
            continue
        if check.proven and path == ("attestation", "tier"):  # only removed or 0: tier 0
            assert forged["attestation"].get("tier", 0) == 0 == record["attestation"]["tier"]
        elif check.proven and path == ("registration", "policy_id"):  # only removed:
            assert "policy_id" not in forged["registration"]  # derived from what is signed
        elif check.proven:  # only edits of what the proof does not rest on
            assert path[0] in {"source", "created_at", "approval", "extra"} or path[:2] in {
                ("recomputed", "reasons"), ("recomputed", "tier"), ("attestation", "reasons"),
                ("attestation", "scheme"),  # removed: ecdsa, the default
                ("policy", "name"), ("policy", "description"),
                # not in the code hash; a schema only refuses params, it decides nothing
                ("policy", "params_schema"),
                # unsigned: the proof holds whatever they are (the most permissive check)
                ("wasm", "history"), ("wasm", "approved"),
            }, path  # fmt: skip


def test_random_evidence_from_a_lying_source_never_crashes_the_run() -> None:
    """What a source hands the run, edited anywhere: a finding or nothing, never an
    exception; and a discrepancy only where signatures really sign allow for a deny."""
    import random

    from agentguard.challenge import check_evidence

    class _Held:
        def get(self, policy_id: str) -> Any:
            registration = _registration()
            return (
                (registration, NETCHECK)
                if policy_id == "0x" + registration.policy_id.hex()
                else None
            )

    rng = random.Random(11)
    values: list[Any] = [None, True, 0, 2**300, "", "0x" + "ab" * 32, [], {}, [1], {"a": 1}]
    base = _evidence(15 * UNIT).__dict__
    paths = [p for p in _paths(base) if len(p) > 1 and p[0] in {"intent", "wasm", "attestation"}]
    for _ in range(300):
        doc, _ = _mutated(base, rng, paths, values)
        finding = check_evidence(TaskEvidence(**doc), _Held())  # type: ignore[arg-type]
        if finding is not None and finding.record is not None:
            assert verify_record(finding.record).proven or not finding.offline
