"""Red team of the policy probe (session 15): ways a policy that crashes rego-cpp still reaches
a long-lived process's engine unprobed (real regopy, real child processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentguard.policies import Policy
from agentguard.policies._probe import PolicyRefused, probe

ROOT = Path(__file__).resolve().parents[2]

# SIGSEGV in rego-cpp 1.5.2 on every input (tests/policies/test_probe.py)
SEGV = "package t\nimport input.secret\nallow if { some v in [secret]; secret }\n# s15 rt "
OTHER = "package u\nx := 1\n"


def twins(tag: str) -> tuple[Policy, Policy]:
    """Two policies with one code hash: ``code_hash`` is keccak(entrypoint ‖ 0 ‖ module ‖ 0 ‖
    ...) without module names, so a NUL moves text between the entrypoint and a module. The
    first never reaches rego-cpp (its entrypoint is refused first: a policy error, which the
    probe passes); the second crashes it."""
    crash = SEGV + tag + "\n"
    harmless = Policy("harmless", "t.allow\0" + crash, {"z.rego": OTHER})
    crashing = Policy("crashing", "t.allow", {"a.rego": crash, "z.rego": OTHER})
    assert harmless.code_hash == crashing.code_hash
    return harmless, crashing


def test_a_verdict_is_for_the_material_probed_not_its_code_hash() -> None:
    """The verdict cache answered for any material with the probed one's code hash: probing
    the harmless twin made its crashing twin pass unprobed."""
    harmless, crashing = twins("probe")
    probe(harmless, {})
    with pytest.raises(PolicyRefused, match="SIGSEGV"):
        probe(crashing, {})


_OPERATOR = textwrap.dedent(
    """
    import sys
    from coincurve import PrivateKey
    from agentguard.network._rpc import RPCError
    from agentguard.network.operator import Operator
    from agentguard.network.registry import Registry
    from tests.network.test_policy_probe import hostile_task
    from tests.redteam.test_s15_probe import twins

    harmless, crashing = twins(sys.argv[1])
    operator = Operator(PrivateKey(), Registry(":memory:"))
    for policy in (harmless, crashing):
        try:
            operator.evaluate_and_sign(hostile_task(policy))
        except RPCError as exc:
            print(policy.name, exc.code, exc.message.replace("\\n", " "), flush=True)
    """
)


def test_an_operator_probes_the_material_it_compiles() -> None:
    """A hostile gateway (or an owner) hands an operator the harmless twin, then the crashing
    one with the same code hash, schema and params: the operator's "validated" cache skipped
    the probe and its engine compiled the crashing twin, killing the operator (SIGSEGV). Run
    in a child so that crash is seen as one."""
    run = subprocess.run(
        [sys.executable, "-c", _OPERATOR, "operator"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    lines = run.stdout.splitlines()
    # refused at the material (a NUL) or by the engine (no 'package.rule'): never compiled
    assert lines[0].startswith(("harmless -32602", "harmless -32615")), lines
    assert "NUL" in lines[0] or "entrypoint" in lines[0], lines
    assert lines[1].startswith("crashing -32615") and "SIGSEGV" in lines[1], lines


def test_a_time_limit_refusal_is_not_kept_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    """A good policy that ran out of time once (a loaded box, a stalled child: ``timeout=0``
    stands for it) was refused in this process until it restarted: the gateway refused its
    registration, an operator denied that client for good. Such a refusal is retried after
    ``_RETRY_AFTER`` (0 here); a crash's refusal stays."""
    from agentguard.policies import _probe

    monkeypatch.setattr(_probe, "_RETRY_AFTER", 0.0, raising=False)
    good = Policy("good", "t.allow", {"p.rego": "package t\nallow := true\n# s15 rt slow\n"})
    with pytest.raises(PolicyRefused, match="time limit"):
        probe(good, {}, timeout=0.0)
    probe(good, {})  # probed again, and it passes
    _, crashing = twins("kept")
    with pytest.raises(PolicyRefused, match="SIGSEGV"):
        probe(crashing, {})
    before = _probe.probe_count()
    with pytest.raises(PolicyRefused, match="SIGSEGV"):
        probe(crashing, {}, timeout=0.0)  # the verdict, not a new probe
    assert _probe.probe_count() == before


