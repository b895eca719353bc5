"""Red team of s17-robust: the challenger watch's deferral of tasks it cannot judge.

The attacker: a hostile policy registrant or whoever can load the challenger's box (probes then
time out), together with corrupt operators that sign a fraud under a victim's policy; or whoever
can edit the watch's cursor file. Each wants a fraud never judged, or the watch stalled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import ConfigurationError
from agentguard.challenge import Watcher
from agentguard.challenge import _watch as watch_module
from agentguard.challenge._watch import Cursor
from agentguard.policies import Policy, _probe
from agentguard.policies._probe import probe_key
from tests.challenge.inprocess import InProcessNetwork
from tests.challenge.probe_stub import use_probe_child, virtual_watcher
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

HANGS = Policy(
    name="netcheck-hangs-rt",
    entrypoint=NETCHECK.entrypoint,
    modules={k: v + "\n# the probe hangs on this one (rt)\n" for k, v in NETCHECK.modules.items()},
    params_schema=NETCHECK.params_schema,
)
CAP = params(max_per_tx=10 * UNIT)
DAY = 86400.0


class Load:
    """The probe child under the attacker's load: out of time while ``failing`` is above 0
    (each probe uses one up), or always for ``HANGS``; the real child otherwise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing = 0
        self.probes = 0
        self.monkeypatch = monkeypatch

    def start(self) -> None:
        """From now on (after the registrations: the gateway probes them too); nothing held
        from them (the challenger runs in a process of its own)."""
        monkeypatch = self.monkeypatch
        real = _probe._forked

        def child(request: bytes, timeout: float) -> tuple[str | None, bool]:
            self.probes += 1
            if b"the probe hangs on this one (rt)" in request or self.failing > 0:
                self.failing = max(0, self.failing - 1)
                return _probe._verdict(None, False, timeout)
            return real(request, timeout)

        use_probe_child(monkeypatch, child)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Load:
    return Load(monkeypatch)


@pytest.fixture
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNetwork]:
    network = InProcessNetwork(tmp_path_factory.mktemp("net"), liars=2)
    yield network
    network.close()


def _watcher(net: InProcessNetwork, tmp: Path, now: list[float], **kw: Any) -> Watcher:
    return virtual_watcher(net, tmp, now, **kw)


def _liars(net: InProcessNetwork) -> set[str]:
    return {a.lower() for a in net.operator_addresses[:2]}


# -- an exhausted probe key is not passed forever ----------------------------------------------


