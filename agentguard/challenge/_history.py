"""Running totals recomputed: a gateway that under-reports history is caught.

The gateway hands the operators the windows' totals (``data.wasm.history``); they are oracle
data, the gateway's word. A challenger recomputes, for each task, a *provable lower bound* of
each window's totals from the other allowed tasks of the same policy client and agent:

* the task was allowed: an allow attestation whose signatures recover to a quorum of the
  network's operators, bound to the task's intent (its spend is judged from that intent);
* it was counted before this task: its ``now`` (``expiresAt - expireAfter``: the expiry is
  signed by the operators, who refuse any other expiry than ``data.wasm.now + expireAfter``;
  ``expireAfter`` is in the owner-signed registration) is earlier than this task's, and later
  than the window's start (the gateway counts a task while ``created_at > now - window``);
* it was still counted at this task's ``now``: the network gives an attestation back only
  at its expiry, so it was if it had not expired yet (``live``), if the gateway's record says
  ``committed`` (never given back) or, read once this task was recorded, not released
  (``not_released``), or if it provably landed onchain (``executed``: the
  vault's ``Executed`` event; ``authorization_used``: a vault x402 payment's EIP-3009
  nonce), which no honest gateway gives back. (An EOA's landed transaction is not such proof:
  the network takes a self-owned client's word that it never used an attestation.)

Tasks of one second cannot be ordered, so none counts for another; but the gateway reserves
them one at a time, so the last saw all the others (``check_group``).

If the recorded totals are below that bound in any window, the task is re-evaluated with the
bound as its history (and ``approved`` in its favour: that flag is the gateway's word too); a
stricter decision than the one signed is a proven ``history``
discrepancy: the gateway lied, the operators signed honestly on false data (they are not
wrong signers). The proof assumes the policy is monotone in history (more counted never turns
a deny into an allow), true of every bundled policy. Over-reporting (recorded totals above
every task the records could explain) only hurts the agent and may come from tasks in flight
that were later refused: a warning, never a challenge.

The records a challenger reads come from the gateway too, which can leave tasks out of them
as well: the chain is the independent source, and in vault mode every ``Executed`` event must
correspond to an attested task in the records (``unrecorded``), or that is a finding itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from web3 import Web3

from agentguard._attestation import Attestation, recover_signer
from agentguard._exceptions import AgentGuardError
from agentguard._intent import TransactionIntent
from agentguard.challenge._chain import ChainFact, recheck_fact, vault_operators
from agentguard.challenge._evaluate import Recomputed, reevaluate
from agentguard.challenge._evidence import TaskEvidence
from agentguard.challenge._record import (
    KindResult,
    NotProven,
    RecordContext,
    build_record,
    register_kind,
)
from agentguard.network.gateway._registry import history_windows
from agentguard.network.registration import Registration
from agentguard.network.state import DEFAULT_WINDOWS as EARLIER_DEFAULTS
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine

__all__ = [
    "Candidate",
    "HistoryCheck",
    "HistoryFinding",
    "HistoryIndex",
    "Quorum",
    "Totals",
    "check_group",
    "check_task",
    "compare",
    "lower_bound",
    "recomputed_history",
    "windows_of",
]

DECISION_RANK = {"allow": 0, "approval_required": 1, "deny": 2}


@dataclass(frozen=True)
class Quorum:
    """The network's operators (lowercase addresses) and how many must sign."""

    operators: frozenset[str]
    threshold: int
    source: str = "given"  # "given" | "vault" | "records"

    def to_json(self) -> dict[str, Any]:
        return {
            "operators": sorted(self.operators),
            "threshold": self.threshold,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Quorum:
        operators = raw.get("operators")
        threshold = raw.get("threshold")
        if (
            not isinstance(operators, list)
            or not all(isinstance(o, str) for o in operators)
            or isinstance(threshold, bool)
            or not isinstance(threshold, int)
            or threshold < 1
        ):
            raise ValueError("quorum must be {operators: [addresses], threshold: int >= 1}")
        return cls(frozenset(o.lower() for o in operators), threshold, str(raw.get("source", "")))

    def signed(self, attestation: Attestation, intent: TransactionIntent) -> str | None:
        """Why ``attestation`` is not this quorum's allow for ``intent`` (None: it is)."""
        if not attestation.allowed:
            return f"task 0x{attestation.task_id.hex()} was not allowed"
        if attestation.intent_hash != intent.intent_hash:
            return f"task 0x{attestation.task_id.hex()}: its attestation is for another intent"
        digest = attestation.digest_for(intent.intent_hash, intent.chain_id)
        signers: set[str] = set()
        for sig in attestation.signatures:
            try:
                signer = "0x" + recover_signer(digest, sig.signature).hex()
            except AgentGuardError:
                continue
            if signer == sig.operator.lower() and signer in self.operators:
                signers.add(signer)
        if len(signers) < self.threshold:
            return (
                f"task 0x{attestation.task_id.hex()}: {len(signers)} valid signature(s) of the "
                f"network's operators, {self.threshold} needed"
            )
        return None


@dataclass(frozen=True)
class Candidate:
    """An allowed task of one policy client and agent, as the challenger knows it: from the
    gateway's records (``status`` as read) and/or from the chain (``facts``)."""

    task_id: str
    policy_client: str
    agent: str
    asset: str
    amount: int
    now: int
    expires_at: int
    intent: dict[str, Any]
    attestation: dict[str, Any]
    status: str | None = None
    facts: tuple[ChainFact, ...] = ()
    registration: dict[str, Any] | None = None
    status_seq: int = -1  # the newest record that existed when ``status`` was read

    @classmethod
    def of(
        cls,
        intent: TransactionIntent,
        attestation: Attestation,
        registration: Registration,
        *,
        status: str | None = None,
        status_seq: int = -1,
        facts: Sequence[ChainFact] = (),
    ) -> Candidate:
        """From a verified allow (the caller checked the quorum) under ``registration``,
        which must be the one its policy id names (it gives ``expireAfter``)."""
        if registration.policy_id != attestation.policy_id:
            raise ValueError("the registration is not the one the attestation's policy id names")
        spend = intent.spend
        return cls(
            task_id="0x" + attestation.task_id.hex(),
            policy_client=attestation.policy_client.lower(),
            agent=intent.from_.lower(),
            asset=spend.asset.lower(),
            amount=spend.amount,
            now=attestation.expires_at - registration.expire_after,
            expires_at=attestation.expires_at,
            intent=intent.wire(),
            attestation=attestation.to_json(),
            status=status,
            facts=tuple(facts),
            registration=registration.to_json(),
            status_seq=status_seq,
        )

    def why_counted(self, at: int, seq: int | None = None) -> list[str]:
        """Why this task provably still counted at time ``at`` (empty: not provable), for the
        task recorded as ``seq``: a status read once that record existed (so at a gateway
        time past ``at``) that is not ``released`` shows it was never given back."""
        why = []
        if self.expires_at > at:
            why.append("live")
        if self.status == "committed":
            why.append("committed")
        elif (
            self.status in ("attested", "releasing") and seq is not None and self.status_seq >= seq
        ):
            why.append("not_released")
        why.extend(f.kind for f in self.facts)
        return why

    def with_fact(self, fact: ChainFact) -> Candidate:
        return self if fact in self.facts else replace(self, facts=(*self.facts, fact))

    def merged(self, other: Candidate) -> Candidate:
        facts = self.facts + tuple(f for f in other.facts if f not in self.facts)
        if other.status is None or other.status_seq < self.status_seq:
            return replace(self, facts=facts)
        return replace(self, facts=facts, status=other.status, status_seq=other.status_seq)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "policy_client": self.policy_client,
            "agent": self.agent,
            "asset": self.asset,
            "amount": str(self.amount),
            "now": self.now,
            "expires_at": self.expires_at,
            "intent": self.intent,
            "attestation": self.attestation,
            "status": self.status,
            "facts": [f.to_json() for f in self.facts],
            "registration": self.registration,
            "status_seq": self.status_seq,
        }


