"""Secrets never leave: a full ``make demo`` run, scanned for every key it used.

The demo (``examples/demo.py``, the code ``make demo`` runs) is driven in a child process with
agentguard's logging at DEBUG as JSON lines, every ``AgentGuardError`` recorded as it is
built, and the main objects (guards, wallets, signers, ledgers, audit logs, the reference
network, x402 auth, the OpenGradient client, anvil) recorded as they are made and rendered
with ``repr``/``str`` at the end. Then everything it left is searched for the private keys
(anvil's dev accounts, the operators', the owner's, the enclave's RSA key), the gateway API
and admin keys and the operator bearer tokens, in every spelling (hex with and without
``0x``, any case, and the raw 32 key bytes in binary files): stdout, stderr, the recorded
exception texts and reprs, and every file the run wrote (network config, gateway and
operator logs, their SQLite state, the spend ledger, the audit log). Only the key files the
network keeps on purpose (``keys/``, ``secrets.json``, mode 0600) may hold them, and the scan
must find them there: that, and the planted-secret controls, show the scanner can fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: the demo as ``make demo`` runs it, with observation hooks around it.
DRIVER = r"""
import json, logging, runpy, sys
from pathlib import Path

out = Path(sys.argv[1])
from agentguard._logging import configure_logging
configure_logging("DEBUG", json=True)  # structlog events as JSON lines on stderr

