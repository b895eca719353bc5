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
  ``committed`` (never given back), or if it provably landed onchain (``executed``: the
  vault's ``Executed`` event; ``authorization_used``: a vault x402 payment's EIP-3009 nonce;
  ``transaction``: an EOA's transaction of exactly the intent), which no honest gateway gives
  back.

If the recorded totals are below that bound in any window, the task is re-evaluated with the
bound as its history; a stricter decision than the one signed is a proven ``history``
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

from agentguard._attestation import Attestation, recover_signer
from agentguard._exceptions import AgentGuardError
from agentguard._intent import TransactionIntent
from agentguard.challenge._chain import ChainFact
from agentguard.challenge._evaluate import Recomputed, reevaluate
from agentguard.challenge._evidence import TaskEvidence
from agentguard.network.gateway._registry import _windows as registered_windows
from agentguard.network.registration import Registration
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine

__all__ = [
    "Candidate",
    "HistoryCheck",
    "HistoryFinding",
    "HistoryIndex",
    "Quorum",
    "Totals",
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

    @classmethod
    def of(
        cls,
        intent: TransactionIntent,
        attestation: Attestation,
        registration: Registration,
        *,
        status: str | None = None,
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
        )

    def why_counted(self, at: int) -> list[str]:
        """Why this task provably still counted at time ``at`` (empty: not provable)."""
        why = []
        if self.expires_at > at:
            why.append("live")
        if self.status == "committed":
            why.append("committed")
        why.extend(f.kind for f in self.facts)
        return why

    def merged(self, other: Candidate) -> Candidate:
        facts = self.facts + tuple(f for f in other.facts if f not in self.facts)
        return replace(self, facts=facts, status=other.status or self.status)

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
    """The windows a task's history must have: every ``window_seconds`` in the registered
    params plus 3600 and 86400 (as the gateway computes them), and any the record holds."""
    found = set(registered_windows(registration.params))
    for key in recorded:
        if isinstance(key, str) and key.isdigit():
            found.add(int(key))
    return sorted(found)


def lower_bound(
    candidates: Iterable[Candidate], *, task_id: str, at: int, windows: Sequence[int]
) -> tuple[dict[int, Totals], list[tuple[Candidate, list[str]]]]:
    """Per window, the totals that provably counted at ``at`` (the task's ``now``), and the
    tasks behind them with the reasons each still counted."""
    counted: list[tuple[Candidate, list[str]]] = []
    horizon = max(windows)
    for c in sorted(candidates, key=lambda c: (c.now, c.task_id)):
        if c.task_id == task_id.lower() or not at - horizon < c.now < at:
            continue
        why = c.why_counted(at)
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
) -> HistoryCheck:
    """Recorded ``data.wasm.history`` of task ``task_id`` (at ``at``) against the bound."""
    pool = list(candidates)
    bound, counted = lower_bound(pool, task_id=task_id, at=at, windows=windows)
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


@dataclass(frozen=True)
class HistoryFinding:
    """One task's history check: the comparison and, when the recorded totals fell below
    the bound, the decision the policy gives on the bound (``recomputed``)."""

    check: HistoryCheck
    signed: str
    recomputed: Recomputed | None = None
    wasm: dict[str, Any] | None = None

    @property
    def proven(self) -> bool:
        """Stricter on provable history than what was signed: the gateway lied."""
        return self.recomputed is not None and DECISION_RANK.get(
            self.recomputed.decision, 0
        ) > DECISION_RANK.get(self.signed, 2)


def check_task(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    candidates: Iterable[Candidate],
    *,
    at: int,
    engine: PolicyEngine | None = None,
) -> HistoryFinding:
    """Compare the task's recorded history with the provable bound from ``candidates`` (the
    same client's and agent's other allowed tasks) and, if it fell below, re-evaluate."""
    recorded = evidence.wasm.get("history")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    windows = windows_of(registration, recorded)
    check = compare(recorded, candidates, task_id=evidence.task_id, at=at, windows=windows)
    signed = str(evidence.attestation.get("decision"))
    if not check.under:
        return HistoryFinding(check, signed)
    spend = TransactionIntent.from_wire(evidence.intent).spend
    wasm = {
        **evidence.wasm,
        "history": recomputed_history(check.bound, spend.asset, spend.amount),
    }
    recomputed = reevaluate(evidence, registration, policy, wasm=wasm, engine=engine)
    return HistoryFinding(check, signed, recomputed, wasm)
