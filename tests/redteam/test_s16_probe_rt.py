"""Red team of session 16's probe work: the challenger's retries of a probe that failed for
the machine's sake (a hostile policy author, a colluding signer, a co-tenant loading the box),
its cursor across a crash, the verdict cache's key and the refusal of ``print`` /
``opa.runtime`` before compiling (real regopy)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard.challenge import Quorum, Watcher
from agentguard.challenge._run import run
from agentguard.challenge._sources import Materials, StateSource
from agentguard.challenge._watch import Cursor
from agentguard.policies import Policy, _probe
from agentguard.policies._engine import PolicyEngine, PolicyEngineError, _refusal
from tests.challenge.probe_stub import use_probe_child
from tests.challenge.test_watch_probe_retry import liars, watch
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

HANG_CAP = 1000 * UNIT  # the hostile registration's max_per_tx: its probe never finishes
VICTIM_CAP = 10 * UNIT


@pytest.fixture(scope="module")
def shared_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One public policy code, two registrations: the attacker's (params its probe hangs on,
    one allowed task, seq 1) listed first, then a victim's (a 10 USDC cap) under which two of
    three operators allow a 50 USDC spend (seq 2): a fraud the record alone proves."""
    from tests.challenge.inprocess import InProcessNetwork

    net = InProcessNetwork(tmp_path_factory.mktemp("net"), liars=2)
    attacker, victim = fresh_client(), fresh_client()
    net.register(attacker, NETCHECK, params(max_per_tx=HANG_CAP))
    assert net.create(attacker, transfer(fresh_agent(), UNIT))["attestation"]["decision"] == "allow"
    net.register(victim, NETCHECK, params(max_per_tx=VICTIM_CAP))
    fraud = net.create(victim, transfer(fresh_agent(), 50 * UNIT))
    assert fraud["attestation"]["decision"] == "allow"
    yield net
    net.close()


def probes(monkeypatch: pytest.MonkeyPatch, *, hang: bool, victim_failures: int) -> list[int]:
    """The probe's child: the attacker's registration never finishes (if ``hang``), the
    victim's fails ``victim_failures`` times (load), then the real child runs. Returns the
    victim's failures left."""
    real = _probe._forked
    left = [victim_failures]

    def child(request: bytes, timeout: float) -> tuple[str | None, bool]:
        cap = int(json.loads(json.loads(request)["params"])["params"]["max_per_tx"])
        if cap == VICTIM_CAP and left[0]:
            left[0] -= 1
            return _probe._verdict(None, False, timeout)
        if cap == HANG_CAP and hang:
            return _probe._verdict(None, False, timeout)
        return real(request, timeout)

    use_probe_child(monkeypatch, child)
    return left


def test_a_hanging_registration_does_not_poison_the_code_for_a_fraud(
    shared_code: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: a hostile policy author registers a public code under params its probe
    never finishes on and gets one task of it listed (a colluding signer). The watch's tries
    were counted per code: once they ran out, the victim's fraud under the same code (other
    params) was passed without a verdict after a single probe failure (a co-tenant loading
    the box for 20 s). Tries are now counted per probed material and params."""
    left = probes(monkeypatch, hang=True, victim_failures=1)
    report, pauses = watch(shared_code, tmp_path, retries=2, retry_delay=5.0)
    assert set(report.operators) == liars(shared_code), report.text()
    assert len(report.records) == 1 and left == [0]
    # the hanging task: two pauses, then passed with a warning; the fraud, deferred beside it
    # (the watch no longer waits behind the hanging task), judged after the first pause
    assert pauses == [(5.0, 0), (10.0, 0)]
    assert "probe failed 3 times in a row" in report.warnings[0]["warning"]
    assert Cursor.load(tmp_path / "cursor.json").seq == 2


class Killed(BaseException):
    """The watch process killed while it pauses before trying a task again."""


def test_a_watch_killed_while_it_waits_to_retry_resumes_before_the_task(
    shared_code: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed during the pause, the cursor on disk is before the fraud it has not judged (not
    after it), and a new process (nothing in memory) judges it."""
    left = probes(monkeypatch, hang=False, victim_failures=1)

    def killed(seconds: float) -> None:
        raise Killed

    quorum = Quorum(frozenset(a.lower() for a in shared_code.operator_addresses), 2)
    with pytest.raises(Killed):
        Watcher(
            shared_code.gateway.state,
            cursor_file=tmp_path / "cursor.json",
            out_dir=tmp_path / "records",
            quorum=quorum,
            sleep=killed,
            clock=lambda: 1_000_000.0,  # the clock ``watch`` starts from
        ).run()
    assert Cursor.load(tmp_path / "cursor.json").seq == 1 and left == [0]
    report, pauses = watch(shared_code, tmp_path)
    # the new process waits out the pause the killed one had left (kept in the cursor file),
    # its cursor still before the fraud, then judges it
    assert set(report.operators) == liars(shared_code) and pauses == [(60.0, 1)]
    assert Cursor.load(tmp_path / "cursor.json").seq == 2


