"""Challenge records (``agentguard.challenge/1``): a self-contained proof that operators signed
a result the policy does not give, and its verifier, which needs nothing else.

A record holds the attestation with its signatures, the owner-signed registration and the
policy material its policy id commits to, the inputs (intent wire form, policy data, approval),
the recomputed decision and the operators named as wrong. ``verify_record`` trusts none of it:
it re-checks the owner's signature, that the policy id is keccak(client, code hash of the
material, params hash, expiry), evaluates the policy again on the inputs, and recovers each
named operator's signature to learn what that operator signed. Whatever fails makes the record
"not proven" with a reason; a record that is not even of this shape is ``NotAChallengeRecord``.

Kinds: ``decision`` (the recorded inputs give another decision) is checked here; other kinds
(``history``, from the watch) register a checker with ``register_kind``: it checks the kind's
own evidence (``record["extra"]``) and returns the policy data to evaluate with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    AgentGuardError,
    ChallengeError,
    ChallengeRetry,
    NotAChallengeRecord,
)
from agentguard._intent import TransactionIntent
from agentguard._json import canonical_json, strict_loads
from agentguard.challenge._evaluate import Recomputed, most_permissive, reevaluate
from agentguard.challenge._evidence import TaskEvidence, signed_values
from agentguard.network.registration import Registration
from agentguard.network.state import policy_from_material, policy_material
from agentguard.policies import Policy

__all__ = [
    "KINDS",
    "MAX_RECORD_BYTES",
    "RECORD_FORMAT",
    "KindChecker",
    "NotProven",
    "RecordCheck",
    "RecordContext",
    "build_record",
    "load_record",
    "register_kind",
    "verify_record",
    "write_record",
]

RECORD_FORMAT = "agentguard.challenge/1"
MAX_RECORD_BYTES = 8 << 20
"""A record is a few KiB plus its policy material (and a history record's evidence)."""
_MAX_SIGNERS = 256
_FIELDS = {
    "format": str,
    "kind": str,
    "task_id": str,
    "policy_client": str,
    "source": str,
    "created_at": int,
    "intent": dict,
    "wasm": dict,
    "attestation": dict,
    "registration": dict,
    "policy": dict,
    "recomputed": dict,
    "wrong_signers": list,
}


class NotProven(Exception):
    """Raised by a check inside ``verify_record`` (a kind's checker too): the record does not
    prove what it claims, and the message says why."""


@dataclass(frozen=True)
class RecordContext:
    """What a kind's checker gets: the record and what the verifier already checked from it
    (the owner-signed registration, the policy material its policy id commits to)."""

    record: Mapping[str, Any]
    evidence: TaskEvidence
    registration: Registration
    policy: Policy
    rpc: str | None
    operators: frozenset[str] | None = None  # the verifier's operator set (lowercase), if given


@dataclass(frozen=True)
class KindResult:
    """A kind checker's answer: the policy data to re-evaluate with; ``also``: other policy
    data on which the policy must give the same result (whatever the record cannot prove,
    set in the operators' favour); notes (e.g. chain facts not re-checked without an RPC)."""

    wasm: dict[str, Any]
    also: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blames_operators: bool = True  # False: it proves another party wrong (history: the gateway)


KindChecker = Callable[[RecordContext], KindResult]


def _decision_kind(context: RecordContext) -> KindResult:
    """The operators were wrong on the very inputs they were given, whatever the history and
    approval (which they did not sign) were."""
    if context.evidence.attestation.get("decision") != "allow":
        raise NotProven(
            "the attestation is not an allow: a wrong deny cannot be proven from the record "
            "alone (it may rest on history the operators did not sign), and it moves no funds"
        )
    wasm = context.evidence.wasm
    return KindResult(wasm, also=[most_permissive(wasm, context.registration)])


KINDS: dict[str, KindChecker] = {"decision": _decision_kind}
_KIND_MODULES = {"history": "agentguard.challenge._history"}  # kinds registered on first use


def register_kind(kind: str, checker: KindChecker) -> None:
    """Let ``verify_record`` check records of ``kind`` (the watch registers ``history``)."""
    KINDS[kind] = checker


@dataclass(frozen=True)
class RecordCheck:
    proven: bool
    kind: str
    wrong_signers: list[str]
    recomputed: Recomputed | None
    notes: list[str]
    reason: str = ""  # why it is not proven


def build_record(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    recomputed: Recomputed,
    *,
    kind: str,
    wrong_signers: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one discrepancy (see the module docstring)."""
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "kind": kind,
        "task_id": evidence.task_id,
        "policy_client": evidence.policy_client,
        "source": evidence.source,
        "created_at": evidence.created_at,
        "intent": evidence.intent,
        "wasm": evidence.wasm,
        "approval": evidence.approval,
        "request_id": evidence.request_id,
        "attestation": evidence.attestation,
        "registration": registration.to_json(),
        "policy": policy_material(policy),
        "recomputed": recomputed.to_json(),
        "wrong_signers": sorted(s.lower() for s in wrong_signers),
    }
    if extra is not None:
        record["extra"] = extra
    return record


def write_record(record: Mapping[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``record`` as ``challenge-<kind>-<task id>.json`` in ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # only [0-9a-z-] from the record into the file name: no source can steer the path
    task = re.sub(r"[^0-9a-f]", "", str(record["task_id"]).lower().removeprefix("0x"))[:64]
    kind = re.sub(r"[^a-z-]", "", str(record["kind"]))[:32]
    path = out / f"challenge-{kind}-{task}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def load_record(raw: bytes | str) -> dict[str, Any]:
    """A record file's content, strictly read (size, depth, duplicate keys, UTF-8)."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_RECORD_BYTES:
        raise NotAChallengeRecord(
            f"the record is {size} bytes; a challenge record is at most {MAX_RECORD_BYTES}"
        )
    try:
        doc = strict_loads(raw)
    except ValueError as exc:
        raise NotAChallengeRecord(f"the record is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NotAChallengeRecord("a challenge record is a JSON object")
    return doc


def _shape(record: Any) -> dict[str, Any]:
    """``record`` as plain, bounded JSON of the record's shape, or ``NotAChallengeRecord``."""
    if not isinstance(record, Mapping):
        raise NotAChallengeRecord("a challenge record is a JSON object")
    try:  # plain JSON only, bounded in size and depth, whatever object was handed in
        text = canonical_json(record)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotAChallengeRecord(f"the record is not plain JSON ({type(exc).__name__})") from None
    doc = load_record(text)
    if doc.get("format") != RECORD_FORMAT:
        raise NotAChallengeRecord(f"the record's format is not {RECORD_FORMAT!r}")
    for name, kind in _FIELDS.items():
        value = doc.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise NotAChallengeRecord(f"the record's {name} is missing or not a {kind.__name__}")
    for name in ("approval", "extra"):
        if doc.get(name) is not None and not isinstance(doc[name], dict):
            raise NotAChallengeRecord(f"the record's {name} is not an object")
    if doc.get("request_id") is not None and not isinstance(doc["request_id"], str):
        raise NotAChallengeRecord("the record's request_id is not text")
    signers = doc["wrong_signers"]
    if len(signers) > _MAX_SIGNERS or not all(isinstance(s, str) for s in signers):
        raise NotAChallengeRecord("the record's wrong_signers is not a list of addresses")
    stated = doc["recomputed"]
    if not isinstance(stated.get("decision"), str):
        raise NotAChallengeRecord("the record's recomputed.decision is not text")
    return doc


def verify_record(
    record: Mapping[str, Any],
    *,
    rpc: str | None = None,
    operators: Collection[str] | None = None,
) -> RecordCheck:
    """Re-check a record with nothing but itself (and ``rpc`` for a kind's chain facts).
    ``operators``: when given, a named signer must be one of them. ``NotAChallengeRecord`` if
    ``record`` is not of the record's shape; otherwise a ``RecordCheck``."""
    doc = _shape(record)
    kind = doc["kind"]
    named = sorted({s.lower() for s in doc["wrong_signers"]})
    notes: list[str] = []
    try:
        if kind in _KIND_MODULES and kind not in KINDS:
            import_module(_KIND_MODULES[kind])  # registers its checker
        checker = KINDS.get(kind)
        if checker is None:
            raise NotProven(f"no checker for records of kind {kind[:40]!r} (an older agentguard?)")
        recomputed = _check(doc, checker, rpc, named, operators, notes)
    except NotProven as exc:
        return RecordCheck(False, kind, named, None, notes, reason=str(exc))
    if operators is None and named:
        notes.append(
            "the wrong signers are named by the keys their signatures recover to: compare them "
            "with your network's operator set"
        )
    return RecordCheck(True, kind, named, recomputed, notes)


def _check(
    doc: dict[str, Any],
    checker: KindChecker,
    rpc: str | None,
    named: list[str],
    operators: Collection[str] | None,
    notes: list[str],
) -> Recomputed:
    try:
        registration = Registration.from_json(doc["registration"])
        policy = policy_from_material(doc["policy"])
        attestation = Attestation.from_json(doc["attestation"])
        intent = TransactionIntent.from_wire(doc["intent"])
    except AgentGuardError as exc:
        raise NotProven(exc.message) from None
    except ValueError as exc:
        raise NotProven(f"the policy material is malformed: {exc}") from None
    task_id = "0x" + attestation.task_id.hex()
    if doc["task_id"].lower() != task_id or (
        doc["policy_client"].lower() != attestation.policy_client.lower()
    ):
        raise NotProven("the record's task id or policy client is not the attestation's")
    if doc.get("request_id") is None:  # ``reevaluate`` checks the id derives from it
        raise NotProven(
            "the record carries no request id, so its x402 details (or their absence) are not "
            "shown to be what the operators evaluated: the task id binds them with it"
        )
    evidence = TaskEvidence(
        task_id=task_id,
        policy_client=attestation.policy_client,
        intent=doc["intent"],
        wasm=doc["wasm"],
        attestation=doc["attestation"],
        created_at=doc["created_at"],
        source=doc["source"],
        approval=doc.get("approval"),
        request_id=doc.get("request_id"),
    )
    pinned = None if operators is None else frozenset(o.lower() for o in operators)
    context = RecordContext(doc, evidence, registration, policy, rpc, pinned)
    try:
        result = checker(context)
    except ChallengeRetry:
        raise  # not judged: neither proven nor not
    except AgentGuardError as exc:
        raise NotProven(exc.message) from None
    notes.extend(result.notes)
    try:
        recomputed = reevaluate(evidence, registration, policy, wasm=result.wasm)
    except ChallengeError as exc:
        raise NotProven(exc.message) from None
    for other in result.also:
        try:
            alternative = reevaluate(evidence, registration, policy, wasm=other)
        except ChallengeError as exc:
            raise NotProven(exc.message) from None
        if alternative.allowed != recomputed.allowed or alternative.tier != recomputed.tier:
            raise NotProven(
                f"the policy gives {recomputed.decision} on the recorded history and approval, "
                f"but {alternative.decision} on other ones; the operators did not sign those, so "
                "this record alone does not prove them wrong (a history record can)"
            )
    if doc["recomputed"].get("decision") != recomputed.decision:
        raise NotProven(
            f"the record says the policy gives {str(doc['recomputed'].get('decision'))[:40]!r}; "
            f"evaluated again it gives {recomputed.decision!r}"
        )
    signed = {s.operator: s.allow for s in signed_values(attestation, intent, operators)}
    if any(value is not None and value != attestation.allowed for value in signed.values()):
        raise NotProven("the attestation's decision is not what its signatures sign")
    if not result.blames_operators:
        if named:
            raise NotProven(f"a {doc['kind']} record names no wrong signers")
        return recomputed
    if not named:
        raise NotProven("the record names no operator")
    wrong_tier = recomputed.tier is not None and attestation.tier != recomputed.tier
    for operator in named:
        value = signed.get(operator)
        if value is None:
            raise NotProven(
                f"{operator} has no signature on this attestation that recovers to it"
                + ("" if operators is None else " among the given operators")
            )
        if value == recomputed.allowed and not wrong_tier:
            raise NotProven(f"{operator} signed what the policy gives ({recomputed.decision})")
    return recomputed
