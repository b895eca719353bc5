"""The policy probe (``agentguard.policies._probe``) with real regopy: what crashes or hangs the
engine in a child is refused, everything else passes, and each verdict is reached once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentguard.policies import Policy, _probe, bundled, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._probe import PolicyRefused, probe, probe_count

SEGV = "package t\nimport input.secret\nallow if { some v in [secret]; secret }"
ABORT = 'package a.t\nobject := {"get": 1}\nallow if object.get(input, "secret", 0) else := false'
HANG = (
    "package t\nallow if { some i in numbers.range(1, 3000); "
    "some j in numbers.range(1, 3000); i * j == -1 }"
)
SPEND_PARAMS: dict[str, Any] = {
    "max_per_tx": {"0x" + "b2" * 20: "1000000"},
    "allowed_recipients": ["0x" + "c3" * 20],
    "window_caps": [{"asset": "0x" + "b2" * 20, "window_seconds": 3600, "max_amount": "5"}],
}
_serial = iter(range(1 << 30))


def policy(source: str, entrypoint: str = "t.allow") -> Policy:
    """A new code hash each time (a comment), so no earlier verdict answers."""
    return Policy("t", entrypoint, {"p.rego": f"{source}\n# {next(_serial)}\n"})


@pytest.mark.parametrize(
    ("source", "entrypoint", "said"),
    [(SEGV, "t.allow", "(SIGSEGV)"), (ABORT, "a.t.allow", "(SIGABRT)")],
)
def test_a_crash_is_refused_with_what_happened(source: str, entrypoint: str, said: str) -> None:
    with pytest.raises(PolicyRefused) as refused:
        probe(policy(source, entrypoint), {})
    assert isinstance(refused.value, PolicyEngineError)
    assert said in str(refused.value) and "it is refused" in str(refused.value)


@pytest.mark.parametrize("name", bundled())
def test_every_bundled_policy_passes(name: str) -> None:
    for params in ({}, SPEND_PARAMS):
        probe(load(name), params)


def test_a_policy_error_passes_and_the_engine_reports_it_as_before() -> None:
    broken = policy("package t\nallow if {")
    probe(broken, {})
    with pytest.raises(PolicyEngineError, match="does not compile") as error:
        PolicyEngine().evaluate(broken, input={}, params={}, wasm={})
    assert not isinstance(error.value, PolicyRefused)


def test_each_verdict_is_reached_once_refusals_too() -> None:
    good, bad = policy("package t\nallow if input.to"), policy(SEGV)
    probe(good, {})
    with pytest.raises(PolicyRefused):
        probe(bad, {})
    before = probe_count()
    for _ in range(3):
        probe(good, {})
        with pytest.raises(PolicyRefused, match="SIGSEGV"):
            probe(bad, {})
    assert probe_count() == before
    probe(good, {"other": "params"})  # another configuration is probed on its own
    assert probe_count() == before + 1


def test_a_process_with_threads_probes_in_a_fresh_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fork would copy a lock another thread holds; with a second thread running the child
    is a new interpreter, which judges the same."""
    forked: list[bytes] = []
    monkeypatch.setattr(_probe, "_forked", lambda request, timeout: forked.append(request))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        probe(policy("package t\nallow if input.to"), {})
        with pytest.raises(PolicyRefused, match="SIGABRT"):
            probe(policy(ABORT, "a.t.allow"), {})
        with pytest.raises(PolicyRefused, match="time limit"):
            probe(policy(HANG), {}, timeout=0.3)
    finally:
        stop.set()
        other.join()
    assert forked == []