def test_a_key_exhausted_by_load_does_not_pass_the_victims_frauds_forever(
    net: InProcessNetwork, tmp_path: Path, load: Load
) -> None:
    """The attack: load the challenger's box while it judges an honest task of the victim's
    policy, until that key's tries run out (the task is passed, warned: by design). Before the
    fix the exhaustion was persisted for good: a fraud under the victim's policy a day later
    whose first probe ran out of time too (the attacker loads the box again, briefly) was
    passed at once, never judged. Now the exhaustion ends: the fraud is deferred, tried again
    and reported."""
    victim = fresh_client()
    net.register(victim, NETCHECK, CAP)
    assert net.create(victim, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    key = probe_key(NETCHECK, CAP).hex()
    now = [1_000_000.0]
    load.start()

    load.failing = 10**6  # loaded for as long as the honest task is tried
    first = _watcher(net, tmp_path, now, once=True, retries=1).run()
    assert first.checked == 1 and not first.records
    assert "passed without a verdict" in first.warnings[-1]["warning"]
    assert Cursor.load(tmp_path / "cursor.json").keys[key][0] == 2  # exhausted

    fraud = net.create(victim, transfer(fresh_agent(), 50 * UNIT))
    assert fraud["attestation"]["decision"] == "allow"
    now[0] += DAY
    load.failing = 1  # one more probe out of time: the fraud's first
    second = _watcher(net, tmp_path, now, once=True, retries=1).run()
    assert set(second.operators) == _liars(net), second.text()
    assert len(second.records) == 1 and second.checked == 1
    assert not second.warnings, second.warnings
    assert Cursor.load(tmp_path / "cursor.json").deferred == {}


def test_every_pass_of_an_exhausted_key_is_warned(
    net: InProcessNetwork, tmp_path: Path, load: Load
) -> None:
    """Inside the exhaustion's window a task of the key whose probe fails is passed at once
    (the key would otherwise hold slots for good), each with its own warning."""
    client = fresh_client()
    net.register(client, HANGS, CAP)
    for _ in range(3):
        assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    now = [1_000_000.0]
    load.start()
    report = _watcher(net, tmp_path, now, once=True, retries=1).run()
    assert report.checked == 3
    passed = [w for w in report.warnings if "passed without a verdict" in w["warning"]]
    assert len(passed) == 3, report.warnings


# -- the deferred slots filled -----------------------------------------------------------------


def test_full_deferred_slots_neither_spin_nor_go_unsaid(
    net: InProcessNetwork, tmp_path: Path, load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a registrant fills the deferred slots with tasks of a hanging policy (1,024
    in the ~20 min its key takes to run out), so a fraud behind them is not read. Before the
    fix the watch then looped without resting (each loop a cursor write and fsync, a core at
    100 %: more load, more timeouts) and never said it had stopped reading. Now it rests until
    the next deferred try, warns once, and the fraud is reported once the key runs out."""
    monkeypatch.setattr(watch_module, "MAX_DEFERRED", 2)
    client, victim = fresh_client(), fresh_client()
    net.register(client, HANGS, CAP)
    net.register(victim, NETCHECK, CAP)
    for _ in range(3):
        assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    assert net.create(victim, transfer(fresh_agent(), 50 * UNIT))["attestation"]["decision"]
    now = [1_000_000.0]
    load.start()
    watcher = _watcher(net, tmp_path, now, once=True, retries=2)
    steps = 0
    real_step = watcher.step

    def step(cursor: Cursor, *, limit: int) -> bool:
        nonlocal steps
        steps += 1
        assert steps < 100, "the watch spins while its deferred slots are full"
        return real_step(cursor, limit=limit)

    monkeypatch.setattr(watcher, "step", step)
    report = watcher.run()
    assert set(report.operators) == _liars(net), report.text()
    assert len(report.records) == 1
    full = [w for w in report.warnings if "deferred" in w["warning"] and "read" in w["warning"]]
    assert len(full) == 1, report.warnings


# -- a hand-edited or corrupt cursor file ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"seq": 5, "ahead": 9, "deferred": {"50": "ab"}, "keys": {"ab": [1, 0.0]}},  # past ahead
        {"seq": 5, "ahead": 9, "deferred": {"3": "ab"}, "keys": {"ab": [1, 0.0]}},  # not after seq
        {"seq": 5, "ahead": 9, "deferred": {"7": "ab"}, "keys": {"ab": [1, 0.0]}},  # seq not 6
        {"seq": 9, "ahead": 5},  # seq past the last task read
        {"seq": -1},
        {"seq": "5"},
        {"seq": True},
        {"seq": 5.5},
        {"seq": 5, "horizon": 6},
        {"seq": 5, "ahead": 9, "deferred": {"6": "ab"}, "keys": {"ab": [-3, 0.0]}},
        {"seq": 5, "ahead": 9, "deferred": {"6": "ab"}, "keys": {"ab": "12"}},
        {"seq": 5, "ahead": 9, "deferred": {"6": "ab"}, "keys": {"ab": [1, "nan"]}},
        {"seq": 5, "ahead": 9, "deferred": {"6": "ab"}, "keys": {"ab": [1, 0.0, 7]}},
        {"seq": 5, "ahead": 9, "deferred": {"6": 7}},
        {"seq": 5, "ahead": 9, "deferred": ["6"]},
        {"seq": 5, "blocks": {"0xab": "7"}},
        {"seq": 5, "ahead": 9, "deferred": {"+6": "ab"}},
        {"seq": 5, "ahead": 90, "deferred": {"6_0": "ab"}},
        {"seq": 5, "ahead": 9, "deferred": {"6": "ab"}, "keys": {"ab": [1, float("nan")]}},
    ],
)
def test_a_hand_edited_cursor_fails_closed(tmp_path: Path, raw: dict[str, Any]) -> None:
    """A cursor whose parts disagree (a deferred task the watch never read, a seq past the last
    task read) or of the wrong types must be refused, typed: read as it was, the saved seq
    (one before the earliest deferred task) became the next run's ``ahead`` and every task in
    between was skipped; a string ``"12"`` read as tries 1, retry at 2."""
    path = tmp_path / "cursor.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigurationError, match="cursor file"):
        Cursor.load(path)


def test_a_consistent_cursor_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    good = Cursor(seq=5, horizon=2, ahead=9, deferred={6: "ab", 8: "cd"}, keys={"ab": (1, 5.0)})
    good.save(path)
    assert Cursor.load(path) == good
    path.write_text('{"seq": 7, "horizon": 3}\n')  # a file of before: nothing deferred
    assert Cursor.load(path) == Cursor(seq=7, horizon=3, ahead=7)


def test_a_deferred_seq_past_ahead_would_have_skipped_tasks(
    net: InProcessNetwork, tmp_path: Path, load: Load
) -> None:
    """The skip itself, end to end: refused at load, so no task is skipped."""
    victim = fresh_client()
    net.register(victim, NETCHECK, CAP)
    assert net.create(victim, transfer(fresh_agent(), 50 * UNIT))["attestation"]["decision"]
    now = [1_000_000.0]
    cursor = {"seq": 0, "ahead": 0, "deferred": {"40": "ab"}, "keys": {"ab": [1, now[0] + 200]}}
    (tmp_path / "cursor.json").write_text(json.dumps(cursor))
    with pytest.raises(ConfigurationError):
        _watcher(net, tmp_path, now, once=True).run()


# -- exactly once across a crash between judging and saving ------------------------------------


def test_a_crash_before_the_cursor_is_saved_loses_no_fraud_and_writes_one_record(
    net: InProcessNetwork, tmp_path: Path, load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the fraud behind a deferred task was judged (its record written) but before
    the cursor file was saved: the restart judges it again (the same record file, no second
    one), and a third run reports nothing more."""
    client, victim = fresh_client(), fresh_client()
    net.register(client, HANGS, CAP)
    net.register(victim, NETCHECK, CAP)
    assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    assert net.create(victim, transfer(fresh_agent(), 50 * UNIT))["attestation"]["decision"]
    now = [1_000_000.0]
    load.start()
    real_save = Cursor.save

    def crash(self: Cursor, path: Path) -> None:
        raise KeyboardInterrupt("killed before the cursor file was written")

    monkeypatch.setattr(Cursor, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _watcher(net, tmp_path, now, until=now[0] + 30, retries=2).run()
    assert not (tmp_path / "cursor.json").exists()
    assert len(list((tmp_path / "records").iterdir())) == 1  # judged, then killed
    monkeypatch.setattr(Cursor, "save", real_save)

    again = _watcher(net, tmp_path, now, until=now[0] + 30, retries=2).run()
    assert set(again.operators) == _liars(net)
    assert len(list((tmp_path / "records").iterdir())) == 1
    assert Cursor.load(tmp_path / "cursor.json").deferred  # the hanging task still waits
    third = _watcher(net, tmp_path, now, once=True, retries=2).run()
    assert not third.records and not third.operators
    assert Cursor.load(tmp_path / "cursor.json").deferred == {}


def test_a_deferred_task_the_source_drops_is_warned_not_silently_skipped(
    net: InProcessNetwork, tmp_path: Path, load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fresh_client()
    net.register(client, HANGS, CAP)
    assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    now = [1_000_000.0]
    load.start()
    _watcher(net, tmp_path, now, until=now[0] + 30, retries=2).run()
    assert Cursor.load(tmp_path / "cursor.json").deferred
    state = net.gateway.state
    monkeypatch.setattr(state, "tasks", lambda **kw: [])  # the source forgets it
    report = _watcher(net, tmp_path, now, once=True, retries=2).run()
    assert any("no longer lists" in w["warning"] for w in report.warnings), report.warnings
    cursor = Cursor.load(tmp_path / "cursor.json")
    assert cursor.deferred == {} and cursor.seq == cursor.ahead == 1


# -- the probe verdict kept per time limit -----------------------------------------------------


def test_a_held_verdict_answers_only_the_limits_it_speaks_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass under 20 s must not answer a 2 s probe; a timeout under 2 s must not answer a
    20 s one; a timeout under 20 s answers a 2 s one (for its while); params spelt in another
    key order are the same material (one probe), other values another."""
    outcomes: list[bool] = []  # True: out of time
    limits: list[float] = []

    def child(request: bytes, timeout: float) -> tuple[str | None, bool]:
        limits.append(timeout)
        if outcomes.pop(0):
            return _probe._verdict(None, False, timeout)
        return None, False

    monkeypatch.setattr(_probe, "_forked", child)
    monkeypatch.setattr(_probe, "_fork_safe", lambda: True)
    monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())
    monkeypatch.setattr(_probe, "_RETRY_AFTER", 60.0)
    first = {"max_per_tx": str(10 * UNIT), "allowed": []}
    reordered = dict(reversed(list(first.items())))

    outcomes[:] = [False, True]
    _probe.probe(NETCHECK, first, timeout=20.0)  # passes under 20 s
    with pytest.raises(_probe.PolicyRefused):
        _probe.probe(NETCHECK, reordered, timeout=2.0)  # probed again: out of time under 2 s
    _probe.probe(NETCHECK, reordered, timeout=20.0)  # the pass under 20 s still answers 20 s
    assert limits == [20.0, 2.0]

    other = {**first, "max_per_tx": str(11 * UNIT)}
    outcomes[:] = [True, False]
    with pytest.raises(_probe.PolicyRefused):
        _probe.probe(NETCHECK, other, timeout=20.0)
    with pytest.raises(_probe.PolicyRefused):
        _probe.probe(NETCHECK, other, timeout=2.0)  # held: out of time under 20 s, so 2 s too
    _probe.probe(NETCHECK, other, timeout=30.0)  # not held for a longer limit: probed, passes
    assert limits == [20.0, 2.0, 20.0, 30.0]


# -- uuid.parse: no other spelling reaches a refused builtin -----------------------------------

UUID_TEXT = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.mark.parametrize(
    "body",
    [
        '# uuid.parse(\nallow if { startswith(uuid.rfc4122("x"), "") }',
        'allow if { x := "uuid.parse("; startswith(uuid.rfc4122(x), "") }',
        "allow if { x := `uuid.parse(`; uuid.rfc4122(x) }",
        'allow if { startswith(uuid\u200b.rfc4122("x"), "") }',
        'allow if { startswith(uuid\u00a0.rfc4122("x"), "") }',
        'allow if { startswith(uuid\u3000.rfc4122("x"), "") }',
        'allow if { startswith(uuid.\u200brfc4122("x"), "") }',
        f'allow if {{ uuid.parse\u200b("{UUID_TEXT}") }}',
        f'allow if {{ uuid.pars\u0435("{UUID_TEXT}") }}',  # a Cyrillic e
        'allow if { uuid/*x*/.rfc4122("x") }',
        f'allow if {{ uuid.parse("{UUID_TEXT}") with uuid.parse as uuid.rfc4122 }}',
    ],
)
def test_no_uuid_parse_lookalike_reaches_another_builtin(body: str) -> None:
    from agentguard.policies._engine import PolicyEngine, PolicyEngineError

    policy = Policy("u", "t.allow", {"t.rego": "package t\nimport rego.v1\n" + body + "\n"})
    with pytest.raises(PolicyEngineError):
        PolicyEngine().evaluate(policy, input={}, params={}, wasm={})


# -- PROBE_UNAVAILABLE -------------------------------------------------------------------------


def test_probe_unavailable_is_never_resent_by_the_client_nor_a_retry_loop_at_the_gateway() -> None:
    """A hostile operator (or gateway) answering -32623: the SDK raises it typed, never sends
    the task again (only ``GatewayUnavailable`` is resent: a second task, a second payment);
    the gateway only flags the operator's failure retryable (it retries nothing on it)."""
    from agentguard._exceptions import GatewayUnavailable, PolicyProbeUnavailable
    from agentguard._gateway import _RPC_ERRORS
    from agentguard.network._rpc import PROBE_UNAVAILABLE
    from agentguard.network.gateway._operators import rpc_failure

    assert _RPC_ERRORS[PROBE_UNAVAILABLE] is PolicyProbeUnavailable
    assert not issubclass(PolicyProbeUnavailable, GatewayUnavailable)
    failure = rpc_failure({"code": PROBE_UNAVAILABLE, "message": "x" * 10_000})
    assert failure.retryable and failure.number == PROBE_UNAVAILABLE
    assert len(failure.message) == 500
    spoofed = rpc_failure({"code": str(PROBE_UNAVAILABLE), "message": 7})
    assert not spoofed.retryable and spoofed.rpc_code is None