NUL_TWIN_A = Policy(
    "a",
    "t.allow",
    {"a.rego": "package t\nallow if input.x == 1\n\0package t\nallow if input.x == 2\n"},
)
NUL_TWIN_B = Policy(
    "b",
    "t.allow",
    {
        "a.rego": "package t\nallow if input.x == 1\n",
        "b.rego": "package t\nallow if input.x == 2\n",
    },
)


def test_no_two_policies_that_evaluate_differently_share_a_code_hash() -> None:
    """rego-cpp reads a module up to a NUL, so a module "X\\0Y" is the policy X, while modules
    X and Y (the same code hash) allow what Y allows too: one policy id for two policies, and an
    engine (keyed by code hash) answering for one with the other's bundle. A NUL is refused in
    the material a gateway or an operator accepts and by the engine."""
    from agentguard.network.state import policy_material
    from agentguard.network.state._model import policy_from_material
    from agentguard.policies._engine import PolicyEngine, PolicyEngineError

    assert NUL_TWIN_A.code_hash == NUL_TWIN_B.code_hash
    for twin in (NUL_TWIN_A, twins("material")[0]):
        with pytest.raises(ValueError, match="NUL"):
            policy_from_material(policy_material(twin))
        with pytest.raises(PolicyEngineError, match="NUL"):
            PolicyEngine().evaluate(twin, input={"x": 2}, params={}, wasm={})
    assert (
        PolicyEngine().evaluate(NUL_TWIN_B, input={"x": 2}, params={}, wasm={}).decision == "allow"
    )


def test_a_policy_cannot_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """rego-cpp's ``opa.runtime().env`` is the evaluating process's environment: a policy
    returning it as reasons read an operator's key (``AGENTGUARD_OPERATOR_KEY``) out through
    its signed answer. Refused before compiling, spaced or not."""
    from agentguard.policies._engine import PolicyEngine, PolicyEngineError

    monkeypatch.setenv("S15_SECRET", "s3cr3t-value")
    for source in (
        "package t\nallow := false\nreasons := [opa.runtime().env.S15_SECRET]\n",
        "package t\nallow if { x := opa . runtime(); x.env.S15_SECRET == 1 }\n",
    ):
        leaky = Policy("leak", "t.allow", {"t.rego": source})
        with pytest.raises(PolicyEngineError, match=r"opa\.runtime") as caught:
            PolicyEngine().evaluate(leaky, input={}, params={}, wasm={})
        assert "s3cr3t" not in str(caught.value)
    quoted = Policy("ok", "t.allow", {"t.rego": 'package t\nallow if "opa.runtime" != ""\n'})
    assert PolicyEngine().evaluate(quoted, input={}, params={}, wasm={}).decision == "allow"


def test_a_policy_cannot_write_to_the_process_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    """rego-cpp's ``print`` writes to fd 1 of the evaluating process (an operator, the
    gateway): every evaluation could write a task's input, or forged lines, into its logs.
    Refused before compiling, spaced or not; the word in a string is fine."""
    from agentguard.policies._engine import PolicyEngine, PolicyEngineError

    for source in (
        'package t\nimport rego.v1\nallow if { print("S16-LOG", input); true }\n',
        'package t\nimport rego.v1\nallow if { print ("S16-LOG"); true }\n',
    ):
        loud = Policy("loud", "t.allow", {"t.rego": source})
        with pytest.raises(PolicyEngineError, match=r"print\(\) is not supported"):
            PolicyEngine().evaluate(loud, input={"x": 1}, params={}, wasm={})
    assert "S16-LOG" not in capfd.readouterr().out
    quoted = Policy("ok", "t.allow", {"t.rego": 'package t\nallow if "print(x)" != ""\n'})
    assert PolicyEngine().evaluate(quoted, input={}, params={}, wasm={}).decision == "allow"


def test_an_operator_key_read_from_the_environment_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from coincurve import PrivateKey

    from agentguard.network._keys import load_operator_key

    secret = PrivateKey().secret.hex()
    monkeypatch.setenv("S15_OPERATOR_KEY", secret)
    assert load_operator_key(None, "S15_OPERATOR_KEY").secret.hex() == secret
    assert "S15_OPERATOR_KEY" not in os.environ