@dataclass(frozen=True)
class Totals:
    """One window's totals: tasks counted and amount per asset (lowercase)."""

    count: int = 0
    spent: Mapping[str, int] = field(default_factory=dict)

    def below(self, other: Totals) -> bool:
        """Whether any part of this is less than ``other``'s."""
        return self.count < other.count or any(
            self.spent.get(a, 0) < v for a, v in other.spent.items()
        )

    @classmethod
    def from_wasm(cls, raw: Any) -> Totals:
        """A recorded ``data.wasm.history`` entry (absent or malformed parts count as 0)."""
        if not isinstance(raw, Mapping):
            return cls()
        count = raw.get("count")
        spent = raw.get("spent")
        amounts: dict[str, int] = {}
        if isinstance(spent, Mapping):
            for asset, value in spent.items():
                if isinstance(value, str) and value.isdigit():
                    amounts[str(asset).lower()] = int(value)
        return cls(count if isinstance(count, int) and not isinstance(count, bool) else 0, amounts)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "spent": {a: str(v) for a, v in sorted(self.spent.items())}}


class HistoryIndex:
    """The allowed tasks the challenger knows, per (policy client, agent), merged by task id
    from the records and the chain; pruned to the longest window a watcher needs."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], dict[str, Candidate]] = {}

    def add(self, candidate: Candidate) -> Candidate:
        key = (candidate.policy_client, candidate.agent)
        held = self._tasks.setdefault(key, {})
        known = held.get(candidate.task_id)
        merged = candidate if known is None else known.merged(candidate)
        held[candidate.task_id] = merged
        return merged

    def get(self, policy_client: str, agent: str, task_id: str) -> Candidate | None:
        return self._tasks.get((policy_client.lower(), agent.lower()), {}).get(task_id.lower())

    def tasks(self, policy_client: str, agent: str) -> list[Candidate]:
        return list(self._tasks.get((policy_client.lower(), agent.lower()), {}).values())

    def all(self) -> Iterable[Candidate]:
        for held in self._tasks.values():
            yield from held.values()

    def prune(self, before: int) -> None:
        """Forget tasks created at or before ``before`` (outside every window still checked)."""
        for key in list(self._tasks):
            held = {t: c for t, c in self._tasks[key].items() if c.now > before}
            if held:
                self._tasks[key] = held
            else:
                del self._tasks[key]


def windows_of(registration: Registration, recorded: Mapping[str, Any]) -> list[int]:
    """The windows a task's history must have: those the gateway sends for this registration
    (``history_windows``), and 3600 and 86400 where the record holds them
    (earlier gateways also sent those). Any other key is one no honest gateway sent: read,
    it could crash the watch (``"²".isdigit()``, 5000 digits) or stretch its horizon."""
    found = set(history_windows(registration))
    found.update(w for w in EARLIER_DEFAULTS if str(w) in recorded)
    return sorted(found)


def lower_bound(
    candidates: Iterable[Candidate],
    *,
    task_id: str,
    at: int,
    windows: Sequence[int],
    seq: int | None = None,
) -> tuple[dict[int, Totals], list[tuple[Candidate, list[str]]]]:
    """Per window, the totals that provably counted at ``at`` (the task's ``now``), and the
    tasks behind them with the reasons each still counted."""
    counted: list[tuple[Candidate, list[str]]] = []
    horizon = max(windows, default=0)  # no window (params name none): nothing counts
    for c in sorted(candidates, key=lambda c: (c.now, c.task_id)):
        if c.task_id == task_id.lower() or not at - horizon < c.now < at:
            continue
        why = c.why_counted(at, seq)
        if why:
            counted.append((c, why))
    return _windowed([c for c, _ in counted], at, windows), counted


def _windowed(tasks: Sequence[Candidate], at: int, windows: Sequence[int]) -> dict[int, Totals]:
    """Per window, the count and amounts of ``tasks`` created inside it (``now > at - w``)."""
    totals: dict[int, Totals] = {}
    for seconds in windows:
        count, spent = 0, dict[str, int]()
        for c in tasks:
            if c.now > at - seconds:
                count += 1
                spent[c.asset] = spent.get(c.asset, 0) + c.amount
        totals[seconds] = Totals(count, spent)
    return totals


def upper_estimate(
    candidates: Iterable[Candidate], *, task_id: str, at: int, windows: Sequence[int]
) -> dict[int, Totals]:
    """What every recorded task could account for at ``at`` (same second included: it may
    have been in flight), released ones too: recorded totals above this are over-reported."""
    chosen = [c for c in candidates if c.task_id != task_id.lower() and c.now <= at]
    return _windowed(chosen, at, windows)


def recomputed_history(
    bound: Mapping[int, Totals], asset: str, amount: int
) -> dict[str, dict[str, Any]]:
    """``data.wasm.history`` as the gateway builds it (``_results.wasm_data``), from totals."""
    history: dict[str, dict[str, Any]] = {}
    for seconds, totals in sorted(bound.items()):
        spent = {a: str(v) for a, v in sorted(totals.spent.items())}
        projected = dict(spent)
        projected[asset.lower()] = str(totals.spent.get(asset.lower(), 0) + amount)
        history[str(seconds)] = {"count": totals.count, "spent": spent, "projected": projected}
    return history


@dataclass(frozen=True)
class HistoryCheck:
    """The comparison for one task: recorded against provable (and explainable) totals."""

    windows: tuple[int, ...]
    recorded: dict[int, Totals]
    bound: dict[int, Totals]
    counted: tuple[tuple[Candidate, tuple[str, ...]], ...]
    under: tuple[int, ...]  # windows whose recorded totals are below the bound
    over: tuple[int, ...]  # windows whose recorded totals exceed what records explain

    def extra(self) -> dict[str, Any]:
        """The record's evidence part (``extra["history"]``)."""
        return {
            "windows": list(self.windows),
            "recorded": {str(w): t.to_json() for w, t in sorted(self.recorded.items())},
            "recomputed": {str(w): t.to_json() for w, t in sorted(self.bound.items())},
            "under_reported": [str(w) for w in self.under],
            "counted": [{**c.to_json(), "why": list(why)} for c, why in self.counted],
            "assumes": "the policy is monotone in history (more counted never allows more)",
        }


def compare(
    recorded_history: Mapping[str, Any],
    candidates: Iterable[Candidate],
    *,
    task_id: str,
    at: int,
    windows: Sequence[int],
    seq: int | None = None,
) -> HistoryCheck:
    """Recorded ``data.wasm.history`` of task ``task_id`` (at ``at``, recorded as ``seq``)
    against the bound."""
    pool = list(candidates)
    bound, counted = lower_bound(pool, task_id=task_id, at=at, windows=windows, seq=seq)
    upper = upper_estimate(pool, task_id=task_id, at=at, windows=windows)
    recorded = {w: Totals.from_wasm(recorded_history.get(str(w))) for w in windows}
    under = tuple(w for w in windows if recorded[w].below(bound[w]))
    over = tuple(w for w in windows if upper[w].below(recorded[w]))
    return HistoryCheck(
        windows=tuple(windows),
        recorded=recorded,
        bound=bound,
        counted=tuple((c, tuple(why)) for c, why in counted),
        under=under,
        over=over,
    )


def proving_wasm(
    evidence: TaskEvidence, bound: Mapping[int, Totals], asset: str, amount: int
) -> dict[str, Any]:
    """The policy data a history proof evaluates on: the recorded one (its other fields are
    bound to the signed intent and expiry), with the bound as history and ``approved`` set
    (the flag is the gateway's word too: a proof must not rest on it, so it takes the value
    most favourable to the task, without re-checking any approval: evaluated as approved)."""
    return {
        **evidence.wasm,
        "approved": True,
        "history": recomputed_history(bound, asset, amount),
    }


@dataclass(frozen=True)
class HistoryFinding:
    """One task's history check: the comparison and, when the recorded totals fell below
    the bound, the decision the policy gives on the bound (``recomputed``)."""

    check: HistoryCheck
    signed: str
    recomputed: Recomputed | None = None
    wasm: dict[str, Any] | None = None
    group: tuple[tuple[TaskEvidence, Candidate], ...] = ()  # same-second tasks (see check_group)

    @property
    def proven(self) -> bool:
        """Stricter on provable history than what was signed: the gateway lied."""
        return self.recomputed is not None and _stricter(self.recomputed, self.signed)


def check_task(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    candidates: Iterable[Candidate],
    *,
    at: int,
    seq: int | None = None,
    engine: PolicyEngine | None = None,
) -> HistoryFinding:
    """Compare the task's recorded history with the provable bound from ``candidates`` (the
    same client's and agent's other allowed tasks) and, if it fell below, re-evaluate."""
    recorded = evidence.wasm.get("history")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    windows = windows_of(registration, recorded)
    check = compare(recorded, candidates, task_id=evidence.task_id, at=at, windows=windows, seq=seq)
    signed = str(evidence.attestation.get("decision"))
    if not check.under:
        return HistoryFinding(check, signed)
    spend = TransactionIntent.from_wire(evidence.intent).spend
    wasm = proving_wasm(evidence, check.bound, spend.asset, spend.amount)
    recomputed = reevaluate(
        replace(evidence, approval=None), registration, policy, wasm=wasm, engine=engine
    )
    return HistoryFinding(check, signed, recomputed, wasm)


def _stricter(recomputed: Recomputed, signed: str) -> bool:
    return DECISION_RANK.get(recomputed.decision, 0) > DECISION_RANK.get(signed, 2)


def _plus(bound: Mapping[int, Totals], tasks: Sequence[Candidate]) -> dict[int, Totals]:
    """``bound`` with ``tasks`` (all of the task's own second: inside every window) added."""
    totals: dict[int, Totals] = {}
    for seconds, held in bound.items():
        spent = dict(held.spent)
        for c in tasks:
            spent[c.asset] = spent.get(c.asset, 0) + c.amount
        totals[seconds] = Totals(held.count + len(tasks), spent)
    return totals


def check_group(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    candidates: Iterable[Candidate],
    members: Sequence[tuple[TaskEvidence, Candidate]],
    *,
    at: int,
    seq: int | None = None,
    engine: PolicyEngine | None = None,
) -> HistoryFinding:
    """Tasks of one second cannot be ordered, but an honest gateway reserves them one at a
    time, so the last of them saw all the others (in flight or recorded) on top of what
    counted before that second. If every one of them (``evidence`` and ``members``: allowed
    tasks of the same client, agent, policy id and second) is refused by the policy on that
    history, whichever came last was allowed on under-reported history: proven, without
    knowing which one. (Any subset of a second's tasks proves the same; a task that cannot
    be evaluated is simply left out.)"""
    pool = list(candidates)
    recorded = evidence.wasm.get("history")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    windows = windows_of(registration, recorded)
    check = compare(recorded, pool, task_id=evidence.task_id, at=at, windows=windows, seq=seq)
    signed = str(evidence.attestation.get("decision"))
    own = next((c for c in pool if c.task_id == evidence.task_id.lower()), None)
    if own is None or not members:
        return HistoryFinding(check, signed)
    group = [(evidence, own), *members]
    found: tuple[Recomputed, dict[str, Any]] | None = None
    for ev, candidate in group:
        others = [c for _, c in group if c.task_id != candidate.task_id]
        wasm = proving_wasm(ev, _plus(check.bound, others), candidate.asset, candidate.amount)
        recomputed = reevaluate(
            replace(ev, approval=None), registration, policy, wasm=wasm, engine=engine
        )
        if not _stricter(recomputed, str(ev.attestation.get("decision"))):
            return HistoryFinding(check, signed)
        if found is None:
            found = (recomputed, wasm)
    assert found is not None
    return HistoryFinding(check, signed, found[0], found[1], tuple(members))


HISTORY_NOTE = (
    "the gateway handed the operators history below what provably counted; the operators "
    "signed honestly on false data (they are not wrong signers)"
)


def history_extra(finding: HistoryFinding, quorum: Quorum) -> dict[str, Any]:
    """The evidence a ``history`` record carries besides the task itself: the earlier
    attestations (with signatures) and chain facts behind the bound, the operator set, and
    the policy data the task should have been evaluated on."""
    history = finding.check.extra()
    if finding.group:
        history["same_second"] = [
            {**c.to_json(), "wasm": ev.wasm, "approval": ev.approval, "request_id": ev.request_id}
            for ev, c in finding.group
        ]
        history["claim"] = (
            "this task and the same_second ones were created in one second; the last of them "
            "the gateway reserved saw all the others, and the policy refuses each of them on "
            "that history: one of them was allowed on under-reported history"
        )
    return {
        "history": history,
        "quorum": quorum.to_json(),
        "signed_decision": finding.signed,
        "recomputed_wasm": finding.wasm,
        "note": HISTORY_NOTE,
    }


@dataclass(frozen=True)
class HistoryVerdict:
    """What re-checking a ``history`` record found."""

    proven: bool
    recomputed: Recomputed | None
    notes: tuple[str, ...]
    wasm: dict[str, Any] | None = None


def _rebuild(
    entry: Mapping[str, Any], task: TaskEvidence, quorum: Quorum
) -> tuple[Candidate | None, str]:
    """One counted task of a record, every part re-checked offline (None: refused, and why)."""
    try:
        intent = TransactionIntent.from_wire(entry["intent"])
        attestation = Attestation.from_json(entry["attestation"])
        registration = Registration.from_json(entry["registration"])
        facts = tuple(ChainFact.from_json(f) for f in entry.get("facts") or ())
        status = entry.get("status")
    except (AgentGuardError, KeyError, TypeError, ValueError) as exc:
        return None, f"a counted task is malformed ({exc})"
    task_id = "0x" + attestation.task_id.hex()
    why_not = quorum.signed(attestation, intent)
    if why_not is not None:
        return None, why_not
    if attestation.policy_client.lower() != task.policy_client.lower():
        return None, f"task {task_id} is another policy client's"
    if intent.from_.lower() != str(task.intent.get("from", "")).lower():
        return None, f"task {task_id} is another agent's"
    try:
        candidate = Candidate.of(
            intent,
            attestation,
            registration,
            status=status if isinstance(status, str) else None,
            status_seq=1 << 62,  # a record's status is as the challenger read it: see notes
            facts=facts,
        )
    except ValueError as exc:
        return None, f"task {task_id}: {exc}"
    for fact in facts:
        mismatch = fact.proves_use_of(intent, task_id)
        if mismatch is not None:
            return None, f"task {task_id}: {mismatch}"
    return candidate, ""


def verify_history(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    extra: Mapping[str, Any],
    *,
    rpc: str | None = None,
    engine: PolicyEngine | None = None,
    operators: frozenset[str] | None = None,
) -> HistoryVerdict:
    """Re-check a ``history`` record: every earlier attestation's signatures against the
    stated operator set, each counted task's time and window arithmetic, the bound, and the
    re-evaluation on it. Chain facts are read again only with ``rpc`` (otherwise the tasks
    that need them are left out of the bound, and a note says so). ``operators``: the set the
    verifier trusts; the record's own set must be within it (else keys the forger holds could
    sign the "earlier allowed" tasks that make the bound)."""
    notes: list[str] = []
    try:
        quorum = Quorum.from_json(extra["quorum"])
        counted = list(extra["history"]["counted"])
    except (KeyError, TypeError, ValueError) as exc:
        return HistoryVerdict(False, None, (f"the history evidence is malformed ({exc})",))
    if operators is not None and not quorum.operators <= operators:
        outside = sorted(quorum.operators - operators)
        return HistoryVerdict(
            False,
            None,
            (f"the record's operator set has keys outside the operators given: {outside[:5]}",),
        )
    intent = TransactionIntent.from_wire(evidence.intent)
    attestation = Attestation.from_json(evidence.attestation)
    why_not = quorum.signed(attestation, intent)
    if why_not is not None:
        return HistoryVerdict(False, None, (why_not,))
    w3 = None
    if rpc is not None:
        from agentguard._redact import register_url_secrets

        register_url_secrets(rpc)
        w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10}))
    notes.extend(_quorum_notes(quorum, evidence.policy_client, w3))
    candidates: dict[str, Candidate] = {}
    for entry in counted:
        candidate, why = (
            _rebuild(entry, evidence, quorum)
            if isinstance(entry, Mapping)
            else (
                None,
                "a counted task is not an object",
            )
        )
        if candidate is None:
            notes.append(f"left out of the bound: {why}")
            continue
        candidates[candidate.task_id] = _checked_facts(candidate, w3, notes)
    at = attestation.expires_at - registration.expire_after
    members = _members(extra["history"].get("same_second") or [], evidence, quorum, at, notes)
    # a task's status is the gateway's word as the challenger read it: no signature covers it
    pool = [replace(c, status=None) for c in candidates.values()]
    members = [(ev, replace(c, status=None)) for ev, c in members]
    if members:
        own = Candidate.of(intent, attestation, registration)
        finding = check_group(
            evidence, registration, policy, [*pool, own], members, at=at, seq=0, engine=engine
        )
    else:
        finding = check_task(evidence, registration, policy, pool, at=at, seq=0, engine=engine)
    finding = replace(finding, signed=attestation.decision)
    if not finding.proven and any(c.status for c in candidates.values()):
        notes.append(
            "the record counts tasks on the statuses the gateway's records gave them "
            "(committed, not released), which no signature covers: not proven offline"
        )
    if not finding.check.under:
        notes.append("the recorded history is not below what the record proves counted")
    return HistoryVerdict(finding.proven, finding.recomputed, tuple(notes), finding.wasm)


