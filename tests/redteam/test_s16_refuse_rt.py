"""Red team of the pre-compile refusals (``_engine._UNSUPPORTED``, session 16).

rego-cpp 1.5.2 imports builtin namespaces as it imports documents: ``import opa as o`` then
``o.runtime()`` read the evaluating process's environment, ``import time as c`` then
``c.now_ns()`` the clock, and no refused name appeared in the text. Only data, input, future
and rego may be imported now. And rego-cpp runs template strings, ``$"{opa.runtime()}"``,
whose code the blanking hid as a string's: a template string is refused. What held: comments and strings as rego-cpp lexes them (a form
feed, U+2028 or NEL ends neither; a string cannot span lines), unicode next to a builtin's
name, bracketed calls, imports of a dotted builtin name.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

import pytest
import regopy

from agentguard._dumps import forbid_core_dumps
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._probe import _held

HEAD = "package t\nimport rego.v1\n"
ALIASED = {
    "opa env": "import opa as o\nreasons contains o.runtime().env.S16_RT_SECRET if true\n"
    "allow := false",
    "time clock": "import time as c\nallow if c.now_ns() > 1",
    "uuid": 'import uuid as u\nallow if startswith(u.rfc4122("x"), "1")',
    "io.jwt": 'import io.jwt as j\nallow if j.decode_verify("a.b.c", {"secret": "k"})[0]',
    "internal": 'import internal as i\nallow if i.print(["S16-RT-LOG"])',
    "crypto": 'import crypto.x509 as x\nallow if x.parse_and_verify_certificates("x")[0]',
    "tab and comment": "import\t# c\n opa as o\nallow if o.runtime().env.S16_RT_SECRET",
    "whole builtin": "import time.now_ns as n\nallow if n() > 1",
}
# rego-cpp 1.5.2 runs the expressions inside template strings, which the blanking hid
TEMPLATES = {
    "env": 'reasons contains $"{opa.runtime().env.S16_RT_SECRET}" if true\nallow := false',
    "raw env": "reasons contains $`{opa.runtime().env.S16_RT_SECRET}` if true\nallow := false",
    "clock": 'allow if $"{time.now_ns()}" != ""',
    "print": 'allow if $"{print(["S16-RT-LOG"])}" != ""',
    "nested": 'allow if { x := $"{ {"a": time.now_ns()}["a"] }"; x != "" }',
}


@pytest.mark.parametrize(
    "leak",
    [
        "import opa as o\nleak := o.runtime().env.S16_RT_SECRET",
        'leak := $"{opa.runtime().env.S16_RT_SECRET}"',
    ],
)
def test_rego_cpp_does_run_what_these_hide(leak: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holes themselves, on regopy directly: why such modules must be refused."""
    monkeypatch.setenv("S16_RT_SECRET", "s3cr3t-rt")
    interpreter = regopy.Interpreter()
    interpreter.add_module("t.rego", HEAD + leak + "\n")
    assert "s3cr3t-rt" in str(interpreter.query("data.t.leak"))


@pytest.mark.parametrize(
    ("body", "why"),
    [(b, "import must name|not supported") for b in ALIASED.values()]
    + [(b, "template strings") for b in TEMPLATES.values()],
    ids=[*ALIASED, *TEMPLATES],
)
def test_an_import_of_a_builtin_namespace_or_a_template_string_is_refused(
    body: str, why: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("S16_RT_SECRET", "s3cr3t-rt")
    policy = Policy("odd", "t.allow", {"t.rego": HEAD + body + "\n"})
    with pytest.raises(PolicyEngineError, match=why) as refused:
        PolicyEngine().evaluate(policy, input={"x": 1}, params={}, wasm={})
    assert "s3cr3t" not in str(refused.value)
    assert "S16-RT-LOG" not in capfd.readouterr().out


@pytest.mark.parametrize(
    "body",
    [
        'allow if "$x" != ""',  # a dollar in a string or a comment is no template
        'allow if `{$}` != ""  # $"{x}"',
        # rego-cpp ends a comment only at a newline, like the blanking: what follows stays hidden
        "allow if {\n# x\x0c1 == 2\n}",
        "allow if {\n# x\u20281 == 2\n}",
        "allow if {\n# x\u00851 == 2\n}",
        # imports that name documents
        "import data.t as time\nallow if time.x == 1\nx := 1",
        "import input as i\nallow if i.x == 1",
        "import future.keywords.in\nallow if 1 in [1]",
        'allow if input["import"] == 1',
    ],
)
def test_what_rego_cpp_reads_as_a_comment_or_a_document_still_compiles(body: str) -> None:
    policy = Policy("ok", "t.allow", {"t.rego": HEAD + body + "\n"})
    decided = PolicyEngine().evaluate(policy, input={"x": 1, "import": 1}, params={}, wasm={})
    assert decided.decision == "allow"


@pytest.mark.parametrize(
    "body",
    [
        'allow if { x := "a # b"; time.now_ns() > 1 }',  # '#' in a string is no comment
        'allow if { x := `a " # b`; time.now_ns() > 1 }',  # nor a quote in a raw string
        'allow if { x := "a\\" # "; time.now_ns() > 1 }',  # an escaped quote ends nothing
        "allow if { x := `a\n#`; time.now_ns() > 1 }",  # a raw string spans lines
    ],
)
def test_strings_and_comments_are_blanked_as_rego_cpp_lexes_them(body: str) -> None:
    """The blanking must never hide code rego-cpp runs."""
    policy = Policy("odd", "t.allow", {"t.rego": HEAD + body + "\n"})
    with pytest.raises(PolicyEngineError, match="not supported"):
        PolicyEngine().evaluate(policy, input={"x": 1}, params={}, wasm={})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_a_process_without_core_dumps_still_lists_its_own_descriptors() -> None:
    """A probe child calls ``forbid_core_dumps`` and then closes what ``/proc/self/fd`` lists;
    a non-dumpable process's ``/proc`` entries belong to root, yet it still reads its own (as
    root or not: measured with setpriv as nobody, other users lose only cwd, exe and fd, not
    the stat and statm the benchmarks read)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        forbid_core_dumps()
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        held = _held()
        os.write(write, json.dumps([dumpable, write in held, len(held)]).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as answer:
        dumpable, listed, count = json.loads(answer.read())
    assert dumpable == 0 and listed
    assert count < resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # a listing, not the range