import agentguard._exceptions as errors
texts = []
_init = errors.AgentGuardError.__init__
def _record_error(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    texts.append(f"{type(self).__name__}: {self} | {self!r} | {getattr(self, 'hint', '')}")
errors.AgentGuardError.__init__ = _record_error

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
rsa_keys = []
_generate = rsa.generate_private_key
def _record_rsa(*args, **kwargs):
    key = _generate(*args, **kwargs)
    rsa_keys.append(key)
    return key
rsa.generate_private_key = _record_rsa

import agentguard, agentguard.audit, agentguard.chain, agentguard.ledger
import agentguard.network.launcher, agentguard.x402
from agentguard_opengradient import OpenGradientClient
objects = []
def _watch(cls):
    original = cls.__init__
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        objects.append(self)
    cls.__init__ = init
for cls in (agentguard.Guard, agentguard.AsyncGuard, agentguard.GuardedWallet, agentguard.Signer,
            agentguard.Ledger, agentguard.audit.AuditLog, agentguard.x402.X402Auth,
            agentguard.NewtonGateway, agentguard.Verifier, agentguard.network.launcher.ReferenceNetwork,
            agentguard.chain.Anvil, OpenGradientClient):
    _watch(cls)

status = "ok"
try:
    runpy.run_path("examples/demo.py", run_name="__main__")
except BaseException as exc:  # SystemExit from a failed demo check, or a crash
    status = f"{type(exc).__name__}: {exc}"
    texts.append(f"{type(exc).__name__}: {exc} | {exc!r}")

rendered = []
for obj in objects:
    for render in (repr, str):
        try:
            rendered.append(f"{type(obj).__name__}: {render(obj)}")
        except Exception as exc:
            rendered.append(f"{type(obj).__name__}: cannot render ({type(exc).__name__})")
(out / "observed.json").write_text(json.dumps(
    {"status": status, "errors": texts, "reprs": rendered, "kinds": sorted({type(o).__name__ for o in objects})}
))
(out / "rsa.json").write_text(json.dumps([
    k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()).hex()
    for k in rsa_keys
]))
"""


# -- the scanner -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    label: str
    text: str | None = None  # searched case-insensitively, with and without 0x for hex
    raw: bytes | None = None  # searched byte for byte (binary files, SQLite pages)


@dataclass(frozen=True)
class Hit:
    where: str
    secret: str
    form: str


def key_secret(label: str, key_hex: str) -> Secret:
    body = key_hex.strip().removeprefix("0x").removeprefix("0X")
    return Secret(label, text=body, raw=bytes.fromhex(body))


def scan(where: str, blob: bytes, secrets: Iterable[Secret]) -> list[Hit]:
    """Every secret in ``blob``: its text in any case (a hex key also without ``0x``, which
    covers the ``0x`` form), or its raw bytes."""
    hay = blob.lower()
    hits = []
    for secret in secrets:
        if secret.text and secret.text.lower().encode() in hay:
            hits.append(Hit(where, secret.label, "text"))
        elif secret.raw and len(secret.raw) >= 16 and secret.raw in blob:
            hits.append(Hit(where, secret.label, "raw bytes"))
    return hits


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


# -- controls: the scanner finds what is planted -------------------------------------------------

PLANTED_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


@pytest.mark.parametrize(
    "blob",
    [
        f'{{"event": "signed", "key": "{PLANTED_KEY}"}}'.encode(),
        PLANTED_KEY[2:].upper().encode(),
        b"SQLite format 3\x00" + bytes.fromhex(PLANTED_KEY[2:]) + b"\x00" * 8,
        b"Authorization: Bearer agk_planted_api_key_0123456789",
        b"AGK_PLANTED_API_KEY_0123456789 in shouting case",
    ],
    ids=["json-log", "upper-no-0x", "raw-bytes-in-sqlite", "api-key", "api-key-upper"],
)
def test_the_scanner_finds_a_planted_secret(blob: bytes) -> None:
    secrets = [
        key_secret("planted key", PLANTED_KEY),
        Secret("api", "agk_planted_api_key_0123456789"),
    ]
    assert scan("control", blob, secrets), "the scanner missed a planted secret"


def test_the_scanner_does_not_cry_wolf() -> None:
    address = "0x" + "ab" * 20  # an address or a hash is not a key
    assert not scan("control", address.encode(), [key_secret("planted key", PLANTED_KEY)])


# -- the demo run ----------------------------------------------------------------------------


def _secrets(network: Path, out: Path) -> list[Secret]:
    from agentguard.chain import DEV_ACCOUNTS

    found = [key_secret(f"dev account {i}", a.private_key) for i, a in enumerate(DEV_ACCOUNTS)]
    keys = network / "keys"
    for path in sorted(keys.glob("*.key")):
        found.append(key_secret(f"keys/{path.name}", path.read_text()))
    for path in sorted(keys.glob("*.token")):
        found.append(Secret(f"keys/{path.name}", text=path.read_text().strip()))
    for name, value in json.loads((network / "secrets.json").read_text()).items():
        found.append(Secret(f"secrets.json {name}", text=value))
    for i, der_hex in enumerate(json.loads((out / "rsa.json").read_text())):
        der = bytes.fromhex(der_hex)
        pem_body = base64.b64encode(der).decode()
        # a recognisable slice of the key's PEM body and of its DER (past the common header)
        found.append(Secret(f"TEE RSA key {i} (PEM)", text=pem_body[64:128]))
        found.append(Secret(f"TEE RSA key {i} (DER)", text=der[40:72].hex(), raw=der[40:72]))
    return found


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_a_demo_run_leaks_no_secret(tmp_path: Path) -> None:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("AGENTGUARD_")}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=1100,
    )
    if not (out / "observed.json").exists():
        pytest.fail(f"the demo driver died: {done.stderr[-2000:].decode(errors='replace')}")
    observed = json.loads((out / "observed.json").read_text())
    assert done.returncode == 0 and observed["status"] == "ok", (
        observed["status"],
        done.stderr[-2000:].decode(errors="replace"),
    )
    # the run really did what is being scanned
    assert b"every outcome matched the policy." in done.stdout
    assert {"Guard", "GuardedWallet", "Signer", "ReferenceNetwork", "X402Auth"} <= set(
        observed["kinds"]
    )
    assert observed["errors"], "the demo's refusals raise AgentGuardErrors; none was recorded"
    assert b'"event"' in done.stderr  # structlog JSON lines were captured
    (state,) = tmp.glob("agentguard-demo-*")
    network = state / "network"
    secrets = _secrets(network, out)
    assert len(secrets) >= 10 + 4 + 3 + 2
    assert any(s.label.startswith("TEE RSA") for s in secrets)  # the enclave key was seen

    hits = scan("stdout", done.stdout, secrets) + scan("stderr", done.stderr, secrets)
    for kind in ("errors", "reprs"):
        hits += scan(f"recorded {kind}", "\n".join(observed[kind]).encode(), secrets)
    kept = {network / "keys", network / "secrets.json"}
    scanned = 0
    for path in files_under(tmp):
        if any(path == k or k in path.parents for k in kept):
            continue
        hits += scan(str(path.relative_to(tmp)), path.read_bytes(), secrets)
        scanned += 1
    names = {p.name for p in files_under(tmp)}
    assert {
        "audit.jsonl",
        "ledger.sqlite3",
        "state.sqlite3",
        "gateway.log",
        "network.json",
    } <= names
    assert scanned >= 10
    assert not hits, "secrets leaked:\n" + "\n".join(
        f"{h.where}: {h.secret} ({h.form})" for h in hits
    )

    # Control on the real run: where the network keeps its keys on purpose, the scan finds them,
    # and those files are private to their owner.
    kept_hits = [
        h for k in sorted(network.glob("keys/*")) for h in scan(k.name, k.read_bytes(), secrets)
    ]
    assert {h.secret for h in kept_hits} >= {f"keys/{k.name}" for k in network.glob("keys/*")}
    for path in [*network.glob("keys/*"), network / "secrets.json"]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert re.search(rb"agk_", done.stdout) is None  # no API key prefix on screen at all
