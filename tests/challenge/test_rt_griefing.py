"""Griefing the watcher: a hostile gateway (or whoever hands it records) must not make it blame
honest operators, write a record that proves nothing, or pause an honest vault.

The policy data a record carries (history, approval) is the gateway's word: no operator signs
it. So a gateway can hand the operators one history and record another; the honest operators'
decision then differs from the one the recorded history gives. That proves the gateway
inconsistent, never the operators wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agentguard._json import canonical_json
from agentguard.challenge import Quorum, Watcher
from agentguard.challenge._evidence import policy_data
from agentguard.network.state import PolicyClientRecord, State, StoredTask
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

from .inprocess import InProcessNetwork

Edit = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessNetwork, str]]:
    net = InProcessNetwork(tmp_path_factory.mktemp("net"))
    client = fresh_client()
    net.register(client, NETCHECK, params(max_per_tx=10 * UNIT, daily_cap=100 * UNIT))
    yield net, client
    net.close()


def _with_wasm(result: dict[str, Any], edit: Edit) -> dict[str, Any]:
    """``result`` with its recorded policy data edited (the signatures left as they are)."""
    wasm = edit(policy_data(result["task_response"]))
    response = dict(result["task_response"])
    data = dict(response["policy_task_data"])
    data["policyData"] = [{**data["policyData"][0], "data": "0x" + canonical_json(wasm).hex()}]
    response["policy_task_data"] = data
    return {**result, "task_response": response}


class _Forged:
    """A hostile gateway's records: the tasks the client really got, their policy data
    rewritten; the registrations are the real ones."""

    def __init__(self, state: State, tasks: list[StoredTask]) -> None:
        self._state, self._tasks = state, tasks

    def tasks(
        self, *, after: int = 0, limit: int = 1000, policy_client: str | None = None
    ) -> list[StoredTask]:
        return [t for t in self._tasks if t.seq > after][:limit]

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
        return self._state.policy_version(policy_id)


def _stored(result: dict[str, Any], seq: int, agent: str, client: str) -> StoredTask:
    return StoredTask(
        task_id=result["task_id"].lower(),
        policy_client=client.lower(),
        agent=agent.lower(),
        asset="0x833589fcd6edb6e08f4c7c32d4f71b54bda02913",
        amount=0,
        created_at=policy_data(result["task_response"])["now"],
        expires_at=result["attestation"]["expires_at"],
        status="committed",
        seq=seq,
        result=result,
    )


def _spent_all(wasm: dict[str, Any]) -> dict[str, Any]:
    """The daily window as if the cap were already spent."""
    asset = wasm["spend"]["asset"]
    day = {"count": 40, "spent": {asset: str(100 * UNIT)}, "projected": {asset: str(101 * UNIT)}}
    return {**wasm, "history": {**wasm["history"], "86400": day}}


def _watch(net: InProcessNetwork, tasks: list[StoredTask], tmp: Path) -> Any:
    quorum = Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)
    source = _Forged(net.gateway.state, tasks)
    return Watcher(
        source, cursor_file=tmp / "cursor.json", out_dir=tmp / "records", quorum=quorum, once=True
    ).run()


def test_a_recorded_history_the_operators_never_saw_blames_no_operator(
    honest: tuple[InProcessNetwork, str], tmp_path: Path
) -> None:
    """The gateway handed the operators the true (empty) history, so they signed allow, then
    recorded a history with the daily cap spent. Before the fix the watch named every honest
    operator as a wrong signer ("rotate it out"), wrote a decision record (which
    ``verify_record`` does not prove) and queued the client's vault for a pause."""
    net, client = honest
    agent = fresh_agent()
    result = net.create(client, transfer(agent, UNIT))
    assert result["attestation"]["decision"] == "allow"
    forged = _stored(_with_wasm(result, _spent_all), 1, agent, client)
    report = _watch(net, [forged], tmp_path)
    assert report.operators == {}, report.text()
    assert report.records == [] and not (tmp_path / "records").exists()
    assert any("names no operator" in w["warning"] for w in report.warnings), report.warnings


