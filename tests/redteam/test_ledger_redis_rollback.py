"""Red-team: a Redis that comes back with *older* data keeps the ledger's epoch.

The epoch key detects a Redis that restarted empty. It did not detect a Redis that restarted
from an older snapshot (RDB persistence without AOF, ``appendfsync everysec`` after a power
loss, a failover to a replica that lagged, a restore from a backup): the epoch is in the
snapshot, so every client went on counting from the old totals, and the spends made after the
snapshot were forgotten. Now ``open_ledger`` refuses a Redis that can lose an acknowledged write
(AOF fsynced on every write is required), and every client remembers the highest write sequence
it saw, so a rollback that happens anyway is caught and poisons the namespace for everyone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agentguard._exceptions import (
    BudgetExceeded,
    ConfigurationError,
    LedgerRolledBack,
    LedgerUnavailable,
)
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, WindowCap, open_ledger, open_replay_guard
from tests.ledger.servers import Server, ServerUnavailable, start_redis

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
LIMITS = Limits(windows=[WindowCap(USDC, 86_400, 100)])


def _redis(appendonly: str = "yes", appendfsync: str = "always") -> Server:
    try:
        server = start_redis()
    except ServerUnavailable as exc:
        pytest.skip(f"no redis-server: {exc}")
    if (appendonly, appendfsync) != ("yes", "always"):
        server.stop()
        server.argv[server.argv.index("--appendonly") + 1] = appendonly
        server.argv[server.argv.index("--appendfsync") + 1] = appendfsync
        server.start()
    return server


@pytest.fixture
def durable_redis() -> Iterator[Server]:
    server = _redis()
    try:
        yield server
    finally:
        server.close()


def _reserve(ledger: Ledger, key: str, amount: int) -> None:
    ledger.reserve(AGENT, Spend(asset=USDC, amount=amount), key=key,
                   expires_at=time.time() + 600, limits=LIMITS)  # fmt: skip
    ledger.mark_signed(key, "0xsent-" + key)


@pytest.mark.parametrize(
    ("appendonly", "appendfsync"),
    [("no", "everysec"), ("yes", "everysec"), ("yes", "no")],
    ids=["rdb-snapshots-only", "aof-everysec", "aof-os-flush"],
)
def test_a_redis_that_can_lose_acknowledged_writes_is_refused_at_open(
    appendonly: str, appendfsync: str
) -> None:
    """Before the fix a ledger opened on a snapshot-only Redis (Redis's own default), spent,
    and after a crash reloaded the snapshot and paid the same budget again. Now the open is
    refused, naming the setting to change; nothing is created in the server."""
    server = _redis(appendonly, appendfsync)
    try:
        for opener in (open_ledger, open_replay_guard):
            with pytest.raises(ConfigurationError, match="appendfsync") as caught:
                opener(server.url + "?namespace=weak", create=True)
            assert "appendfsync always" in caught.value.hint
        assert redis.Redis.from_url(server.url).keys("{weak}:*") == []
    finally:
        server.close()


def test_durability_trusted_skips_the_check_and_is_not_passed_to_redis() -> None:
    """A managed Redis may hide CONFIG; its operator vouches with ``durability=trusted``. Any
    other value is a typo that must not silently skip the check."""
    server = _redis("yes", "everysec")
    try:
        ledger = open_ledger(server.url + "?namespace=vouched&durability=trusted", create=True)
        _reserve(ledger, "a", 1)
        ledger.close()
        with pytest.raises(ConfigurationError, match="durability"):
            open_ledger(server.url + "?namespace=vouched&durability=yes")
    finally:
        server.close()


def _snapshot(client: redis.Redis, namespace: str) -> dict[Any, Any]:
    return {key: client.dump(key) for key in client.keys("{" + namespace + "}:*")}


def _restore(client: redis.Redis, namespace: str, snapshot: dict[Any, Any]) -> None:
    """What a restore from a backup or a failover to a lagging replica does to the namespace."""
    for key in client.keys("{" + namespace + "}:*"):
        client.delete(key)
    for key, dumped in snapshot.items():
        client.restore(key, 0, dumped)


def test_a_redis_rolled_back_to_a_snapshot_does_not_forget_spends(durable_redis: Server) -> None:
    """60 spent, snapshot, 30 spent, the server goes back to the snapshot (epoch included):
    90 of 100 were spent, so another 30 must be refused. Before the fix the same process
    reserved the 30 again: 120 spent against a cap of 100 (this test was a strict xfail).
    Now the first client that saw a later write sequence refuses (``LedgerRolledBack``), and
    it poisons the epoch, so a client that saw nothing later and every new open refuse too."""
    url = durable_redis.url + "?namespace=rollback"
    client = redis.Redis.from_url(durable_redis.url)
    ledger = open_ledger(url, create=True)
    bystander = open_ledger(url)  # another worker, opened before the snapshot
    try:
        _reserve(ledger, "a", 60)
        snapshot = _snapshot(client, "rollback")
        _reserve(ledger, "b", 30)
        _restore(client, "rollback", snapshot)
        with pytest.raises(LedgerRolledBack) as caught:
            _reserve(ledger, "c", 30)
        assert "restore" in caught.value.hint.lower()
        with pytest.raises(LedgerUnavailable):  # its epoch no longer matches: poisoned
            _reserve(bystander, "d", 30)
        with pytest.raises(LedgerRolledBack):
            open_ledger(url)
        with pytest.raises(LedgerRolledBack):
            open_ledger(url, create=True)  # create never overwrites a poisoned epoch
        for key in (b"{rollback}:r:c", b"{rollback}:r:d"):
            assert not client.exists(key)
    finally:
        ledger.close()
        bystander.close()


def test_a_rollback_that_forgets_only_a_signature_is_caught(durable_redis: Server) -> None:
    """The snapshot holds the reservation but not its ``mark_signed``: after the rollback,
    ``recover`` would release it as never signed (nothing may have been signed on it) and the
    payment that did leave would no longer count. Every write bumps the sequence, so the
    lost ``mark_signed`` is caught too."""
    url = durable_redis.url + "?namespace=unsigned"
    client = redis.Redis.from_url(durable_redis.url)
    ledger = open_ledger(url, create=True)
    try:
        ledger.reserve(AGENT, Spend(asset=USDC, amount=90), key="a",
                       expires_at=time.time() + 600, limits=LIMITS)  # fmt: skip
        snapshot = _snapshot(client, "unsigned")
        ledger.mark_signed("a", "0xsent-a")
        _restore(client, "unsigned", snapshot)
        with pytest.raises(LedgerRolledBack):
            ledger.recover(lambda r: "unknown")
        assert client.hget("{unsigned}:r:a", "state") == b"reserved"
    finally:
        ledger.close()


def test_a_restart_with_every_write_fsynced_keeps_the_budget(durable_redis: Server) -> None:
    """The configuration the ledger demands really does survive a crash (kill -9 of Redis):
    every acknowledged spend is still counted, and the ledger works on after reconnecting."""
    ledger = open_ledger(durable_redis.url + "?namespace=durable", create=True)
    try:
        _reserve(ledger, "a", 60)
        _reserve(ledger, "b", 30)
        assert durable_redis.proc is not None
        durable_redis.proc.kill()  # a crash: no shutdown save
        durable_redis.proc.wait()
        durable_redis.proc = None
        durable_redis.start()
        for _ in range(3):  # the first call after the restart may meet a dropped connection
            try:
                with pytest.raises(BudgetExceeded):
                    _reserve(ledger, "c", 30)
                break
            except LedgerUnavailable:
                continue
        else:
            pytest.fail("the ledger never came back after Redis restarted")
        _reserve(ledger, "d", 10)
    finally:
        ledger.close()


def test_a_new_process_does_not_start_a_fresh_budget_on_a_redis_that_lost_its_data(
    durable_redis: Server,
) -> None:
    """The first process spends 90 of 100 and sees the data loss (``LedgerUnavailable``); a
    worker started after it opens the same URL and, before the fix, reserved 90 again: the
    epoch only protected processes that were already running. Now only ``create=True`` makes
    an epoch, and a worker opening a namespace without one is refused."""
    url = durable_redis.url + "?namespace=lost"
    first = open_ledger(url, create=True)
    try:
        _reserve(first, "a", 90)
        client = redis.Redis.from_url(durable_redis.url)
        for key in client.scan_iter("{lost}:*"):  # a restart without persistence, this ledger
            client.delete(key)
        with pytest.raises(LedgerUnavailable):
            _reserve(first, "b", 1)
        with pytest.raises((LedgerUnavailable, ConfigurationError)):
            later = open_ledger(url)
            try:
                _reserve(later, "c", 90)
            finally:
                later.close()
    finally:
        first.close()


def test_a_rolled_back_used_attestation_record_does_not_accept_a_replay(
    durable_redis: Server,
) -> None:
    """The used-attestation record lives in the same namespace: a rollback to before an
    attestation was claimed would let the same attestation verify (and be signed on) again.
    Before the fix the second ``claim`` of the same task id succeeded after the restore; now
    the guard that saw the later write refuses (``LedgerRolledBack``), fail closed."""
    url = durable_redis.url + "?namespace=replay"
    client = redis.Redis.from_url(durable_redis.url)
    guard = open_replay_guard(url, create=True)
    task = b"\x42" * 32
    expiry = int(time.time()) + 600
    assert guard.claim(task, expiry) is True
    snapshot = _snapshot(client, "replay")
    assert guard.claim(b"\x43" * 32, expiry) is True
    assert guard.claim(task, expiry) is False  # used once: refused
    _restore(client, "replay", snapshot)
    client.delete("{replay}:used:" + task.hex())  # the restore predates the first claim too
    with pytest.raises(LedgerRolledBack):
        guard.claim(task, expiry)