def test_a_one_shot_run_checks_past_a_task_it_cannot_judge(
    shared_code: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: ``run`` stopped with ``ChallengeRetry`` at the first task it could not
    judge, so a registration that hangs the probe, listed first by the source audited (a
    hostile gateway, with its own keys when no ``--operator`` is given), kept every later task
    from ever being checked: every run stopped there again. Now it is reported as not judged,
    the fraud after it is found, and the cursor stays before it."""
    probes(monkeypatch, hang=True, victim_failures=0)
    source = StateSource(shared_code.state_path)
    try:
        report = run(source.evidence(after=0, limit=None), Materials(source), operators=None)
    finally:
        source.close()
    assert report.checked == 2 and len(report.discrepancies) == 1
    assert set(report.discrepancies[0].wrong_signers) == liars(shared_code)
    assert [f.cursor for f in report.not_judged] == [1]
    assert "could not be judged now" in report.not_judged[0].why
    assert report.cursor == 0  # the next run starts before the task not judged


@pytest.mark.parametrize(
    "body",
    [
        'print("MARK")',
        'internal.print(["MARK"])',
        'print\t(\n"MARK")',
        'print # a comment\n("MARK")',
    ],
)
def test_print_in_code_is_refused_however_spelled(body: str) -> None:
    module = f"package t\nimport rego.v1\nx := 1 if {{\n{body}\n}}\n"
    assert _refusal(module) is not None


@pytest.mark.parametrize(
    "module",
    [
        'package t\nimport rego.v1\nx := 1 if {\n#\rprint("MARK")\n}\n',
        'package t\nimport rego.v1\nx := 1 if { true }#\r\ny := 1 if { print("MARK") }\n',
        'package t\nimport rego.v1\nx := 1 if {\n#\x0bprint("MARK")\n}\n',
        'package t\nimport rego.v1\nx := 1 if {\n#\x0cprint("MARK")\n}\n',
        'package t\nimport rego.v1\nx := 1 if {\n#\x85print("MARK")\n}\n',
        'package t\nimport rego.v1\nx := 1 if {\n#\u2028print("MARK")\n}\n',
        'package t\nimport rego.v1\ns := "a\\\nprint(\\"MARK\\")"\nx := 1\n',
        'package t\nimport rego.v1\ns := `print("MARK")`\nx := 1 if { s != "" }\n',
        'package t\nimport rego.v1\n# print("MARK")\nx := 1\n',
        'package t\nimport rego.v1\ns := "\\"print(\\"MARK\\")"\nx := 1\n',
    ],
)
def test_what_the_refusal_reads_as_a_comment_or_string_never_prints(
    module: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Desync attempts between the refusal's lexer (strings and comments blanked) and
    rego-cpp's: a line end rego-cpp sees and the regex does not (CR, VT, FF, NEL, LS), a
    backslash-newline in a string. Whatever the refusal lets through, rego-cpp must not run a
    ``print`` from it (it writes to this process's fd 1)."""
    policy = Policy("p", "t.x", {"p.rego": module})
    try:
        PolicyEngine().evaluate(policy, input={}, params={}, wasm={})
    except PolicyEngineError:
        pass
    assert "MARK" not in capfd.readouterr().out


@pytest.mark.parametrize(
    "call", ["opa.runtime()", "opa . runtime()", "opa.\nruntime()", "opa.runtime( )"]
)
def test_opa_runtime_is_refused_however_spelled(call: str) -> None:
    policy = Policy("p", "t.x", {"p.rego": f"package t\nimport rego.v1\nx := {call}\n"})
    with pytest.raises(PolicyEngineError, match=r"opa\.runtime"):
        PolicyEngine().evaluate(policy, input={}, params={}, wasm={})


def test_the_verdict_cache_never_answers_for_other_material(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Materials that differ only where a naive key would not look: a module name holding
    the other's text boundary, NFC vs NFD text (rego-cpp compares bytes), two modules vs one,
    the schema's key order (the same schema: one verdict), the params' key order (canonical:
    one verdict). Each distinct material is probed."""
    monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())
    cafe = 'package t\nimport rego.v1\nx := 1 if { "caf\u00e9" != "" }\n'
    distinct = [
        Policy("p", "t.x", {"a.rego": cafe}),
        Policy("p", "t.x", {"a.rego": unicodedata.normalize("NFD", cafe)}),
        Policy("p", "t.x", {"a.rego": cafe, "b.rego": "package u\n"}),
        Policy("p", "t.x", {"a.rego" + cafe: "package u\n", "b.rego": cafe}),
        Policy("p", "t.x", {"a.regopackage u\n": cafe}),
    ]
    keys = {p.material_hash for p in distinct}
    assert len(keys) == len(distinct)
    before = _probe.probe_count()
    for policy in distinct:
        _probe.probe(policy, {"a": 1, "b": 2})
    assert _probe.probe_count() - before == len(distinct)
    schema_a = {"type": "object", "properties": {"a": {"type": "integer"}}}
    schema_b = {"properties": {"a": {"type": "integer"}}, "type": "object"}
    same_a = Policy("p", "t.x", {"a.rego": cafe}, schema_a)
    same_b = Policy("q", "t.x", {"a.rego": cafe}, schema_b)
    assert same_a.material_hash == same_b.material_hash
    _probe.probe(same_a, {"a": 1, "b": 2})
    probed = _probe.probe_count()
    _probe.probe(same_b, {"b": 2, "a": 1})
    assert _probe.probe_count() == probed  # the very same material and params: held
    assert _probe.probe_key(same_a, {"a": 1}) != _probe.probe_key(same_a, {"a": 2})


def test_the_cli_run_says_what_it_did_not_judge(
    shared_code: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 1 for the fraud found past the task not judged; the summary counts it and
    its cursor is before it."""
    from agentguard.cli import main

    probes(monkeypatch, hang=True, victim_failures=0)
    status = main(["challenge", "run", "--state", shared_code.state_path, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 1 and summary["discrepancies"] == 1 and summary["not_judged"] == 1
    assert summary["cursor"] == 0
    assert next(f for f in summary["findings"] if "not_judged" in f)["not_judged"]


@pytest.mark.parametrize(
    "body",
    [
        "time.now_ns() < 1",
        "time . now_ns() < 1",
        'io.jwt.decode_verify("a.b.c", {"secret": "k"})[0]',
    ],
)
def test_a_policy_cannot_read_the_clock(body: str) -> None:
    """The attack: a hostile policy author registers ``allow if time.now_ns() < DEADLINE``.
    Honest operators evaluate it before the deadline and sign allow; the challenger re-evaluates
    after it, gets deny, and writes a record, proven offline by anyone re-evaluating later, that
    names the honest operators as wrong signers (slashable). rego-cpp answered the real clock
    (``time.now_ns() > 1`` allowed). Refused before compiling, in every process."""
    module = f"package t\nimport rego.v1\ndefault allow := false\nallow if {{ {body} }}\n"
    policy = Policy("clock", "t.allow", {"p.rego": module})
    with pytest.raises(PolicyEngineError, match="read the evaluating machine's clock"):
        PolicyEngine().evaluate(policy, input={}, params={}, wasm={})
    as_text = 'package t\nimport rego.v1\nallow if { "time.now_ns()" != "" } # time.now_ns\n'
    assert _refusal(as_text) is None  # in a string or a comment it is no call


def test_a_forked_child_closes_what_it_holds_not_a_billion_numbers() -> None:
    """``os.closerange(keep + 1, 2**30)`` is one ``close_range`` syscall only where the kernel
    has it (5.9+) and no seccomp profile denies it (older container runtimes answer EPERM);
    otherwise CPython falls back to calling ``close`` on every number: a billion syscalls,
    minutes, in every forked probe child, so every probe ran out of time and every policy was
    refused. The child closes what ``/proc/self/fd`` lists instead. Simulated here: a
    ``closerange`` that, like that fallback, costs one call per number (refused above 2**16),
    with a listening socket and a high descriptor to close."""
    server = socket.socket()
    server.listen()
    high = fcntl.fcntl(server.fileno(), fcntl.F_DUPFD, 4000)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:

            def fallback(low: int, high: int) -> None:
                if high - low > 1 << 16:
                    raise RuntimeError("a close() per number")
                for fd in range(low, high):
                    with contextlib.suppress(OSError):
                        os.close(fd)

            os.closerange = fallback
            kept = _probe._detach(write)
            left = sorted(int(n) for n in os.listdir("/proc/self/fd"))
            os.write(kept, json.dumps(left).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    got = b""
    while chunk := os.read(read, 4096):
        got += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    os.close(high)
    server.close()
    assert os.waitstatus_to_exitcode(status) == 0, "the child's _detach failed"
    left = json.loads(got)
    assert high not in left and server.fileno() not in left
    assert len(left) <= 5  # 0, 1, 2, the pipe, and the listing's own while it reads