def test_a_deny_with_a_recorded_history_that_allows_blames_no_operator(
    honest: tuple[InProcessNetwork, str], tmp_path: Path
) -> None:
    """The mirror image: the operators denied on the true history (the daily cap spent), the
    gateway lists the task with an empty history. A deny moves no funds, and a "wrong deny"
    record proves nothing (the history is unsigned); before the fix the watch named the
    honest operators as wrong signers for it and queued the vault for a pause."""
    net = honest[0]
    client, agent = fresh_client(), fresh_agent()
    net.register(client, NETCHECK, params(max_per_tx=10 * UNIT, daily_cap=2 * UNIT))
    for _ in range(2):
        assert net.create(client, transfer(agent, UNIT))["attestation"]["decision"] == "allow"
    result = net.create(client, transfer(agent, UNIT))
    assert result["attestation"]["decision"] == "deny"

    def empty(wasm: dict[str, Any]) -> dict[str, Any]:
        alone = {"count": 0, "spent": {}, "projected": {wasm["spend"]["asset"]: str(UNIT)}}
        return {**wasm, "history": {k: alone for k in wasm["history"]}}

    report = _watch(net, [_stored(_with_wasm(result, empty), 1, agent, client)], tmp_path)
    assert report.operators == {}, report.text()
    assert report.records == []