def _children() -> set[int]:
    """This process's live child processes."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(p) for p in (task / "children").read_text().split())
    return found


def _evaluating(pid: int) -> bool:
    """Whether the child has set its CPU limit (it then compiles), or used 1.5 s of CPU (more
    than a fresh interpreter's imports: it evaluates, with no limit set)."""
    with contextlib.suppress(OSError):
        if "Max cpu time              unlimited" not in Path(f"/proc/{pid}/limits").read_text():
            return True
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") > 1.5
    return False


def _while_probing(inspect: Callable[[int], None], thread_name: str, timeout: float) -> None:
    """Probe HANG with a thread named ``thread_name`` beside (``agentguard-*``: a fork, else a
    fresh interpreter) that calls ``inspect`` with the probe child's pid once that child
    evaluates (``_evaluating``), then kills it."""
    before = _children()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            while True:
                new = _children() - before
                for pid in new:
                    if _evaluating(pid):
                        try:
                            inspect(pid)
                        finally:
                            os.kill(pid, signal.SIGKILL)
                        return
                time.sleep(0.01)
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    inspector = threading.Thread(target=watch, name=thread_name)
    inspector.start()
    try:
        with pytest.raises(PolicyRefused, match="SIGKILL"):
            probe(policy(HANG), {}, timeout=timeout)
    finally:
        inspector.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("thread_name", ["agentguard-test", "host"], ids=["fork", "fresh"])
def test_a_probe_child_holds_no_inherited_descriptor_and_has_a_cpu_limit(
    thread_name: str,
) -> None:
    """A hanging child that outlives its killed parent (a server) held the parent's listening
    socket, so the restarted server could not bind its port; and only the parent's timer
    bounded it. The child now keeps no descriptor of the parent's but its protocol pipe, and
    has a CPU-time limit of its own."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    seen: dict[str, Any] = {}

    def inspect(pid: int) -> None:
        fds = Path(f"/proc/{pid}/fd")
        seen["targets"] = [os.readlink(fds / fd) for fd in os.listdir(fds)]
        seen["limits"] = Path(f"/proc/{pid}/limits").read_text()
        server.close()  # the parent lets go of its port; the child is still running here
        again = socket.socket()
        try:
            again.bind(("127.0.0.1", port))  # EADDRINUSE while the child holds the socket
            seen["bound"] = True
        except OSError:
            seen["bound"] = False
        finally:
            again.close()

    _while_probing(inspect, thread_name, timeout=60.0)
    assert seen["bound"], seen["targets"]
    assert not any(t.startswith("socket:") for t in seen["targets"]), seen["targets"]
    assert sum(t.startswith("pipe:") for t in seen["targets"]) <= 2  # protocol (and stdin)
    (cpu,) = [line for line in seen["limits"].splitlines() if line.startswith("Max cpu time")]
    soft, hard = cpu.split()[3:5]
    assert soft != "unlimited" and int(soft) <= 64 and int(hard) == int(soft) + 1, cpu
    (core,) = [line for line in seen["limits"].splitlines() if line.startswith("Max core")]
    assert core.split()[4] == "0", core  # no core dump of the parent's memory


def test_a_crashing_policy_leaves_no_core_dump_of_the_parent(tmp_path: Path) -> None:
    """A hostile policy crashes the probe's child on purpose; with core dumps on (``ulimit -c
    unlimited``, ``core_pattern`` a file) the child's core held the parent's memory: an
    operator's key, the gateway's API keys."""
    pattern = Path("/proc/sys/kernel/core_pattern")
    if not pattern.exists() or pattern.read_text().startswith("|"):
        pytest.skip("core dumps go to a program here, not to a file this test can look for")
    script = (
        "import sys\n"
        "from agentguard.policies import Policy\n"
        "from agentguard.policies._probe import PolicyRefused, probe\n"
        "MARKER = 'S16-CORE-' + 'MARKER' * 4\n"
        f"policy = Policy('segv', 't.allow', {{'t.rego': {SEGV!r}}})\n"
        "try:\n"
        "    probe(policy, {})\n"
        "except PolicyRefused as exc:\n"
        "    sys.exit(0 if 'SIGSEGV' in str(exc) else 3)\n"
        "sys.exit(4)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", "-c", f'ulimit -c unlimited && exec "{sys.executable}" -c "$0"', script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("core")]


@pytest.mark.parametrize("thread_name", ["agentguard-test", "host"], ids=["fork", "fresh"])
def test_a_hang_is_killed_at_the_time_limit_not_waited_for(
    thread_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child of a hanging policy is killed (SIGKILL) by the parent's timer, and reaped."""
    killed: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, number: int) -> None:
        killed.append((pid, number))
        real_kill(pid, number)

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setattr(subprocess.Popen, "kill", lambda self: kill(self.pid, signal.SIGKILL))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name=thread_name)
    other.start()
    try:
        with pytest.raises(PolicyRefused, match=r"within the probe's time limit \(0\.3 s"):
            probe(policy(HANG), {}, timeout=0.3)
    finally:
        stop.set()
        other.join()
    ((pid, number),) = killed
    assert number == signal.SIGKILL
    assert not Path(f"/proc/{pid}").exists()  # reaped: no zombie left


@pytest.mark.parametrize("thread_name", ["agentguard-test", "host"], ids=["fork", "fresh"])
def test_a_policy_that_prints_is_judged_alike_in_both_children(
    thread_name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """rego-cpp's ``print`` writes to the process's stdout (fd 1). The fresh interpreter's
    stdout was its protocol pipe, so a printing policy was refused there ("exit status 0")
    and passed in a fork, whose print went to the parent's own stdout. The engine now refuses
    ``print`` before compiling (``test_a_policy_cannot_write_to_the_process_stdout``): both
    children leave that refusal to the process, and neither writes to the parent's output."""
    printing = policy('package t\nimport rego.v1\nallow if { print("S16-PRINTED", input); true }')
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name=thread_name)
    other.start()
    try:
        probe(printing, {})
    finally:
        stop.set()
        other.join()
    assert "S16-PRINTED" not in capfd.readouterr().out  # not the parent's output either


