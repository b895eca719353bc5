"""A hash-chained, append-only record of every decision: authorized, denied, signed, sent,
committed, released, payment_settled.

Format: JSON Lines, one entry per line. Chosen over a SQLite table because an auditor needs
nothing but a text editor, ``sha256`` and a JSON parser to read and check it; ``tail -f`` and log
shippers work unchanged; and appends (``O_APPEND``, one ``write`` per entry) never rewrite a byte
already written. Processes sharing one file take an exclusive ``flock`` around "read the last
entry, append the next", so the chain stays linear across processes and threads.

Each entry is ``{seq, ts, kind, record, prev_hash, hash}`` with
``hash = sha256(canonical_json({seq, ts, kind, record, prev_hash}))`` (``canonical_json`` as in
``docs/architecture.md``) and ``prev_hash`` the previous entry's hash (64 zeros for the first).
So an edited, deleted, reordered or inserted entry breaks the chain at that entry, which
``verify`` reports. ``verify`` checks the bytes as written: each line must be exactly the
canonical JSON of its entry, so no line can read one way to ``grep`` and another to a parser
(duplicate keys, ``\\u`` escapes, extra whitespace) while its hash still checks out, and
record strings never carry a character that a reader may take for a line break or that hides or
reorders text (see ``_DISGUISING``): ``append`` spells it ``\\uXXXX``. A chain
cannot show that entries were cut from its *end*, or that it was rewritten wholesale: anchor its
head (``AuditLog.head()``) somewhere the writer cannot edit, and pass it to
``verify(expected_head=...)``.

Every record passes the redaction chain first (``agentguard._redact``: secret-named keys, bearer
tokens, registered secrets; plus key material under short names here), after being reduced to
plain JSON: bytes become ``0x`` hex and integers beyond 2^53 become decimal strings, so verifiers
in any language re-serialize a record to the same bytes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentguard._exceptions import ConfigurationError
from agentguard._json import _check_depth, canonical_json
from agentguard._redact import PROCESSORS as REDACTION

__all__ = [
    "GENESIS",
    "PROCESSORS",
    "AuditLog",
    "Entry",
    "VerifyReport",
    "entry_hash",
    "parse_line",
    "to_json",
]

GENESIS = "0" * 64
Processor = Callable[[Any], Any]

_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_HASH = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("seq", "ts", "kind", "record", "prev_hash", "hash")
_SAFE_INT = 2**53 - 1
_MAX_DEPTH = 64
"""Deepest nesting of a line, written or read: checked before ``json.loads``, whose C decoder
trusts the recursion limit (py_ecc, which web3 imports, raises it to 100,000) and would
overflow the C stack on an edited line nested 100,000 deep: a crash, not a refusal."""
# What JSON leaves raw but a reader does not see as written: characters some editors and
# ``str.splitlines`` take for a line break (U+0085, U+2028, U+2029; JSON escapes C0 controls
# itself), other C1 controls and DEL (terminal escapes), bidi controls that reorder text on
# screen, zero-width characters that hide inside a word from ``grep``, and lone surrogates (no
# UTF-8 form at all). ``append`` writes each as the visible text ``\uXXXX``; ``verify``
# refuses a line that carries one raw.
_DISGUISING = re.compile(
    "[\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def entry_hash(seq: int, ts: str, kind: str, record: Any, prev_hash: str) -> str:
    """The hash that chains an entry to the one before it (over its canonical JSON)."""
    body = {"seq": seq, "ts": ts, "kind": kind, "record": record, "prev_hash": prev_hash}
    return hashlib.sha256(canonical_json(body)).hexdigest()


# -- the record processors: small plain functions, applied in order --------------------------


def to_json(value: Any) -> Any:
    """Reduce a record to plain JSON without ever calling ``repr`` on an unknown object."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    wire = getattr(value, "to_json", None) or getattr(value, "wire", None)
    if callable(wire):  # Attestation.to_json(), intent.wire(): the documented wire forms
        return to_json(wire())
    if isinstance(value, BaseModel):
        return to_json(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return f"<{type(value).__name__}>"  # keys, accounts, clients: never their repr


PROCESSORS: tuple[Processor, ...] = (to_json, *REDACTION)


def _visible(value: Any) -> Any:
    """``value`` with every disguising character in its strings (keys too) spelled ``\\uXXXX``,
    so an entry is one line that reads the same in any editor, terminal or line splitter, and a
    lone surrogate (from a server's JSON ``"\\ud800"``) cannot make ``append`` fail."""
    if isinstance(value, str):
        return _DISGUISING.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {_visible(k): _visible(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_visible(v) for v in value]
    return value


# -- entries and verification ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    ts: str
    kind: str
    record: dict[str, Any]
    prev_hash: str
    hash: str

    def line(self) -> bytes:
        return canonical_json(dataclasses.asdict(self)) + b"\n"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``ok`` or the first entry where the chain breaks, and why."""

    ok: bool
    entries: int
    head: str
    first_bad_seq: int | None = None
    line: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"intact: {self.entries} entries, head {self.head}"
        return (
            f"TAMPERED at entry seq {self.first_bad_seq} (line {self.line}): {self.problem}; "
            f"the {self.entries} entries before it are intact"
        )


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise _DuplicateKey(
            f"it repeats the key {repeated[:40]!r} (a text search and a JSON parser would see "
            "different values: rewritten)"
        )
    return dict(pairs)


def parse_line(raw: bytes) -> Entry:
    """The entry on one line (newline included), which must be *exactly* the canonical JSON of
    that entry: the bytes are what a reader greps, so a line that parses to the same entry in
    other bytes (duplicate keys, ``\\u`` escapes, whitespace, key order, a BOM, CRLF) is refused
    with ``ValueError`` saying why, like one that is not an entry at all."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the line is not UTF-8 (edited?)") from None
    try:
        _check_depth(text, _MAX_DEPTH)
    except ValueError:  # append never writes a line nested this deep
        raise ValueError("the line nests too deeply to be an audit entry (edited?)") from None
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey:
        raise
    except ValueError:
        raise ValueError("the line is not a valid audit entry (edited?)") from None
    if not isinstance(obj, dict) or sorted(obj) != sorted(_FIELDS):
        raise ValueError("the line is not a valid audit entry (edited?)")
    entry = Entry(**obj)
    if not (  # the forms ``append`` writes, so no field can carry control characters to a screen
        type(entry.seq) is int
        and isinstance(entry.ts, str)
        and _TS.fullmatch(entry.ts)
        and isinstance(entry.kind, str)
        and _KIND.fullmatch(entry.kind)
        and isinstance(entry.record, dict)
        and isinstance(entry.prev_hash, str)
        and _HASH.fullmatch(entry.prev_hash)
        and isinstance(entry.hash, str)
        and _HASH.fullmatch(entry.hash)
    ):
        raise ValueError("an audit entry field has the wrong type or form")
    hidden = _DISGUISING.search(text)
    if hidden:
        raise ValueError(
            f"it carries U+{ord(hidden.group()):04X} raw, which a reader may see as a line break, "
            "reordered or hidden text (append never writes it): what a reader sees is not what "
            "was hashed"
        )
    try:
        canonical = entry.line()
    except ValueError:  # a lone surrogate from a \\u escape has no UTF-8 encoding
        canonical = b""
    if raw != canonical:
        raise ValueError(
            "its bytes are not the canonical JSON of its entry (whitespace, escapes, key order "
            "or line ending were rewritten: what a reader sees is not what was hashed)"
        )
    return entry


def verify_lines(lines: Iterator[bytes], expected_head: str | None = None) -> VerifyReport:
    prev, seq, lineno = GENESIS, 0, 0

    def bad(problem: str) -> VerifyReport:
        return VerifyReport(False, seq, prev, seq + 1, lineno, problem)

    for raw in lines:
        lineno += 1
        if not raw.endswith(b"\n"):
            return bad("the last line is cut short (a torn write, or the file was truncated)")
        try:
            entry = parse_line(raw)
        except ValueError as exc:
            return bad(str(exc))
        if entry.seq != seq + 1:
            if entry.seq > seq + 1:
                return bad(
                    f"entry {entry.seq} comes next: entries are missing (deleted or reordered)"
                )
            return bad(f"entry {entry.seq} appears again here (reordered or duplicated)")
        if entry.prev_hash != prev:
            return bad("it does not link to the entry before it (inserted or reordered)")
        if entry_hash(entry.seq, entry.ts, entry.kind, entry.record, entry.prev_hash) != entry.hash:
            return bad("its content does not match its hash (edited)")
        prev, seq = entry.hash, entry.seq
    if expected_head is not None and expected_head.lower() != prev:
        return VerifyReport(
            False,
            seq,
            prev,
            seq + 1,
            lineno + 1,
            f"the log ends at head {prev[:16]}…, not at the anchored head {expected_head[:16]}…: "
            "entries were cut from the end, or the log was rewritten",
        )
    return VerifyReport(True, seq, prev)


# -- the log ---------------------------------------------------------------------------------


class AuditLog:
    """Append-only, hash-chained JSON Lines file; safe across threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        processors: Sequence[Processor] = PROCESSORS,
        clock: Callable[[], float] = time.time,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self._processors = tuple(processors)
        self._clock = clock
        self._fsync = fsync
        self._lock = threading.Lock()
        self._fd = -1
        self._pid = -1
        self._tail: tuple[int, int, str] = (-1, 0, GENESIS)  # (file size, seq, hash) we saw last

    def append(self, kind: str, record: Mapping[str, Any]) -> Entry:
        """Redact ``record``, chain it to the last entry and write it as one line."""
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise ConfigurationError(f"audit kind must be a short lowercase word, got {kind!r}")
        if not isinstance(record, Mapping):
            raise ConfigurationError("an audit record must be a mapping")
        clean: Any = dict(record)
        for processor in self._processors:
            clean = processor(clean)
        clean = _visible(clean)
        ts = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="microseconds")
        ts = ts.replace("+00:00", "Z")
        with self._lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                seq, prev = self._last(fd)
                digest = entry_hash(seq + 1, ts, kind, clean, prev)
                entry = Entry(seq + 1, ts, kind, clean, prev, digest)
                line = entry.line()
                try:
                    _check_depth(line.decode(), _MAX_DEPTH)
                except ValueError:
                    raise ConfigurationError(
                        f"an audit entry may nest at most {_MAX_DEPTH} levels of JSON; this "
                        "record nests deeper and was not written"
                    ) from None
                os.write(fd, line)
                if self._fsync:
                    os.fsync(fd)
                self._tail = (os.fstat(fd).st_size, entry.seq, entry.hash)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return entry

    def head(self) -> str:
        """The hash of the last entry: anchor it elsewhere to detect a truncated log."""
        with self._lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                return self._last(fd)[1]
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def entries(self) -> Iterator[Entry]:
        """Every entry in order (raises ``ValueError`` on a damaged line; ``verify`` explains)."""
        with self.path.open("rb") as f:
            for raw in f:
                yield parse_line(raw)

    def verify(self, expected_head: str | None = None) -> VerifyReport:
        """Check the file's hash chain from the first entry (and against ``expected_head``)."""
        with self.path.open("rb") as f:
            return verify_lines(iter(f), expected_head)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _file(self) -> int:
        if self._fd < 0 or self._pid != os.getpid():  # a forked child shares no lock with us
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigurationError(f"cannot open audit log {self.path}: {exc}") from None
            self._pid, self._tail = os.getpid(), (-1, 0, GENESIS)
        return self._fd

    def _last(self, fd: int) -> tuple[int, str]:
        """(seq, hash) of the last entry; re-read only if someone else appended since."""
        size = os.fstat(fd).st_size
        if size == self._tail[0]:
            return self._tail[1], self._tail[2]
        if size == 0:
            return 0, GENESIS
        tail, block = b"", 4096
        while True:  # read backwards until the last line is whole
            start = max(0, size - len(tail) - block)
            chunk = os.pread(fd, size - len(tail) - start, start)
            tail = chunk + tail
            body = tail[:-1]
            if b"\n" in body or start == 0:
                break
            block *= 2
        last = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]
        try:
            if not last.endswith(b"\n"):
                raise ValueError("cut short")
            entry = parse_line(last)
        except ValueError:
            raise ConfigurationError(
                f"audit log {self.path} ends with a damaged entry; nothing was appended. "
                f"Run `agentguard audit verify {self.path}`, then move the file aside"
            ) from None
        self._tail = (size, entry.seq, entry.hash)
        return entry.seq, entry.hash