@pytest.mark.parametrize("tier", [0, 1, 3])
def test_an_executed_call_at_an_elevated_tier_is_read_with_its_signers(tier: int) -> None:
    """The watch rebuilds an execution the records do not hold from the vault call itself,
    and counts it in the provable history if a quorum signed it. Before the fix the call was
    decoded without its ``tier`` argument and its signatures recovered over the tier-0
    digest: at any elevated tier they recovered to no operator, so a gateway that left a
    high-tier vault spend out of its records (and out of the totals) went uncounted."""
    from coincurve import PrivateKey

    from agentguard._attestation import (
        Attestation,
        attestation_digest,
        operator_address,
        sign_attestation,
    )
    from agentguard.chain.vault import execute_calldata
    from agentguard.challenge._chain import decode_execute

    vault = "0x" + "ab" * 20
    intent = transfer(vault, UNIT)
    keys = [PrivateKey() for _ in range(3)]
    expires_at = 1_900_000_000
    digest = attestation_digest(
        chain_id=8453, policy_client=bytes.fromhex(vault[2:]), intent_hash=intent.intent_hash,
        allow=True, tier=tier, task_id=b"\x07" * 32, policy_id=b"\x08" * 32,
        expires_at=expires_at,
    )  # fmt: skip
    attestation = Attestation.from_json(
        {
            "decision": "allow", "task_id": "0x" + "07" * 32, "policy_id": "0x" + "08" * 32,
            "policy_client": intent.from_, "intent_hash": "0x" + intent.intent_hash.hex(),
            "expires_at": expires_at, "tier": tier,
            "signatures": [
                {"operator": operator_address(k), "signature": "0x" + sign_attestation(k, digest).hex()}
                for k in keys
            ],
        }
    )  # fmt: skip
    decoded_intent, decoded = decode_execute(
        execute_calldata(intent, attestation), intent.from_, 8453
    )
    assert decoded is not None and decoded_intent is not None
    assert decoded.tier == tier
    assert {s.operator.lower() for s in decoded.signatures} == {
        operator_address(k).lower() for k in keys
    }


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The watch's chain reads stubbed (no vault events, no onchain operators) and its
    pauses collected: these tests are about whether it decides to pause."""
    from agentguard.challenge import _watch as watch_module

    calls: list[list[str]] = []

    def pause_vaults(w3: Any, vaults: Any, key: Any) -> list[Any]:
        calls.append(list(vaults))
        return []

    monkeypatch.setattr(watch_module, "chain_head", lambda w3: 0)
    monkeypatch.setattr(watch_module, "executed_events", lambda *a, **k: [])
    monkeypatch.setattr(watch_module, "vault_operators", lambda w3, v: (frozenset(), 1))
    monkeypatch.setattr(watch_module, "pause_vaults", pause_vaults)
    return calls


def _guarding(source: Any, tmp: Path, quorum: Quorum, vault: str) -> Any:
    """A watch with a guardian key over ``vault`` (the chain stubbed by ``paused``)."""
    from eth_account import Account

    return Watcher(
        source,
        cursor_file=tmp / "cursor.json",
        out_dir=tmp / "records",
        quorum=quorum,
        once=True,
        w3=object(),  # type: ignore[arg-type]
        vaults=[vault],
        guardian=Account.create(),
    ).run()


def test_pause_all_is_not_triggered_by_signers_no_one_pinned(
    tmp_path: Path, paused: list[list[str]]
) -> None:
    """A hostile gateway lists tasks of a network of its own making (its keys sign allow for
    a deny, under a registration its own key signs) for a client that is not a watched vault.
    With no ``--operator`` set the signers are pinned to nothing: the record proves only that
    some key signed wrong. Before the fix ``--pause-all`` paused every watched vault on it."""
    from eth_account import Account

    (tmp_path / "fake").mkdir()
    fake = InProcessNetwork(tmp_path / "fake", liars=3)
    try:
        client = fresh_client()
        fake.register(client, NETCHECK, params(max_per_tx=10 * UNIT))
        result = fake.create(client, transfer(fresh_agent(), 50 * UNIT))
        assert result["attestation"]["decision"] == "allow"  # the fake operators lied
        report = Watcher(
            fake.gateway.state,
            cursor_file=tmp_path / "cursor.json",
            out_dir=tmp_path / "records",
            once=True,
            w3=object(),  # type: ignore[arg-type]
            vaults=["0x" + "cd" * 20],
            guardian=Account.create(),
            pause_all=True,
        ).run()
    finally:
        fake.close()
    assert report.records, "the discrepancy itself is still recorded"
    assert paused == [] and report.paused == []
    assert any("pinned" in w["warning"] for w in report.warnings), report.warnings


def test_a_history_record_is_checked_against_the_operators_the_verifier_gives(
    tmp_path: Path,
) -> None:
    """A forged ``history`` record framing an honest gateway: the honest network allowed a
    task on the true (empty) history; the forger adds an "earlier allowed" task signed by a
    network of its own keys (its own registration of the same client) and states the operator
    set as the honest operators plus its keys. Before the fix ``verify_record`` ignored the
    ``operators`` the verifier gave for history records (only the record's own set was used)
    and called it proven: "the gateway under-reported history"."""
    import time

    from agentguard import Attestation, TransactionIntent
    from agentguard.challenge._evidence import evidence_from_result
    from agentguard.challenge._history import Candidate, Quorum, check_task, history_record
    from agentguard.challenge._record import verify_record

    (tmp_path / "fake").mkdir()
    (tmp_path / "real").mkdir()
    fake = InProcessNetwork(tmp_path / "fake")
    real = InProcessNetwork(tmp_path / "real")
    try:
        client, agent = fresh_client(), fresh_agent()
        config = params(max_per_tx=10 * UNIT, daily_cap=6 * UNIT)
        fake_id = fake.register(client, NETCHECK, config)
        real_id = real.register(client, NETCHECK, config)
        made_up = fake.create(client, transfer(agent, 5 * UNIT))
        assert made_up["attestation"]["decision"] == "allow"
        time.sleep(1.1)  # the made-up task must be a second older than the real one
        honest = real.create(client, transfer(agent, 2 * UNIT))
        assert honest["attestation"]["decision"] == "allow"
        fake_reg = fake.gateway.state.policy_version(fake_id)
        real_reg = real.gateway.state.policy_version(real_id)
        assert fake_reg is not None and real_reg is not None
        evidence = evidence_from_result(honest, created_at=0, source="gateway")
        attestation = Attestation.from_json(honest["attestation"])
        counted = Candidate.of(
            TransactionIntent.from_wire(made_up["task"]["intent"]),
            Attestation.from_json(made_up["attestation"]),
            fake_reg.registration,
        )
        at = attestation.expires_at - real_reg.registration.expire_after
        finding = check_task(
            evidence, real_reg.registration, real_reg.policy, [counted], at=at, seq=1
        )
        assert finding.proven  # against the forger's own operator set
        honest_ops = [a.lower() for a in real.operator_addresses]
        stated = Quorum(frozenset(honest_ops + [a.lower() for a in fake.operator_addresses]), 2)
        record = history_record(evidence, real_reg.registration, real_reg.policy, finding, stated)
    finally:
        fake.close()
        real.close()
    check = verify_record(record, operators=honest_ops)
    assert not check.proven, check.notes
    assert "operator" in check.reason


def test_a_tier_field_left_out_does_not_hide_an_under_tiered_attestation(
    tmp_path: Path,
) -> None:
    """Every operator signs the standard tier (0) for an action the policy puts at tier
    "all": the vault then accepts it with the standard threshold. The attestation's tier is
    0, which is also what a record without a ``tier`` field reads as; a gateway or agent host
    that leaves the field out made ``challenge run`` (and ``verify``) skip the tier
    comparison. Before the fix: no discrepancy, and a record naming the signers did not
    verify."""
    from agentguard import policies
    from agentguard.challenge._evidence import evidence_from_result
    from agentguard.challenge._record import verify_record
    from agentguard.challenge._run import check_evidence
    from agentguard.challenge._sources import Materials
    from tests.tiers.conftest import STANDARD_TIERS, tier_params
    from tests.tiers.downgrading_operator import StandardOnly

    token = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
    net = InProcessNetwork(tmp_path)
    for operator in net.operators:
        operator._engine = StandardOnly()
    try:
        client = fresh_client()
        policy_id = net.register(
            client, policies.load("agent_spend"), tier_params(token, STANDARD_TIERS)
        )
        from tests.tiers.conftest import PAYEE

        result = net.create(client, transfer(fresh_agent(), 12 * UNIT, recipient=PAYEE))
        found = net.gateway.state.policy_version(policy_id)
        assert found is not None
    finally:
        net.close()
    assert result["attestation"]["decision"] == "allow" and result["attestation"]["tier"] == 0
    material = (found.registration, found.policy)
    stripped = {k: v for k, v in result["attestation"].items() if k != "tier"}
    evidence = evidence_from_result(
        {**result, "attestation": stripped}, created_at=0, source="gateway"
    )

    class _Local:
        def registration(self, pid: str) -> Any:
            return material if pid == policy_id.lower() else None

    finding = check_evidence(evidence, Materials(_Local()), operators=net.operator_addresses)
    assert finding is not None and finding.record is not None, finding
    assert finding.recomputed is not None and finding.recomputed.tier == 2
    signers = {s["operator"].lower() for s in result["attestation"]["signatures"]}
    assert set(finding.wrong_signers) == signers and len(signers) >= 2
    assert verify_record(finding.record).proven


def test_a_long_watch_forgets_what_left_the_window(tmp_path: Path) -> None:
    """Memory of a long watch: the vault tasks the token showed no payment for, and policy
    ids the source named but no registration backs (a hostile source can list a new one with
    every task). Before the fix both sets grew for as long as the watch ran."""
    from agentguard.challenge._watch import Cursor

    class _Empty:
        def tasks(self, **kw: Any) -> list[StoredTask]:
            return []

        def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
            return None

    watcher = Watcher(_Empty(), cursor_file=tmp_path / "c.json", out_dir=tmp_path / "r")
    for i in range(1000):
        watcher._unpaid.add(f"0x{i:064x}")
        watcher.registration(f"0x{i:064x}")
    watcher._prune(Cursor())
    assert watcher._unpaid == set() and watcher._clients == {}


def test_the_vault_paused_is_the_attestations_client_not_the_listing_row(
    tmp_path: Path, paused: list[list[str]]
) -> None:
    """A real discrepancy (lying operators of the given set allow a deny for client A) that
    a hostile gateway lists under a row naming the watched vault B. B's attestations are not
    involved; before the fix the watch paused B, the row's policy client, not A's vault."""

    (tmp_path / "net").mkdir()
    net = InProcessNetwork(tmp_path / "net", liars=2)
    victim = "0x" + "cd" * 20
    try:
        client, agent = fresh_client(), fresh_agent()
        net.register(client, NETCHECK, params(max_per_tx=10 * UNIT))
        result = net.create(client, transfer(agent, 50 * UNIT))
        assert result["attestation"]["decision"] == "allow"
        row = replace(_stored(result, 1, agent, client), policy_client=victim)
        quorum = Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)
        report = _guarding(_Forged(net.gateway.state, [row]), tmp_path, quorum, victim)
    finally:
        net.close()
    assert report.records and report.operators, "the discrepancy is proven and reported"
    assert paused == []


def test_an_allow_wrong_only_through_provable_history_still_pauses(
    tmp_path: Path, paused: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the first test: lying operators (2 of 3) allow a spend the daily
    cap refuses, on the history an honest gateway handed them and recorded. The record alone
    proves nothing (the history is unsigned), but the earlier allows are quorum-signed and
    still live at the task's time: on that provable history the policy refuses, so the funds
    moved on a wrong allow and the vault is paused (no operator named: the watch cannot tell
    the operators' lie from records that differ from what the operators were handed).
    Guards the first fix against hiding real lies."""
    import time

    from agentguard.challenge import _watch as watch_module

    (tmp_path / "net").mkdir()
    net = InProcessNetwork(tmp_path / "net", liars=2)
    try:
        client, agent = fresh_client(), fresh_agent()
        net.register(client, NETCHECK, params(max_per_tx=10 * UNIT, daily_cap=12 * UNIT))
        for _ in range(3):  # a second apart: no same-second group proves anything here
            assert net.create(client, transfer(agent, 5 * UNIT))["attestation"]["decision"] == (
                "allow"
            )
            time.sleep(1.1)
        quorum = Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)
        monkeypatch.setattr(
            watch_module, "vault_operators", lambda w3, v: (quorum.operators, 2)
        )  # the vault's onchain set is the network's
        report = _guarding(net.gateway.state, tmp_path, quorum, client)
    finally:
        net.close()
    assert report.operators == {}, report.text()
    assert paused and paused[0][0].lower() == client.lower(), report.warnings