def test_a_refusal_says_whether_it_is_for_good() -> None:
    """A timeout may be the machine's load: its message says what happened and that it is
    tried again, not that rego-cpp fails this way on every input (a crash's message)."""
    with pytest.raises(PolicyRefused) as hung:
        probe(policy(HANG), {}, timeout=0.3)
    said = str(hung.value)
    assert not hung.value.lasting and "every input" not in said
    assert "within the probe's time limit (0.3 s" in said and "probed again after 60 s" in said
    crashing = policy(SEGV)
    with pytest.raises(PolicyRefused) as crashed:
        probe(crashing, {})
    assert crashed.value.lasting and "every input" in str(crashed.value)
    assert "earlier probe" not in str(crashed.value)
    with pytest.raises(PolicyRefused, match=r"\(an earlier probe's verdict\)") as again:
        probe(crashing, {})
    assert again.value.lasting


def test_the_fresh_interpreter_imports_nothing_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m`` puts the working folder first on ``sys.path``: a ``regopy.py`` or an
    ``agentguard`` package planted there (a server started in a shared folder) ran in the
    probe child. It is started with ``-P`` in ``/``."""
    marker = tmp_path / "imported"
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (tmp_path / "regopy.py").write_text(plant + "raise ImportError('planted')\n")
    (tmp_path / "agentguard").mkdir()
    (tmp_path / "agentguard" / "__init__.py").write_text(plant)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_probe, "_fork_safe", lambda: False)
    probe(policy("package t\nallow if input.to"), {})
    assert not marker.exists(), marker.read_text()


def test_the_verdict_cache_keeps_no_copy_of_the_material() -> None:
    """A hostile gateway could fill 4,096 entries with 256 KiB of material each: the cache
    holds a digest of the material, not the material."""
    text = "S16" * 20_000
    probe(policy(f"package t\nallow if input.to\nx := {text!r}"), {})
    assert all(isinstance(k, bytes) and len(k) == 32 for k in _probe._verdicts)
    assert text not in repr(list(_probe._verdicts.items()))


def test_the_material_digest_separates_every_field() -> None:
    """No two materials share a digest: the text moved between entrypoint, names and texts,
    a NUL join, a module split in two, other params or schema."""
    base = Policy("t", "t.allow", {"a.rego": "package t\nallow := true", "b.rego": "x"})
    variants = [
        base,
        Policy("t", "t.allow", {"a.rego": "package t\nallow := true\x00x"}),
        Policy("t", "t.allow", {"a.rego": "package t\nallow := truex"}),
        Policy("t", "t.allow", {"a.rego": "package t\nallow := true", "bb.rego": "x"}),
        Policy("t", "t.allow", {"a.regop": "ackage t\nallow := true", "b.rego": "x"}),
        Policy("t", "t.allowa.rego", {"": "package t\nallow := true", "b.rego": "x"}),
        Policy("t", "t.allow", {"a.rego": "package t\nallow := true", "b.rego": "x"}, {"a": 1}),
    ]
    params = _probe.canonical_json({"params": {}})
    keys = {_probe._material_key(p, params) for p in variants}
    keys.add(_probe._material_key(base, _probe.canonical_json({"params": {"a": 1}})))
    assert len(keys) == len(variants) + 1
    renamed = Policy("other name", "t.allow", dict(base.modules))  # the name is not evaluated
    assert _probe._material_key(renamed, params) == _probe._material_key(base, params)


def test_a_fresh_interpreter_stuck_before_reading_does_not_block_the_prober(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request went to the child's stdin before it was ready: a child stuck importing (a
    slow disk, a site hook) never reads it, and a request larger than the pipe's buffer
    blocked the probing thread for good. The request is sent once the child is ready; not
    ready in time is a timeout (not for good)."""
    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(3600)\n")
    real_env = _probe._child_env
    monkeypatch.setattr(_probe, "_child_env", lambda: {**real_env(), "PYTHONPATH": f"{tmp_path}"})
    monkeypatch.setattr(_probe, "_fork_safe", lambda: False)
    monkeypatch.setattr(_probe, "_IMPORT_TIMEOUT", 1.0)
    big = policy("package t\nallow if input.to\n# " + "x" * (1 << 20))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            probe(big, {})
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    prober = threading.Thread(target=run, name="prober")
    prober.start()
    prober.join(120)  # a liveness guard: before the fix it never returned
    assert not prober.is_alive()
    (refused,) = outcome
    assert isinstance(refused, PolicyRefused) and not refused.lasting, refused
