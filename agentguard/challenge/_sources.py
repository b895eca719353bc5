"""Where the challenger reads evidence and policy material from, each trusted for nothing:

* ``StateSource``: the reference network's own records (``open_state``: a SQLite path or a
  PostgreSQL URL), read directly.
* ``GatewaySource``: a gateway's read-only auditor methods (``agentguard_tasks``,
  ``agentguard_policyVersion``) with an API key; it may lie, so only what the signatures and
  hashes prove is used.
* ``AuditSource``: an agent's audit log (``authorized`` records with their policy data).
* ``PolicyDir``: registrations held locally, one JSON file per configuration:
  ``{"registration": {...owner-signed...}, "policy": <material or a policy folder path>}``.

Every source yields ``(cursor, TaskEvidence)`` oldest first; a record it cannot read becomes a
``Skipped`` entry, never an exception that ends the run.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from agentguard._exceptions import AgentGuardError, ChallengeError, ConfigurationError
from agentguard._json import strict_loads
from agentguard.audit import parse_line
from agentguard.challenge._evidence import TaskEvidence, evidence_from_result
from agentguard.network.registration import Registration
from agentguard.network.state import (
    PolicyClientRecord,
    State,
    open_state,
    policy_from_material,
)
from agentguard.network.state._spec import parse_spec
from agentguard.policies import Policy

__all__ = [
    "AuditSource",
    "GatewaySource",
    "Materials",
    "PolicyDir",
    "Skipped",
    "Source",
    "StateSource",
]

MAX_ANSWER_BYTES = 64 << 20
_PAGE = 200


@dataclass(frozen=True)
class Skipped:
    """A record the source holds that is no evidence (unreadable, or without policy data)."""

    cursor: int
    task_id: str
    why: str


Item = tuple[int, TaskEvidence | Skipped]


class Source(Protocol):
    name: str

    def evidence(self, *, after: int, limit: int | None) -> Iterator[Item]: ...

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None: ...

    def close(self) -> None: ...


def _material(record: PolicyClientRecord | None) -> tuple[Registration, Policy] | None:
    return None if record is None else (record.registration, record.policy)


def _from_result(cursor: int, result: Any, created_at: int, source: str) -> Item:
    task_id = str(result.get("task_id", "?"))[:80] if isinstance(result, dict) else "?"
    try:
        if not isinstance(result, dict):
            raise ChallengeError("the task's result is not an object")
        return cursor, evidence_from_result(result, created_at=created_at, source=source)
    except ChallengeError as exc:
        return cursor, Skipped(cursor, task_id, exc.message)


class StateSource:
    """The network's records, read from its state (SQLite path or PostgreSQL URL)."""

    def __init__(self, spec: str, *, policy_client: str | None = None) -> None:
        self.name = "state"
        _check_sqlite_state(spec)
        try:
            self._state: State = open_state(spec)
        except sqlite3.Error as exc:
            raise ChallengeError(f"cannot open the state: {exc}") from None
        self._client = policy_client

    def evidence(self, *, after: int, limit: int | None) -> Iterator[Item]:
        left = limit
        while left is None or left > 0:
            page = self._state.tasks(
                after=after,
                limit=_PAGE if left is None else min(left, _PAGE),
                policy_client=self._client,
            )
            if not page:
                return
            for task in page:
                yield _from_result(task.seq, task.result, task.created_at, self.name)
            after = page[-1].seq
            left = None if left is None else left - len(page)

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None:
        return _material(self._state.policy_version(policy_id))

    def close(self) -> None:
        self._state.close()


def _check_sqlite_state(spec: str) -> None:
    """A SQLite ``spec`` must be an existing gateway state: opening a state creates its
    tables, and a challenger must not create a file, or tables in someone else's database."""
    kind, target, _ = parse_spec(spec)
    if kind != "sqlite":
        return
    if not Path(target).is_file():
        raise ConfigurationError(f"--state: no gateway state file at {target}")
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{Path(target).resolve()}?mode=ro", uri=True)
        ) as db:
            found = db.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                "('tasks', 'registrations', 'policies')"
            ).fetchone()[0]
    except sqlite3.Error as exc:
        raise ConfigurationError(f"--state: {target} is not a SQLite file ({exc})") from None
    if found != 3:
        raise ConfigurationError(f"--state: {target} is not a gateway's state")


