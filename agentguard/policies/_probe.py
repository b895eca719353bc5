"""Try a policy in a child process before a long-lived process compiles it.

rego-cpp (regopy 1.5.2) can kill the process that runs it, whatever the input: some modules
segfault or abort while compiling or on their first query (``some v in [x]`` over an imported
input field; a rule named like a builtin's namespace), and a query has no time limit. An
operator compiles whatever policy a registration names, and anyone can register one, so one
such policy would take down every operator of the network, again after each restart.

``probe`` compiles the policy under its params and evaluates it on a few representative inputs
(a token payment with history and an x402 document, a contract call with calldata, a native
transfer with empty history) in a child process with a time limit. A child killed by a signal,
exiting badly or running out of time refuses the policy (``PolicyRefused``); an error the child
reports as a policy error (it does not compile, the params miss the schema, a query fails)
passes, since the engine reports the same error in process, as before. Verdicts are kept per
digest of the exact material and params in this process, refusals too, each answering only the
time limits it speaks for (``_Held``), so a policy is probed once per kind of limit.

The child is a ``fork`` of this process when no thread but agentguard's own runs (operators,
gateways: about the compile's cost plus ~13 ms, ``benchmarks/bench_probe.py``; it already
imported regopy and never touches the parent's engine or its lock), otherwise a fresh
interpreter (``python -P -m agentguard.policies._probe``, ~0.5 s more), since a fork copies
any lock another thread holds. Either child keeps no descriptor of the parent's but the
protocol pipe (a forked child outliving a killed server would hold its listening socket) and
runs under a CPU-time limit besides the parent's timer. Crashes that need a particular input
are not caught: see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import gc
import hashlib
import json
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentguard._dumps import forbid_core_dumps
from agentguard._intent import TransactionIntent
from agentguard.policies import Policy, canonical_json
from agentguard.policies._engine import PolicyEngine, PolicyEngineError

__all__ = [
    "PROBE_TIMEOUT",
    "PolicyRefused",
    "ProbeUnavailable",
    "probe",
    "probe_count",
    "probe_key",
    "same_material",
]

PROBE_TIMEOUT = 2.0
"""Seconds the child may take for the compile and every probe input (agent_spend: ~60 ms)."""
_MAX_VERDICTS = 4096
_RETRY_AFTER = 60.0
"""Seconds a refusal the policy may not own is kept (out of time, killed from outside, a bad
exit: a loaded box or the OOM killer can do it to a good policy): then it is probed again."""
_FAULTS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS}
)
_MEMORY = 2 << 30
_IMPORT_TIMEOUT = 60.0
"""Seconds a fresh interpreter may take to import agentguard and regopy (no policy runs yet)."""
_DONE = b"probed"
_READY = b"ready\n"
_WINDOW = re.compile(rb'"window_seconds":(\d{1,12})[,}]')
_AGENT, _TOKEN, _PAYEE = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


class PolicyRefused(PolicyEngineError):
    """The policy crashed the policy engine, or ran past the time limit, in a probe: it is
    not compiled in a long-lived process. ``reason``: what the child did; ``lasting``: whether
    that is the policy's own doing (a fault signal: refused for good) or may be the machine's
    (out of time, killed from outside: kept ``_RETRY_AFTER`` s, then probed again)."""

    def __init__(self, policy: Policy, reason: str, *, lasting: bool, held: bool = False) -> None:
        self.reason = reason
        self.lasting = lasting
        if lasting:
            why = (
                "it is refused: rego-cpp fails this way on every input, so it would take down "
                "every process that evaluates it. Rewrite the rules it trips on (run it with "
                "agentguard.policies._probe locally to see) and register the new code"
            )
        else:
            why = (
                "it is refused for now: this may be the machine's load rather than the policy, "
                f"so it is probed again after {_RETRY_AFTER:g} s (retry then); a policy that "
                "needs this long would stall every process that evaluates it"
            )
        earlier = " (an earlier probe's verdict)" if held else ""
        super().__init__(
            f"policy {policy.name!r} (code 0x{policy.code_hash.hex()}) {reason}{earlier}; {why}"
        )


class ProbeUnavailable(PolicyEngineError):
    """No child could be started or waited for (EAGAIN, ENOMEM, EMFILE...): nothing was
    judged and nothing is kept; the policy is not evaluated now, and may be later."""


@dataclass
class _Held:
    """What this process learnt of one material and params (``_material_key``): a verdict
    holds only for the time limits it says something about. A pass under a limit says the
    policy fits in any longer one, not in a shorter one (the challenger's 20 s pass must not
    answer a server's 2 s probe); a refusal that may be the machine's (out of time, killed from
    outside) says nothing of a longer limit, and holds ``_RETRY_AFTER`` s; a fault holds for
    good, whatever the limit."""

    fault: str | None = None  # what the child did, for good (a fault signal)
    passed: float = math.inf  # the shortest limit it finished within
    refused: str | None = None  # what the child did, maybe the machine's doing
    refused_limit: float = -math.inf  # the longest limit it was refused under
    refused_until: float = -math.inf  # when that refusal stops answering (monotonic)


# digest of the exact material and params probed -> what was learnt of it; no copy of the
# material is kept
_verdicts: OrderedDict[bytes, _Held] = OrderedDict()
_verdicts_lock = threading.Lock()
_probes = 0


def probe_count() -> int:
    """Child processes started by ``probe`` in this process (tests assert the cache with it)."""
    return _probes


def probe(policy: Policy, params: Mapping[str, Any], *, timeout: float = PROBE_TIMEOUT) -> None:
    """``PolicyRefused`` if ``policy`` under ``params`` crashes or hangs a child process;
    ``ProbeUnavailable`` if no child could run; returns otherwise (a policy error stays for the
    in-process engine to report). A held verdict answers only the limits it speaks for
    (``_Held``)."""
    try:
        params_json = canonical_json({"params": params})
    except (TypeError, ValueError):
        return  # the engine refuses such params itself, before compiling
    key = _material_key(policy, params_json)
    with _verdicts_lock:
        held = _verdicts.get(key)
        if held is not None:
            _verdicts.move_to_end(key)
            if held.fault is not None:
                raise PolicyRefused(policy, held.fault, lasting=True, held=True)
            if held.passed <= timeout:
                return
            if (
                held.refused is not None
                and timeout <= held.refused_limit
                and time.monotonic() < held.refused_until
            ):
                raise PolicyRefused(policy, held.refused, lasting=False, held=True)
    request = _request(policy, params_json, timeout)
    try:
        reason, lasting = _forked(request, timeout) if _fork_safe() else _spawned(request, timeout)
    except OSError as exc:  # no child (EAGAIN, ENOMEM, EMFILE, ECHILD...): nothing judged, kept
        raise ProbeUnavailable(
            f"policy {policy.name!r} could not be probed ({type(exc).__name__}: "
            f"{exc.strerror or exc}); it is not evaluated: try again"
        ) from None
    with _verdicts_lock:
        held = _verdicts.setdefault(key, _Held())
        _verdicts.move_to_end(key)
        if reason is None:
            held.passed = min(held.passed, timeout)
        elif lasting:
            held.fault = reason
        else:
            held.refused, held.refused_limit = reason, timeout
            held.refused_until = time.monotonic() + _RETRY_AFTER
        if len(_verdicts) > _MAX_VERDICTS:
            _verdicts.popitem(last=False)
    if reason is not None:
        raise PolicyRefused(policy, reason, lasting=lasting)


def probe_key(policy: Policy, params: Mapping[str, Any]) -> bytes:
    """What one probe judges: the exact material and params (a code's probe may hang under one
    registration's params and not another's). Params ``probe`` skips key as their digest."""
    try:
        return _material_key(policy, canonical_json({"params": params}))
    except (TypeError, ValueError):
        return hashlib.sha256(policy.material_hash + b"\0unencodable").digest()


def _material_key(policy: Policy, params_json: bytes) -> bytes:
    """sha256 of everything the child evaluates: ``Policy.material_hash`` (entrypoint, named
    modules, schema; computed once per policy object) and the canonical params."""
    return hashlib.sha256(policy.material_hash + params_json).digest()


def same_material(policy: Policy, entrypoint: str, modules: Mapping[str, str]) -> bool:
    """Whether ``policy`` is exactly this entrypoint and these named modules (what its code
    hash alone does not pin down): a cache by code hash must check it before it answers."""
    return policy.entrypoint == entrypoint and policy.modules == modules


def _fork_safe() -> bool:
    """Whether every other thread is one of agentguard's own (``agentguard-*``: the state's
    checkpointer, the gateway's usage sweep): none runs rego-cpp, Python imports or anything
    else the child uses, so no lock they may hold at the fork is one the child needs. Any other
    thread might (a host application's), and then a fresh interpreter probes."""
    current = threading.current_thread()
    return all(t is current or t.name.startswith("agentguard-") for t in threading.enumerate())


def _request(policy: Policy, params_json: bytes, timeout: float = PROBE_TIMEOUT) -> bytes:
    """What the child probes: the policy, ``canonical_json({"params": ...})`` and the CPU
    seconds it may use (the parent's timer, rounded up, and one more)."""
    material = {
        "name": policy.name,
        "entrypoint": policy.entrypoint,
        "modules": dict(policy.modules),
        "params_schema": policy.params_schema,
    }
    cpu = math.ceil(timeout) + 1
    return json.dumps({"policy": material, "params": params_json.decode(), "cpu": cpu}).encode()


def _verdict(status: int | None, done: bool, timeout: float) -> tuple[str | None, bool]:
    """None if the child finished, else what happened (``status``: None if it ran out of
    time); and whether that is the policy's own doing (it passed, or a fault signal), so the
    verdict is kept for good rather than for ``_RETRY_AFTER``."""
    if status is None:
        return (
            f"did not finish compiling and evaluating the probe inputs within the probe's time "
            f"limit ({timeout:g} s; rego-cpp has none of its own)",
            False,
        )
    if done and status == 0:
        return None, True
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        if number in _FAULTS:
            return f"crashed the policy engine ({name}) while being compiled or evaluated", True
        if number == signal.SIGXCPU:
            return "ran out of the probe's CPU time limit (SIGXCPU)", False
        return f"was killed ({name}) while being compiled or evaluated, from outside", False
    return f"made the policy engine exit with status {os.waitstatus_to_exitcode(status)}", False


def _forked(request: bytes, timeout: float) -> tuple[str | None, bool]:
    """The probe in a fork of this process (``_fork_safe``)."""
    global _probes
    read, write = os.pipe()
    _probes += 1
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # pragma: no cover - the child; only its exit status and pipe are seen
        code = 70
        try:
            os.close(read)
            gc.disable()  # no finalizer of a parent's object may touch a descriptor reused here
            write = _detach(write)
            _child(request)
            os.write(write, _DONE)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    done: bool | None = None
    try:
        done = _wait_for(read, time.monotonic() + timeout)
    finally:
        os.close(read)
        if done is not True:  # over time, or _wait_for failed: never leave it running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored by the host: reaped already
            status = 0 if done else int(signal.SIGKILL)
    return _verdict(None if done is None else status, bool(done), timeout)


def _detach(keep: int) -> int:
    """In a forked child: stdin, stdout and stderr on /dev/null (rego-cpp's ``print`` and last
    words are not the parent's output, as in a fresh interpreter), every other descriptor but
    ``keep`` closed (a child outliving its killed parent must not hold the parent's listening
    socket, pipes or files). Returns ``keep``'s number (moved above 2 if it was one of them)."""
    if keep <= 2:
        keep = fcntl.fcntl(keep, fcntl.F_DUPFD, 3)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in _held():
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):  # the listing's own, closed already
                os.close(fd)
    return keep


def _held() -> list[int]:
    """The descriptors this process holds: listed, not every number up to a ceiling. Closing
    a range is one ``close_range`` only where the kernel has it (5.9+) and no seccomp profile
    denies it; otherwise CPython calls ``close`` on every number (a billion: minutes)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError, ValueError):
            return [int(name) for name in os.listdir(folder)]
    return list(range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


def _readable(fd: int, deadline: float) -> bool:
    """Whether ``fd`` has data (or EOF) before ``deadline``."""
    left = deadline - time.monotonic()
    poller = select.poll()  # not select(): an fd above 1023 is common in a busy server
    poller.register(fd, select.POLLIN)
    return left > 0 and bool(poller.poll(left * 1000))


def _wait_for(fd: int, deadline: float) -> bool | None:
    """True if the child wrote ``_DONE`` and closed the pipe, False if it closed it without
    (it died), None if ``deadline`` passed first."""
    got = b""
    while True:
        if not _readable(fd, deadline):
            return None
        chunk = os.read(fd, 64)
        if not chunk:
            return got == _DONE
        got += chunk


def _ready(fd: int, deadline: float) -> bool | None:
    """Like ``_wait_for`` for ``_READY``, read a byte at a time: nothing after it is taken."""
    got = b""
    while len(got) < len(_READY):
        if not _readable(fd, deadline):
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return False
        got += chunk
    return got == _READY


def _spawned(request: bytes, timeout: float) -> tuple[str | None, bool]:
    """The probe in a fresh interpreter; the time limit starts once it has imported regopy.
    It talks over a pipe of its own, not stdout: a policy's ``print`` writes there, and must
    not change the verdict (it does not in a fork either)."""
    global _probes
    _probes += 1
    read, write = os.pipe()
    try:
        child = subprocess.Popen(
            # -P and cwd /: no module is imported from the (possibly writable) working folder
            [sys.executable, "-P", "-m", "agentguard.policies._probe", str(write)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_child_env(),
            cwd="/",
            pass_fds=(write,),
        )
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)
    assert child.stdin is not None
    done = None
    try:
        # ready once imported (no policy code runs yet); only then the request: a write to a
        # child that is not reading could block this thread without a bound
        done = _ready(read, time.monotonic() + _IMPORT_TIMEOUT)
        if done:
            with contextlib.suppress(BrokenPipeError):  # it died reading: no _DONE
                child.stdin.write(request)
                child.stdin.close()
            done = _wait_for(read, time.monotonic() + timeout)
    finally:
        os.close(read)
        with contextlib.suppress(OSError):  # not ready: never written; or a broken pipe
            child.stdin.close()
        if child.poll() is None and done is not True:
            child.kill()
        returncode = child.wait()
    if done is None:
        return _verdict(None, False, timeout)
    status = -returncode if returncode < 0 else returncode << 8  # a waitpid status
    return _verdict(status, bool(done), timeout)


def _child_env() -> dict[str, str]:
    """This environment, with the folder this agentguard came from first on the path: the
    child probes with this very code (a checkout not installed, too)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _child(request: bytes) -> None:
    """Compile and evaluate in this (child) process with an engine of its own (it imports
    nothing: a forked child must not wait for an import lock another thread held)."""
    faulthandler.disable()  # the parent's pytest or -X faulthandler: no traceback, same signal
    forbid_core_dumps()  # a hostile policy crashes it on purpose: no core of the parent memory
    asked = json.loads(request)
    material = asked["policy"]
    policy = Policy(
        name=material["name"],
        entrypoint=material["entrypoint"],
        modules=material["modules"],
        params_schema=material["params_schema"],
    )
    params_json = asked["params"].encode()
    params = json.loads(params_json)["params"]
    _limit_memory()
    _limit_cpu(int(asked.get("cpu", math.ceil(PROBE_TIMEOUT) + 1)))
    engine = PolicyEngine()
    for parsed, wasm in _inputs(params_json):
        with contextlib.suppress(Exception):  # the engine raises the same in process
            engine.evaluate(policy, input=parsed, params=params, wasm=wasm, params_json=params_json)


def _limit_cpu(seconds: int) -> None:
    """At most ``seconds`` more CPU time (SIGXCPU, then SIGKILL a second later): a bound of
    its own besides the parent's timer, for a child whose parent was killed before it."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime) + seconds
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def _limit_memory() -> None:
    """At most ``_MEMORY`` more address space than the child started with: a policy that
    allocates without end makes rego-cpp abort here, not the machine swap."""
    try:
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return  # not Linux: no limit
    resource.setrlimit(resource.RLIMIT_AS, (size + _MEMORY, resource.RLIM_INFINITY))


def _inputs(params_json: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Inputs shaped as an operator's (``policy_input``, the gateway's ``wasm_data``)."""
    now = int(time.time())
    windows = {"3600", "86400", *(w.decode() for w in _WINDOW.findall(params_json))}
    payment = TransactionIntent.erc20_transfer(
        sender=_AGENT, token=_TOKEN, recipient=_PAYEE, amount=2_500_000, chain_id=8453
    )
    call = TransactionIntent(
        **{
            "from": _AGENT,
            "to": _TOKEN,
            "data": bytes.fromhex("095ea7b3" + "00" * 12 + _PAYEE[2:] + "ff" * 32),
            "chain_id": 8453,
            "function_signature": "approve(address,uint256)",
        }
    )
    native = TransactionIntent(**{"from": _AGENT, "to": _PAYEE, "value": 10**18, "chain_id": 1})
    out = []
    for intent, spent, approved in (
        (payment, 7_000_000, False),
        (call, 0, True),
        (native, None, False),
    ):
        spend = intent.spend.wasm()
        history = {
            w: {
                "count": 3,
                "spent": {spend["asset"]: str(spent)},
                "projected": {spend["asset"]: str(spent + int(spend["amount"]))},
            }
            for w in sorted(windows)
            if spent is not None
        }
        wasm: dict[str, Any] = {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": approved,
            "spend": spend,
            "history": history,
        }
        if intent is payment:
            wasm["x402"] = {
                "scheme": "exact",
                "network": "base",
                "asset": _TOKEN,
                "amount": spend["amount"],
                "pay_to": _PAYEE,
                "resource": "https://example.com/report",
                "x402_version": 1,
            }
        out.append((intent.parsed(), wasm))
    return out


def _main() -> int:
    """The fresh-interpreter child: ``ready`` on the descriptor its first argument names, the
    request on stdin, then ``probed`` on that descriptor (stdout is /dev/null: a policy may
    ``print``)."""
    out = int(sys.argv[1])
    os.write(out, _READY)
    request = sys.stdin.buffer.read()
    _child(request)
    os.write(out, _DONE)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
