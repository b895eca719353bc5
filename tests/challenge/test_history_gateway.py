"""A gateway that under-reports history, against real parts: anvil (chain id 8453), a vault,
the reference network's real operators (signing honestly on what they are handed) and a
gateway process patched to hand them empty windows (``watch_support.LyingNetwork``).

Before the watch existed nothing caught it: 20 USDC left a vault whose daily cap is 12."""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from web3.contract import Contract

from agentguard import TransactionIntent
from agentguard.challenge import Quorum, Watcher
from agentguard.challenge import _watch as watch_module
from agentguard.challenge._chain import PauseResult
from agentguard.challenge._record import verify_record
from agentguard.challenge._report import Report
from agentguard.challenge._watch import GatewayTasks
from agentguard.network.state import open_state
from tests.chain.helpers import reverts
from tests.network.conftest import NETCHECK, RPC, UNIT, fresh_eoa_client, params, transfer

from .test_history_bound import STRANGERS
from .watch_support import (
    GUARDIAN,
    SHOP,
    Chain,
    LyingNetwork,
    chain,
    create_vault,
    execute,
    spend,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parts() -> Iterator[tuple[Chain, LyingNetwork, RPC]]:
    with (
        chain() as c,
        LyingNetwork(operators=3, timeout=5.0, startup_timeout=180.0) as net,
    ):
        yield c, net, RPC(net, net.api_key)


def four_spends(c: Chain, rpc: RPC, vault: Contract) -> list[dict[str, Any]]:
    """5 USDC four times, a second apart (tasks of one second cannot be ordered)."""
    results = []
    for i in range(4):
        if i:
            time.sleep(1.05)
        results.append(spend(c, rpc, vault))
    assert [r["attestation"]["decision"] for r in results] == ["allow"] * 4  # the lie works
    assert c.token.functions.balanceOf(SHOP).call() >= 20 * UNIT
    return results


def watch(
    net: LyingNetwork, c: Chain | None, vault: Contract | None, tmp: Path, **kw: Any
) -> Report:
    state = open_state(str(net.state_dir / "state.sqlite3"))
    try:
        return Watcher(
            state,
            cursor_file=tmp / "cursor.json",
            out_dir=tmp / "records",
            once=True,
            w3=None if c is None else c.w3,
            vaults=[] if c is None or vault is None else [vault.address],
            **kw,
        ).run()
    finally:
        state.close()


def test_under_reported_history_is_proven_and_the_vault_paused(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x11" * 32)
    results = four_spends(c, rpc, vault)
    before = c.token.functions.balanceOf(vault.address).call()
    report = watch(net, c, vault, tmp_path, guardian=Account.from_key(GUARDIAN.private_key))

    # the third and fourth spends passed the 12 USDC cap on provable history (10, 15 USDC)
    assert report.history == [results[2]["task_id"], results[3]["task_id"]]
    assert report.operators == {}  # the operators signed honestly on false data
    assert report.paused[0]["vault"] == vault.address and report.paused[0]["paused"] is True
    assert vault.functions.paused().call() is True
    assert c.token.functions.balanceOf(vault.address).call() == before  # funds untouched
    # and the agent's next attested spend no longer leaves the vault
    with reverts("VaultPaused"):
        spend(c, rpc, vault)
    assert c.token.functions.balanceOf(vault.address).call() == before

    record = json.loads(Path(report.records[0]).read_text())
    assert record["kind"] == "history" and record["wrong_signers"] == []
    assert record["extra"]["history"]["recorded"]["86400"]["count"] == 0
    assert record["extra"]["history"]["recomputed"]["86400"]["count"] == 2
    offline = verify_record(record)
    assert offline.proven, offline.reason
    assert offline.recomputed is not None and offline.recomputed.decision == "deny"
    assert any("not re-checked" in n for n in offline.notes)
    online = verify_record(record, rpc=c.anvil.url)
    assert online.proven and not any("not re-checked" in n for n in online.notes)


def test_the_chain_catches_a_gateway_that_also_omits_its_records(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    """The records a challenger reads come from the gateway too: here it drops the first two
    tasks from them, so its lie is consistent with its records. The vault's Executed events
    (and the attestations in the execute calls) bring them back, and are findings."""
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x12" * 32)
    results = four_spends(c, rpc, vault)
    hidden = [results[0]["task_id"], results[1]["task_id"]]
    with sqlite3.connect(net.state_dir / "state.sqlite3") as db:
        db.executemany("DELETE FROM tasks WHERE task_id = ?", [(t,) for t in hidden])

    blind = watch(net, None, vault, tmp_path / "records-only", quorum=None)
    assert blind.proven == 0  # from its own records alone the lie is invisible

    report = watch(net, c, vault, tmp_path / "with-chain")
    assert report.history == [results[2]["task_id"], results[3]["task_id"]]
    assert sorted(u["task_id"] for u in report.unrecorded) == sorted(hidden)
    record = json.loads(Path(report.records[0]).read_text())
    whys = [e["why"] for e in record["extra"]["history"]["counted"]]
    assert all("executed" in why for why in whys)
    assert verify_record(record, rpc=c.anvil.url).proven


def test_a_history_record_proves_nothing_once_its_evidence_is_bent(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    """What a challenger framing an honest gateway would try: drop or inflate the earlier
    tasks, sign some with keys of its own, or claim chain facts that do not hold."""
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x13" * 32, guardian=False)
    results = four_spends(c, rpc, vault)
    report = watch(net, c, vault, tmp_path)
    path = next(p for p in report.records if results[2]["task_id"][2:] in p)
    record = json.loads(Path(path).read_text())
    assert verify_record(record, rpc=c.anvil.url).proven

    dropped = copy.deepcopy(record)
    dropped["extra"]["history"]["counted"] = dropped["extra"]["history"]["counted"][:1]
    assert not verify_record(dropped, rpc=c.anvil.url).proven

    inflated = copy.deepcopy(record)
    entry = inflated["extra"]["history"]["counted"][0]
    entry["intent"]["data"] = entry["intent"]["data"][:-8] + "00e4e1c0"  # 15 USDC, not 5
    assert not verify_record(inflated, rpc=c.anvil.url).proven

    framed = copy.deepcopy(record)
    for entry in framed["extra"]["history"]["counted"]:
        entry["attestation"]["signatures"] = [
            # the other recovery id: a different signer (setting "1c" changed nothing when
            # the byte already was "1c", so this once proved nothing about the check)
            {
                "operator": s["operator"],
                "signature": s["signature"][:-2] + ("1b" if s["signature"][-2:] == "1c" else "1c"),
            }
            for s in entry["attestation"]["signatures"]
        ]
    assert not verify_record(framed, rpc=c.anvil.url).proven

    stranger = copy.deepcopy(record)
    stranger["extra"]["quorum"]["operators"] += [
        Account.from_key(k.secret).address.lower() for k in STRANGERS
    ]
    stranger["extra"]["quorum"]["threshold"] = 1
    onchain = verify_record(stranger, rpc=c.anvil.url)
    assert any("not the vault's current one" in n for n in onchain.notes)

    moved = copy.deepcopy(record)
    for entry in moved["extra"]["history"]["counted"]:
        for fact in entry["facts"]:
            fact["log_index"] += 1  # a log that is not the Executed event
    check = verify_record(moved, rpc=c.anvil.url)
    assert any("does not hold" in n or "no log" in n for n in check.notes)


def test_the_cli_watch_pauses_with_a_guardian_key_file(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x14" * 32)
    results = four_spends(c, rpc, vault)
    key_file = tmp_path / "guardian.key"
    key_file.write_text(GUARDIAN.private_key + "\n")
    key_file.chmod(0o600)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentguard.cli",
            "challenge",
            "watch",
            "--state",
            str(net.state_dir / "state.sqlite3"),
            "--cursor",
            str(tmp_path / "cursor.json"),
            "--out",
            str(tmp_path / "records"),
            "--once",
            "--rpc",
            c.anvil.url,
            "--vault",
            vault.address,
            "--guardian-key-file",
            str(key_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["gateway"]["history_lies"]["task_ids"][-2:] == [
        results[2]["task_id"],
        results[3]["task_id"],
    ]
    assert report["operators"] == []
    assert vault.functions.paused().call() is True
    assert GUARDIAN.private_key[2:] not in done.stdout + done.stderr
    for path in report["records"]:
        verified = subprocess.run(
            [sys.executable, "-m", "agentguard.cli", "challenge", "verify", path],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert verified.returncode == 0, verified.stderr
        assert "the gateway handed the operators false data" in verified.stdout


def test_a_burst_within_one_second_is_caught_too(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    """Tasks of one second cannot be ordered, so no one of them provably counted for another:
    before the same-second rule, four 5 USDC spends fired at once under a 12 USDC cap (20
    USDC out) were invisible to the watch. An honest gateway reserves them one at a time, so
    the last saw the other three: each refused on that history proves one of them a lie."""
    c, net, _ = parts
    vault = create_vault(c, net, b"\x15" * 32)
    intents = [
        TransactionIntent.erc20_transfer(
            sender=vault.address,
            token=c.token.address,
            recipient=SHOP,
            amount=5 * UNIT,
            chain_id=8453,
        )
        for _ in range(4)
    ]
    while time.time() % 1 > 0.3:  # start early in a second: all four land in it
        time.sleep(0.05)
    results = asyncio.run(_at_once(net, vault.address, intents))
    assert len({r["timestamp"] for r in results}) == 1
    assert [r["attestation"]["decision"] for r in results] == ["allow"] * 4
    for intent, result in zip(intents, results, strict=True):
        execute(c, intent, result["attestation"], vault)
    assert c.token.functions.balanceOf(SHOP).call() >= 20 * UNIT

    report = watch(net, c, vault, tmp_path, guardian=Account.from_key(GUARDIAN.private_key))
    ours = {r["task_id"] for r in results}
    assert ours & set(report.history)
    assert vault.functions.paused().call() is True
    record = json.loads(Path(report.records[-1]).read_text())
    assert record["extra"]["history"]["same_second"]
    assert verify_record(record).proven
    bent = copy.deepcopy(record)
    bent["extra"]["history"]["same_second"] = bent["extra"]["history"]["same_second"][:1]
    assert not verify_record(bent).proven  # two of one second under a 12 USDC cap: fine


async def _at_once(
    net: LyingNetwork, client: str, intents: list[TransactionIntent]
) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {net.api_key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30.0) as http:

        async def one(intent: TransactionIntent) -> dict[str, Any]:
            body = {
                "jsonrpc": "2.0",
                "id": str(uuid.uuid4()),
                "method": "newt_createTask",
                "params": {"policy_client": client, "intent": intent.wire(), "timeout": 5},
            }
            result: dict[str, Any] = (await http.post(net.rpc_url, json=body)).json()["result"]
            return result

        return list(await asyncio.gather(*(one(i) for i in intents)))


def test_a_pause_the_node_failed_is_retried_from_the_cursor(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix the cursor moved past a proven discrepancy whose pause had failed (the
    node did not answer), and the vault was never paused."""
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x16" * 32)
    four_spends(c, rpc, vault)
    real = watch_module.pause_vaults

    def node_down(w3: Any, vaults: Any, guardian: Any) -> list[PauseResult]:
        return [PauseResult(v, False, None, "pause failed (ConnectionError)", True) for v in vaults]

    monkeypatch.setattr(watch_module, "pause_vaults", node_down)
    guardian = Account.from_key(GUARDIAN.private_key)
    first = watch(net, c, vault, tmp_path, guardian=guardian)
    assert first.proven and vault.functions.paused().call() is False
    assert json.loads((tmp_path / "cursor.json").read_text())["pending"] == [vault.address]

    monkeypatch.setattr(watch_module, "pause_vaults", real)
    second = watch(net, c, vault, tmp_path, guardian=guardian)
    assert second.checked == 0  # nothing re-checked: only the pause was left to do
    assert vault.functions.paused().call() is True
    assert json.loads((tmp_path / "cursor.json").read_text())["pending"] == []


def test_the_watch_reads_a_gateways_auditor_methods_too(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x17" * 32, guardian=False)
    results = four_spends(c, rpc, vault)
    source = GatewayTasks(net.url, net.admin_key)
    try:
        report = Watcher(
            source,
            cursor_file=tmp_path / "cursor.json",
            out_dir=tmp_path / "records",
            once=True,
            batch=7,
            w3=c.w3,
            vaults=[vault.address],
        ).run()
    finally:
        source.close()
    assert report.history[-2:] == [results[2]["task_id"], results[3]["task_id"]]
    assert report.unrecorded == []


def test_a_resumed_watch_still_has_the_chain_behind_its_cursor(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    """The gateway hides the first two tasks from its records; a watch runs, stops, and is
    started again before the fourth spend. Before the fix the resumed watch had only the
    records behind its cursor: the hidden tasks (known from the chain alone) were gone, and
    the fourth spend (15 USDC provably counted before it) passed unnoticed."""
    c, net, rpc = parts
    vault = create_vault(c, net, b"\x18" * 32, guardian=False)
    results = []
    for i in range(3):
        if i:
            time.sleep(1.05)
        results.append(spend(c, rpc, vault))
    with sqlite3.connect(net.state_dir / "state.sqlite3") as db:
        db.executemany(
            "DELETE FROM tasks WHERE task_id = ?", [(r["task_id"],) for r in results[:2]]
        )
    first = watch(net, c, vault, tmp_path)
    assert results[2]["task_id"] in first.history
    time.sleep(1.05)
    results.append(spend(c, rpc, vault))
    assert results[3]["attestation"]["decision"] == "allow"
    second = watch(net, c, vault, tmp_path)
    assert second.checked == 1
    assert second.history == [results[3]["task_id"]]


def test_a_proof_on_the_gateways_own_records_is_reported_but_does_not_verify_offline(
    parts: tuple[Chain, LyingNetwork, RPC], tmp_path: Path
) -> None:
    """An EOA client's earlier attestations expired (1 s) before the lie, and nothing onchain
    shows them: only the gateway's own records (status attested, never released) show they
    still counted. The watch acts on what it read itself, but a record resting on statuses no
    signature covers proves nothing to anyone else; before the fix it verified, so a
    challenger could frame an honest gateway by editing statuses."""
    _, net, rpc = parts
    client, key = fresh_eoa_client()
    net.register_policy_client(
        client,
        NETCHECK,
        params(max_per_tx=5 * UNIT, daily_cap=12 * UNIT),
        expire_after=1,
        owner_key=key,
    )
    results = []
    for i in range(3):
        if i:
            time.sleep(2.1)
        results.append(rpc.create(client, transfer(client, 5 * UNIT)))
    assert [r["attestation"]["decision"] for r in results] == ["allow"] * 3
    quorum = Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)
    report = watch(net, None, None, tmp_path, quorum=quorum)
    assert results[2]["task_id"] in report.history
    assert results[2]["task_id"] in report.on_records
    path = next(p for p in report.records if results[2]["task_id"][2:] in p)
    record = json.loads(Path(path).read_text())
    assert record["extra"]["rests_on_records"] is True
    check = verify_record(record)
    assert not check.proven
    assert "no signature covers" in check.reason, check.reason