@pytest.mark.parametrize("dropped", [["86400"], ["60", "3600", "86400"]])
def test_a_window_left_out_of_the_recorded_history_frames_no_operator(
    honest: tuple[InProcessNetwork, str], dropped: list[str]
) -> None:
    """window_cap (and rate_limit) deny when the gateway sent no history for a window. The
    honest operators allowed on the full history; the forger (a hostile gateway's records,
    or anyone editing a record) drops the window. ``most_permissive`` zeroed only the windows
    the record still had, so the policy refused on both and the record was proven offline,
    naming the honest operators: the watch would pause the vault on it. Before the fix
    ``finding.offline`` and ``verify_record(...).proven`` were True."""
    from agentguard import policies
    from agentguard.challenge._evidence import evidence_from_result
    from agentguard.challenge._record import verify_record
    from agentguard.challenge._run import check_evidence
    from agentguard.challenge._sources import Materials
    from tests.network.conftest import TOKEN

    net = honest[0]
    client = fresh_client()
    cap = {"asset": TOKEN, "window_seconds": 86400, "max_amount": str(100 * UNIT)}
    caps = {"window_caps": [cap]}
    policy_id = net.register(client, policies.load("window_cap"), caps)
    result = net.create(client, transfer(fresh_agent(), UNIT))
    assert result["attestation"]["decision"] == "allow"
    found = net.gateway.state.policy_version(policy_id)
    assert found is not None
    material = (found.registration, found.policy)

    class _Local:
        def registration(self, pid: str) -> Any:
            return material if pid == policy_id.lower() else None

    def drop(wasm: dict[str, Any]) -> dict[str, Any]:
        return {**wasm, "history": {k: v for k, v in wasm["history"].items() if k not in dropped}}

    evidence = evidence_from_result(_with_wasm(result, drop), created_at=0, source="gateway")
    finding = check_evidence(evidence, Materials(_Local()), operators=net.operator_addresses)
    assert finding is not None and finding.record is not None  # the recorded data says deny
    assert not finding.offline
    assert not verify_record(finding.record).proven


