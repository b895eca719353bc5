"""Red-team: one verifier host with a fast clock wipes the shared used-attestation record.

``PostgresReplayGuard.claim`` prunes ``WHERE expires_at < now`` with the *caller's* clock. Rows
are kept a day past the attestation's expiry, so a host whose clock runs more than a day ahead
deletes the claims of attestations that are still valid for every honest host, and an honest
``Verifier`` then accepts a used attestation a second time. (Redis expires claims by the
server's clock, so it holds; SQLite's processes share one host's clock.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentguard.ledger import open_replay_guard
from tests.ledger.conftest import base_url, fresh_url

DAY = 86_400


def test_a_fast_host_does_not_reopen_a_used_attestation(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_url("postgres", base_url("postgres", request), tmp_path)
    honest, skewed = open_replay_guard(url, create=True), open_replay_guard(url)
    try:
        real = time.time
        expires = int(real()) + 300
        assert honest.claim(b"\x01" * 32, expires)
        monkeypatch.setattr(time, "time", lambda: real() + 2 * DAY)
        assert skewed.claim(b"\x02" * 32, expires + 2 * DAY)  # prunes by its own clock
        monkeypatch.setattr(time, "time", real)
        assert not honest.claim(b"\x01" * 32, expires), "a used attestation was claimed again"
    finally:
        for guard in (honest, skewed):
            guard.close()  # type: ignore[attr-defined]
