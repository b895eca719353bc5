"""The audit chain: format, tamper detection, redaction with a real key, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from agentguard._exceptions import ConfigurationError
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._json import canonical_json
from agentguard._redact import MASK, register_secret
from agentguard.audit import GENESIS, AuditLog, Entry, to_json

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
AGENT = "0x1111111111111111111111111111111111111111"
SHOP = "0x2222222222222222222222222222222222222222"


def write(path: Path, n: int = 5) -> list[Entry]:
    log = AuditLog(path, clock=iter(range(1_764_000_000, 1_764_000_000 + n)).__next__)
    kinds = ["authorized", "signed", "sent", "committed", "payment_settled"]
    return [log.append(kinds[i % 5], {"i": i, "tx": f"0x{i:064x}"}) for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_entries_chain_with_sha256_over_canonical_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entries = write(path)
    prev = GENESIS
    for seq, raw in enumerate(lines(path), start=1):
        obj = json.loads(raw)
        assert set(obj) == {"seq", "ts", "kind", "record", "prev_hash", "hash"}
        assert obj["seq"] == seq and obj["prev_hash"] == prev
        body = {k: obj[k] for k in ("seq", "ts", "kind", "record", "prev_hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        assert obj["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
        prev = obj["hash"]
    assert entries[0].ts == "2025-11-24T16:00:00.000000Z"
    assert [e.kind for e in entries][:2] == ["authorized", "signed"]
    report = AuditLog(path).verify()
    assert (report.ok, report.entries, report.head) == (True, 5, prev)
    assert AuditLog(path).head() == prev


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write(path, 3)
    nxt = AuditLog(path).append("released", {"reason": "x"})
    assert (nxt.seq, nxt.prev_hash) == (4, first[-1].hash)
    assert AuditLog(path).verify().ok
    assert [e.seq for e in AuditLog(path).entries()] == [1, 2, 3, 4]


def tamper_edit(ls: list[bytes]) -> list[bytes]:
    ls[2] = ls[2].replace(b'"i":2', b'"i":7')
    return ls


def tamper_delete(ls: list[bytes]) -> list[bytes]:
    del ls[2]
    return ls


def tamper_swap(ls: list[bytes]) -> list[bytes]:
    ls[2], ls[3] = ls[3], ls[2]
    return ls


def tamper_insert_copy(ls: list[bytes]) -> list[bytes]:
    ls.insert(2, ls[1])
    return ls


def tamper_insert_forged(ls: list[bytes]) -> list[bytes]:
    # a well-formed entry 3 that links to entry 2 with a correct hash of its own
    prev = json.loads(ls[1])["hash"]
    body = {
        "seq": 3,
        "ts": "2025-11-24T16:00:02.000000Z",
        "kind": "committed",
        "record": {"forged": True},
        "prev_hash": prev,
    }
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    ls.insert(2, canonical_json({**body, "hash": digest}) + b"\n")
    return ls


def tamper_garbage(ls: list[bytes]) -> list[bytes]:
    ls[2] = b"not json\n"
    return ls


def tamper_torn(ls: list[bytes]) -> list[bytes]:
    ls[-1] = ls[-1][:40]
    return ls


@pytest.mark.parametrize(
    ("tamper", "first_bad", "words"),
    [
        (tamper_edit, 3, "does not match its hash"),
        (tamper_delete, 3, "missing"),
        (tamper_swap, 3, "missing"),  # entry 4 where 3 belongs
        (tamper_insert_copy, 3, "appears again"),
        (tamper_insert_forged, 4, "appears again"),  # the genuine entry 3 now sits at seq 4
        (tamper_garbage, 3, "not a valid audit entry"),
        (tamper_torn, 5, "cut short"),
    ],
)
def test_verify_finds_the_first_bad_entry(
    tmp_path: Path, tamper: object, first_bad: int, words: str
) -> None:
    path = tmp_path / "audit.jsonl"
    write(path)
    path.write_bytes(b"".join(tamper(lines(path))))  # type: ignore[operator]
    report = AuditLog(path).verify()
    assert not report.ok
    assert report.first_bad_seq == first_bad
    assert report.entries == first_bad - 1
    assert words in report.problem
    assert f"TAMPERED at entry seq {first_bad}" in str(report)


def _reorder(line: bytes) -> bytes:
    entry = json.loads(line)
    return json.dumps(dict(reversed(entry.items())), separators=(",", ":")).encode() + b"\n"


# Rewrites of entry 3 ("sent", record {"i": 2, "tx": ...}) that a JSON parser reads as the very
# same entry, so re-hashing the parsed entry (what verify did before) finds nothing.
REWRITES = {
    # grep finds tx 0xdead; parsers keep the last value, the genuine one
    "duplicate key": lambda line: line.replace(b'"tx":', b'"tx":"0xdead","tx":', 1),
    # grep for the kind "sent" misses it
    "unicode escape": lambda line: line.replace(b'"kind":"sent"', b'"kind":"\\u0073ent"'),
    "whitespace": lambda line: line.replace(b'"i":2', b'"i": 2'),
    "key order": _reorder,
    "trailing whitespace": lambda line: line[:-1] + b"\t\n",
    "CRLF": lambda line: line[:-1] + b"\r\n",
    "BOM": lambda line: b"\xef\xbb\xbf" + line,
}


@pytest.mark.parametrize("rewrite", REWRITES.values(), ids=REWRITES.keys())
def test_a_line_that_is_not_its_canonical_bytes_is_the_first_bad_entry(
    tmp_path: Path, rewrite: Any
) -> None:
    """Issue 14.3: verify re-hashed each line after parsing it, so these rewrites (which change
    what a text search sees, not what a parser sees) verified as intact, even against an
    anchored head. Now the bytes must be exactly the canonical encoding."""
    path = tmp_path / "audit.jsonl"
    entries = write(path)
    ls = lines(path)
    ls[2] = rewrite(ls[2])
    assert json.loads(ls[2]) == json.loads(entries[2].line())  # same entry to a parser
    path.write_bytes(b"".join(ls))
    report = AuditLog(path).verify(expected_head=entries[-1].hash)
    assert (report.ok, report.first_bad_seq, report.line, report.entries) == (False, 3, 3, 2)
    assert "TAMPERED at entry seq 3" in str(report)
    with pytest.raises(ValueError):
        list(AuditLog(path).entries())


def test_problems_name_the_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 3)
    original = path.read_bytes()
    for rewrite, words in [
        (REWRITES["duplicate key"], "repeats the key 'tx'"),
        (REWRITES["whitespace"], "not the canonical JSON"),
        (lambda line: line[:-1] + b"//x\n", "not a valid audit entry"),  # trailing garbage
        (lambda line: line.replace(b'"i":2', b'"i":2,"i":2'), "repeats the key 'i'"),
        (lambda line: line.replace(b'"tx":"', b'"tx":"\\ud800'), "not the canonical"),
        (lambda line: line.replace(b'"kind":"sent"', b'"kind":"\\u001b[2J"'), "wrong type or form"),
        (lambda line: line.replace(b"sent", b"s\xffnt"), "not UTF-8"),
    ]:
        ls = original.splitlines(keepends=True)
        ls[2] = rewrite(ls[2])
        path.write_bytes(b"".join(ls))
        report = AuditLog(path).verify()
        assert report.first_bad_seq == 3 and words in report.problem, report.problem


def test_refuses_to_append_after_a_non_canonical_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 2)
    crlf = path.read_bytes()[:-1] + b"\r\n"
    path.write_bytes(crlf)
    with pytest.raises(ConfigurationError, match="damaged entry; nothing was appended"):
        AuditLog(path).append("sent", {"x": 1})
    assert path.read_bytes() == crlf


def test_truncation_and_rewrite_need_an_anchored_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entries = write(path)
    anchored = entries[-1].hash
    path.write_bytes(b"".join(lines(path)[:3]))  # drop the last two entries
    assert AuditLog(path).verify().ok  # the chain alone cannot tell
    report = AuditLog(path).verify(expected_head=anchored)
    assert not report.ok and report.first_bad_seq == 4 and "cut from the end" in report.problem
    # a wholesale rewrite with fresh hashes is internally consistent, but not the anchored head
    path.unlink()
    write(path, 5)
    assert AuditLog(path).verify(expected_head=anchored).ok  # same content, same clock: same head
    path.unlink()
    AuditLog(path).append("authorized", {"rewritten": True})
    assert not AuditLog(path).verify(expected_head=anchored).ok


def test_refuses_to_append_after_a_damaged_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write(path, 2)
    damaged = path.read_bytes()[:-10]
    path.write_bytes(damaged)
    with pytest.raises(ConfigurationError, match="damaged entry; nothing was appended"):
        AuditLog(path).append("sent", {"x": 1})
    assert path.read_bytes() == damaged


def test_bad_kind_and_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    with pytest.raises(ConfigurationError):
        log.append("Bad Kind!", {})
    with pytest.raises(ConfigurationError):
        log.append("sent", ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot open"):
        AuditLog(tmp_path / "missing-dir" / "a.jsonl").append("sent", {})


def test_a_real_private_key_never_reaches_the_file(tmp_path: Path) -> None:
    account = Account.create()
    key_hex = account.key.hex().removeprefix("0x").lower()
    assert len(key_hex) == 64
    intent = TransactionIntent.erc20_transfer(
        sender=account.address, token=USDC, recipient=SHOP, amount=10**24, chain_id=8453
    )
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append(
        "authorized",
        {
            "intent": intent,  # the wire form, kept
            "intent_hash": intent.intent_hash,  # a 32-byte value that is not a secret: kept
            "private_key": "0x" + key_hex,
            "wallet": {"signer": {"privateKey": account.key}, "account": account},
            "headers": {"Authorization": "Bearer sk-live-abc123", "X-API-Key": "k-123456789"},
            "notes": ["use Bearer tok_9f8e7d6c5b4a for the retry"],
            "pk": key_hex.upper(),
            "mnemonic": "test test test test test test test test test test test junk",
        },
    )
    register_secret(account.key)  # what the wallet does with its key
    log.append("denied", {"error": f"signer 0x{key_hex} refused", "detail": key_hex.upper()})

    raw = path.read_bytes().decode()
    assert key_hex not in raw.lower()
    assert (
        "sk-live-abc123" not in raw and "k-123456789" not in raw and "tok_9f8e7d6c5b4a" not in raw
    )
    assert "junk" not in raw
    first, second = (e.record for e in AuditLog(path).entries())
    assert first["private_key"] == first["pk"] == first["mnemonic"] == MASK
    assert first["wallet"] == {"signer": {"privateKey": MASK}, "account": "<LocalAccount>"}
    assert first["headers"]["Authorization"] == MASK
    assert first["notes"] == [f"use Bearer {MASK} for the retry"]
    assert first["intent"] == intent.wire()
    assert first["intent_hash"] == "0x" + intent.intent_hash.hex()
    assert MASK in second["error"] and second["detail"] == MASK
    assert AuditLog(path).verify().ok


def test_to_json_makes_records_language_neutral() -> None:
    payment = PaymentIntent(
        payer=AGENT, scheme="exact", network="base", asset=USDC, amount=2**70, pay_to=SHOP
    )
    out = to_json(
        {
            "amount": 2**70,
            "small": 5,
            "raw": b"\x01\xff",
            "nan": float("nan"),
            "t": (1, True),
            "payment": payment,
            7: "int key",
        }
    )
    assert out == {
        "amount": str(2**70),
        "small": 5,
        "raw": "0x01ff",
        "nan": "nan",
        "t": [1, True],
        "payment": payment.wire(),
        "7": "int key",
    }


def test_threads_append_one_linear_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog(path), AuditLog(path)]  # two handles on one file, like two components

    def worker(n: int) -> None:
        for i in range(40):
            logs[n % 2].append("sent", {"thread": n, "i": i})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = AuditLog(path).verify()
    assert report.ok and report.entries == 320


_WRITER = """
import sys
from agentguard.audit import AuditLog
log = AuditLog(sys.argv[1])
for i in range(60):
    log.append("sent", {"process": sys.argv[2], "i": i})
"""


@pytest.mark.integration
def test_processes_append_one_linear_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    report = AuditLog(path).verify()
    assert report.ok and report.entries == 240
    seen = {(e.record["process"], e.record["i"]) for e in AuditLog(path).entries()}
    assert len(seen) == 240