def test_a_far_future_created_at_does_not_hide_an_unrecorded_execution(
    honest: tuple[InProcessNetwork, str], tmp_path: Path
) -> None:
    """A resumed watch judges an execution the records do not hold only if its task surely
    came after the oldest record this run read. That oldest time was the rows' ``created_at``,
    the source's word: a gateway listing its records with a far-future ``created_at`` kept
    every execution from being judged (an unrecorded spend hidden). Now the signed time
    (expiry - lifetime) is used where the task is a known quorum's allow. Before the fix
    ``report.unrecorded`` stayed empty."""
    from agentguard import Attestation
    from agentguard.challenge._chain import ChainFact, Executed
    from agentguard.network.registration import MAX_EXPIRE_AFTER

    net, client = honest
    agent = fresh_agent()
    result = net.create(client, transfer(agent, UNIT))
    row = replace(_stored(result, 7, agent, client), created_at=10**12)
    quorum = Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)
    watcher = Watcher(
        _Forged(net.gateway.state, [row]),
        cursor_file=tmp_path / "c.json",
        out_dir=tmp_path / "r",
        quorum=quorum,
    )  # a resumed run: _recorded_since starts unknown, set by the records it reads
    watcher._index(row, row.seq)
    later = {**result["attestation"], "task_id": "0x" + "5e" * 32}
    later["expires_at"] += 2 * MAX_EXPIRE_AFTER  # surely created after the row's task
    fact = ChainFact(
        kind="executed", chain_id=8453, tx_hash="0x" + "11" * 32, block_number=9,
        block_hash="0x" + "22" * 32, log_index=0, address=client, task_id="0x" + "5e" * 32,
    )  # fmt: skip
    watcher._judge([Executed(fact, None, Attestation.from_json(later))])
    assert [u["task_id"] for u in watcher.report.unrecorded] == ["0x" + "5e" * 32]