class GatewaySource:
    """A gateway's auditor methods, with an API key (a client's key sees its clients only)."""

    def __init__(
        self, url: str, api_key: str, *, policy_client: str | None = None, timeout: float = 30.0
    ) -> None:
        self.name = "gateway"
        self._url = (
            url.rstrip("/") if url.rstrip("/").endswith("/rpc") else url.rstrip("/") + "/rpc"
        )
        self._client = policy_client
        try:
            parsed = httpx.URL(self._url)
            # what errors show: never a password or a query string the URL may carry
            self._shown = f"{parsed.scheme}://{parsed.host}:{parsed.port or ''}{parsed.path}"
        except (httpx.InvalidURL, TypeError):
            raise ConfigurationError("--gateway is not a URL") from None
        self._http = httpx.Client(
            headers={"authorization": f"Bearer {api_key}"}, timeout=timeout, follow_redirects=False
        )

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params}
        try:
            with self._http.stream("POST", self._url, json=body) as response:
                raw = bytearray()
                for chunk in response.iter_raw():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise ChallengeError(f"the gateway's {method} answer is too large")
        except httpx.HTTPError as exc:
            raise ChallengeError(
                f"cannot reach the gateway at {self._shown} ({type(exc).__name__})"
            ) from None
        try:
            doc = strict_loads(bytes(raw))
        except ValueError as exc:
            raise ChallengeError(f"the gateway's {method} answer is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ChallengeError(f"the gateway's {method} answer is not a JSON-RPC object")
        error = doc.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            raise ChallengeError(f"the gateway refused {method}: {str(message)[:300]}")
        return doc.get("result")

    def evidence(self, *, after: int, limit: int | None) -> Iterator[Item]:
        left = limit
        while left is None or left > 0:
            params: dict[str, Any] = {
                "after": after,
                "limit": _PAGE if left is None else min(left, _PAGE),
            }
            if self._client is not None:
                params["policy_client"] = self._client
            answer = self._call("agentguard_tasks", params)
            tasks = answer.get("tasks") if isinstance(answer, dict) else None
            if not isinstance(tasks, list):
                raise ChallengeError("the gateway's agentguard_tasks answer has no task list")
            if not tasks:
                return
            for task in tasks:
                seq = task.get("seq") if isinstance(task, dict) else None
                if isinstance(seq, bool) or not isinstance(seq, int) or seq <= after:
                    raise ChallengeError("the gateway's task list is not ordered by its cursor")
                created = task.get("created_at")
                yield _from_result(
                    seq, task.get("result"), created if isinstance(created, int) else 0, self.name
                )
                after = seq
            left = None if left is None else left - len(tasks)

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None:
        try:
            answer = self._call("agentguard_policyVersion", {"policy_id": policy_id})
        except ChallengeError:
            return None
        return _parse_material(answer, f"the gateway's registration {policy_id}")

    def close(self) -> None:
        self._http.close()


def _parse_material(doc: Any, where: str, base: Path | None = None) -> tuple[Registration, Policy]:
    """``{registration, policy}``: the owner's signature verified, the material parsed (a
    policy folder path relative to ``base`` when reading a local file)."""
    if not isinstance(doc, dict):
        raise ChallengeError(f"{where} is not an object {{registration, policy}}")
    try:
        registration = Registration.from_json(doc.get("registration"))
        spec = doc.get("policy")
        if isinstance(spec, str) and base is not None:
            policy = Policy.from_dir(base / spec)
        elif isinstance(spec, dict):
            policy = policy_from_material(spec)
        else:
            raise ChallengeError(f"{where}: policy must be the policy material")
    except (AgentGuardError, ValueError, OSError) as exc:
        raise ChallengeError(f"{where}: {getattr(exc, 'message', exc)}") from None
    return registration, policy


class PolicyDir:
    """Registrations held locally (see the module docstring), by policy id."""

    def __init__(self, directory: str | Path) -> None:
        self._by_id: dict[str, tuple[Registration, Policy]] = {}
        folder = Path(directory)
        if not folder.is_dir():
            raise ConfigurationError(f"--policy-dir {folder} is not a folder")
        for path in sorted(folder.glob("*.json")):
            try:
                doc = strict_loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ChallengeError(f"{path} is not a JSON file: {exc}") from None
            registration, policy = _parse_material(doc, str(path), base=folder)
            self._by_id["0x" + registration.policy_id.hex()] = (registration, policy)

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None:
        return self._by_id.get(policy_id.lower())


class AuditSource:
    """An agent's audit log: its ``authorized`` records (a record without policy data, from
    before it was kept or from a Newton gateway, is skipped and reported)."""

    def __init__(self, path: str | Path, *, policy_client: str | None = None) -> None:
        self.name = "audit"
        self._path = Path(path)
        self._client = None if policy_client is None else policy_client.lower()
        if not self._path.is_file():
            raise ConfigurationError(f"--audit {self._path} is not a file")

    def evidence(self, *, after: int, limit: int | None) -> Iterator[Item]:
        count = 0
        with self._path.open("rb") as lines:
            for raw in lines:
                try:
                    entry = parse_line(raw)
                except ValueError:
                    continue  # `agentguard audit verify` reports a damaged log
                if entry.seq <= after or entry.kind != "authorized":
                    continue
                attestation = entry.record.get("attestation")
                client = attestation.get("policy_client") if isinstance(attestation, dict) else None
                if self._client is not None and str(client).lower() != self._client:
                    continue
                if limit is not None and count >= limit:
                    return
                count += 1
                yield entry.seq, _audit_evidence(entry.seq, entry.record)

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None:
        return None

    def close(self) -> None:
        pass


def _audit_evidence(seq: int, record: dict[str, Any]) -> TaskEvidence | Skipped:
    attestation, intent, data = (
        record.get("attestation"),
        record.get("intent"),
        record.get("policy_data"),
    )
    task_id = attestation.get("task_id") if isinstance(attestation, dict) else None
    shown = str(task_id)[:80]
    if not isinstance(attestation, dict) or not isinstance(intent, dict):
        return Skipped(seq, shown, "the authorized record has no attestation or intent")
    if not isinstance(data, dict):
        return Skipped(seq, shown, "no policy data recorded (a Newton gateway, or an older log)")
    client, now = attestation.get("policy_client"), data.get("now")
    if not isinstance(task_id, str) or not isinstance(client, str):
        return Skipped(seq, shown, "the attestation has no task id or policy client")
    return TaskEvidence(
        task_id=task_id,
        policy_client=client,
        intent=intent,
        wasm=data,
        attestation=attestation,
        created_at=now if isinstance(now, int) and not isinstance(now, bool) else 0,
        source="audit",
    )


class Materials:
    """The registration behind a policy id: from local files first, then the sources."""

    def __init__(self, *lookups: Any) -> None:
        self._lookups = [x for x in lookups if x is not None]
        self._cache: dict[str, tuple[Registration, Policy] | None] = {}

    def get(self, policy_id: str) -> tuple[Registration, Policy] | None:
        key = policy_id.lower()
        if key not in self._cache:
            found = None
            for lookup in self._lookups:
                found = lookup.registration(key)
                if found is not None:
                    break
            self._cache[key] = found
        return self._cache[key]


def material_file(registration: Registration, policy: Policy) -> str:
    """A ``PolicyDir`` file's content for one configuration."""
    from agentguard.network.state import policy_material

    return json.dumps(
        {"registration": registration.to_json(), "policy": policy_material(policy)}, indent=2
    )
