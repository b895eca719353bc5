"""What a challenger tells a vault owner: which operator keys signed wrong results, and
what the gateway was caught doing.

Operators are named only for ``decision`` records (they signed a result the policy does not
give on the inputs they were handed). A ``history`` record proves the *gateway* handed them
false totals: the operators evaluated honestly on false data, so they are not listed as
wrong signers; the gateway's part is counted separately, with the Executed events it kept
out of its records and the totals it over-reported (a warning: that only hurt the agent).
The owner rotates the named keys out with ``setOperators``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_WARNINGS", "Report"]

MAX_WARNINGS = 1000


@dataclass
class Report:
    """Accumulated over one watch run."""

    checked: int = 0
    bounded: int = 0  # tasks whose provable history was not empty (the check had teeth)
    operators: dict[str, list[str]] = field(default_factory=dict)  # operator -> task ids
    history: list[str] = field(default_factory=list)  # task ids the gateway lied about
    on_records: list[str] = field(default_factory=list)  # of those: shown by its records only
    unrecorded: list[dict[str, Any]] = field(default_factory=list)  # Executed, no record
    warnings: list[dict[str, Any]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # files written
    paused: list[dict[str, Any]] = field(default_factory=list)
    warned: int = 0  # warnings in all (only the first MAX_WARNINGS are kept)
    retried: int = 0  # times a task could not be judged and was tried again later

    def warn(self, task_id: str, warning: str) -> None:
        """Kept up to ``MAX_WARNINGS`` (a long watch must not grow without bound); counted."""
        self.warned += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append({"task_id": task_id, "warning": warning})

    def wrong_signers(self, task_id: str, signers: Iterable[str]) -> None:
        for operator in signers:
            ids = self.operators.setdefault(operator.lower(), [])
            if task_id not in ids:
                ids.append(task_id)

    def lied_about_history(self, task_id: str) -> None:
        if task_id not in self.history:
            self.history.append(task_id)

    @property
    def proven(self) -> int:
        """Tasks with a proven discrepancy (either kind)."""
        return len({t for ids in self.operators.values() for t in ids} | set(self.history))

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "bounded": self.bounded,
            "proven": self.proven,
            "operators": [
                {"operator": op, "count": len(ids), "task_ids": list(ids)}
                for op, ids in sorted(self.operators.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            ],
            "gateway": {
                "history_lies": {"count": len(self.history), "task_ids": list(self.history)},
                "history_lies_on_its_records_only": list(self.on_records),
                "unrecorded_executions": list(self.unrecorded),
            },
            "warnings": list(self.warnings),
            "warned": self.warned,
            "records": list(self.records),
            "paused": list(self.paused),
            "retried": self.retried,
        }

    def text(self) -> str:
        """For a person: what to rotate out, what the gateway did, what was paused."""
        lines = [f"checked {self.checked} task(s); {self.proven} proven discrepancy(ies)"]
        for entry in self.to_json()["operators"]:
            shown = ", ".join(entry["task_ids"][:5]) + (" …" if entry["count"] > 5 else "")
            lines.append(
                f"operator {entry['operator']} signed {entry['count']} wrong result(s): {shown}"
                " — rotate it out with setOperators"
            )
        if self.history:
            lines.append(
                f"the gateway under-reported history for {len(self.history)} task(s) "
                f"({', '.join(self.history[:5])}{' …' if len(self.history) > 5 else ''}); "
                "the operators signed honestly on false data"
            )
        if self.on_records:
            lines.append(
                f"{len(self.on_records)} of them shown only by the gateway's own records (task "
                "statuses no signature covers): their records do not verify offline"
            )
        for item in self.unrecorded:
            lines.append(
                f"vault {item['vault']} executed task {item['task_id']} "
                f"(tx {item['tx_hash']}), which the gateway's records do not hold"
            )
        for item in self.paused:
            state = "paused" if item.get("paused") else f"NOT paused: {item.get('error')}"
            lines.append(f"vault {item['vault']}: {state}")
        if self.retried:
            lines.append(
                f"{self.retried} time(s) a task could not be judged (probe out of time, or no "
                "child process) and was tried again"
            )
        if self.warned:
            lines.append(f"{self.warned} warning(s) (over-reported totals, unreadable records)")
        return "\n".join(lines)