def _members(
    raw: Any, task: TaskEvidence, quorum: Quorum, at: int, notes: list[str]
) -> list[tuple[TaskEvidence, Candidate]]:
    """A record's same-second tasks, each re-checked like a counted one, of this very second
    and policy id, with the policy data it was evaluated on."""
    members: list[tuple[TaskEvidence, Candidate]] = []
    policy_id = str(task.attestation.get("policy_id", "")).lower()
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, Mapping):
            notes.append("left out of the same second: not an object")
            continue
        candidate, why = _rebuild(entry, task, quorum)
        wasm = entry.get("wasm")
        if candidate is None or not isinstance(wasm, dict):
            notes.append(f"left out of the same second: {why or 'no policy data'}")
            continue
        if candidate.now != at or str(candidate.attestation.get("policy_id")).lower() != (
            policy_id
        ):
            notes.append(f"left out: task {candidate.task_id} is not of this second and policy")
            continue
        approval, request_id = entry.get("approval"), entry.get("request_id")
        members.append(
            (
                TaskEvidence(
                    task_id=candidate.task_id,
                    policy_client=task.policy_client,
                    intent=candidate.intent,
                    wasm=wasm,
                    attestation=candidate.attestation,
                    created_at=candidate.now,
                    source="record",
                    approval=approval if isinstance(approval, dict) else None,
                    request_id=request_id if isinstance(request_id, str) else None,
                ),
                candidate,
            )
        )
    return members


def _checked_facts(candidate: Candidate, w3: Web3 | None, notes: list[str]) -> Candidate:
    """Keep only the chain facts the node confirms (none without a node: noted)."""
    if not candidate.facts:
        return candidate
    if w3 is None:
        notes.append(
            f"chain facts of task {candidate.task_id} were not re-checked (no rpc given): "
            "left out of the bound"
        )
        return replace(candidate, facts=())
    kept = []
    for fact in candidate.facts:
        try:
            why = recheck_fact(w3, fact)
        except AgentGuardError as exc:
            why = exc.message
        if why is None:
            kept.append(fact)
        else:
            notes.append(f"a chain fact of task {candidate.task_id} does not hold: {why}")
    return replace(candidate, facts=tuple(kept))


def _quorum_notes(quorum: Quorum, policy_client: str, w3: Web3 | None) -> list[str]:
    """The operator set is the record's statement; a vault's own set is read with a node."""
    if w3 is None:
        return [
            f"the operator set is as the record states it (source: {quorum.source}); give an "
            "rpc to compare it with a vault's onchain operators"
        ]
    from eth_utils.address import to_checksum_address

    address = to_checksum_address(policy_client)
    if not w3.eth.get_code(address):
        return ["the policy client has no code: the operator set is as the record states it"]
    try:
        onchain, threshold = vault_operators(w3, address)
    except Exception:  # not a vault: nothing to compare with
        return ["the policy client is not a vault: the operator set is as the record states it"]
    if not quorum.operators <= onchain or quorum.threshold < threshold:
        return [
            "the record's operator set is not the vault's current one (rotated since?): "
            f"vault operators {sorted(onchain)}, threshold {threshold}"
        ]
    return ["the operator set is within the vault's current operators"]


def history_record(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    finding: HistoryFinding,
    quorum: Quorum,
) -> dict[str, Any]:
    """The ``history`` challenge record of a proven finding (no wrong signers: the gateway
    lied, the operators signed honestly on what it handed them)."""
    assert finding.recomputed is not None
    return build_record(
        evidence,
        registration,
        policy,
        finding.recomputed,
        kind="history",
        wrong_signers=[],
        extra=history_extra(finding, quorum),
    )


def _history_kind(context: RecordContext) -> KindResult:
    """``verify_record``'s checker for ``history`` records (see ``verify_history``)."""
    extra = context.record.get("extra")
    if not isinstance(extra, Mapping):
        raise NotProven("a history record carries its evidence in extra; this one has none")
    verdict = verify_history(
        context.evidence,
        context.registration,
        context.policy,
        extra,
        rpc=context.rpc,
        operators=context.operators,
    )
    if not verdict.proven or verdict.wasm is None:
        reason = "; ".join(verdict.notes) or "the recomputed history changes nothing"
        raise NotProven(f"the history evidence proves no discrepancy: {reason}")
    return KindResult(verdict.wasm, notes=list(verdict.notes), blames_operators=False)


register_kind("history", _history_kind)
