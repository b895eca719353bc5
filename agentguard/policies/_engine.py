"""Rego evaluation for the reference network's operators, on regopy 1.5.2 (rego-cpp, Rego v1).

What regopy 1.5.2 does, measured (``benchmarks/bench_policy.py``), and why this module is shaped
the way it is:

* Compiling is the expensive part: ``Interpreter.query`` recompiles the modules on every call
  (about 50 ms for agent_spend), and so does ``build`` (10-60 ms). ``build`` returns a ``Bundle``
  (compiled plan + base documents) that any ``Interpreter`` can run again and again with
  ``query_bundle_entrypoint``; only that is fast enough for an authorization measured in
  milliseconds. A bundled query then costs a few hundred µs (agent_spend with two checks about
  0.2 ms, with all thirteen keys about 0.9 ms; current figures in
  ``docs/performance.md``, from ``benchmarks/bench_policy.py``), and building the input
  document costs about as much again (below).
* A bundle carries the data it was built with and ignores the running interpreter's data, and
  ``add_data`` merges (a second document with a clashing key fails at query time); data cannot be
  replaced per call. So ``data.params`` is baked into the bundle, one bundle per
  (``code_hash``, schema hash, params hash), kept in a small LRU.
* ``data.wasm`` changes on every call (``now``, ``intent_hash``, history), and the only per-call
  channel into a bundle is ``input``. Rego's ``with`` would be the textbook answer, but rego-cpp
  1.5.2 aborts or segfaults the whole process on ``with`` over rules that bind local variables.
  Instead a generated ``package wasm`` module defines one rule per top-level key
  (``now := input["__agentguard_wasm__"]["now"]``), and the wasm document travels in ``input``
  under that reserved key. Policies therefore see ``data.wasm`` exactly, and ``input`` is the
  parsed intent plus that one reserved key (invisible to field access such as ``input.to``),
  both cut to the keys the policy can read (last point).
  Modules that use ``with`` are refused before compiling, and so are modules that join a
  generated package (``wasm``, ``__agentguard_eval__``) or take a generated module's name.
* Params are checked against the policy's JSON schema once per compile: in Rego a mistyped
  param makes a check's body undefined, which would pass it.
* Allow, ``reasons`` and ``approval_required`` are read in one query through a generated
  ``__agentguard_eval__.result`` rule (each wrapped so that an undefined rule is visible as such).
  A query also pays a floor that grows with the bundle's code, reached or not, not the input
  (a one-value query: about 8 µs on a one-rule bundle, about 32 µs on agent_spend's; 50
  unreached rules of ten expressions add about 100 µs), so one query beats several.
* A bundle is immutable once built; its interpreter holds only the input, which ``set_input``
  replaces on every call, so state never carries from one evaluation to the next (tested).
* regopy calls rego-cpp through ``ctypes.CDLL``, which releases the GIL; ``set_input`` then
  query is not atomic, so one lock guards the interpreters and the cache. Run operators as
  processes for parallelism.
* rego-cpp's library brings its own ``operator new``/``delete``; loaded after a privately
  loaded libstdc++ it leaks on every query and can abort in ``free`` (``time.weekday``). Importing
  ``agentguard.policies`` first promotes libstdc++ to global scope (see ``_share_libstdcxx``).
* Division yields floats, which ``sprintf("%d")`` refuses: policies ``floor`` their quotients.
* Numbers: compiled bundles keep big integers (even through ``to_number``), but rego-cpp's
  query path rounds ``to_number`` to a double, as OPA does; amounts therefore stay decimal
  strings (see ``docs/architecture.md``). Integers in ``input`` must fit in int64 (regopy's
  input API); the engine refuses larger ones instead of letting them wrap.
* Strings built at runtime are printed unescaped in query output, and ``sprintf("%s")`` of a
  string returned by ``lower``/``format_int`` comes out wrapped in quotes; policies build messages
  with ``concat``, and this module never parses a policy-made string out of the printed JSON.
* Cost is per operation (each rule, builtin or function call is tens of µs, ``regex.match`` about
  100 µs), so policies test their params key first and avoid helper functions on hot paths;
  building the input document node by node through ctypes is the other big cost. Measured for an
  operator's input (83 pushes for agent_spend's, uncut): the Python walk is now a small part of
  it; each push costs about 1.2 µs, mostly inside rego-cpp (cffi calls cost the same), and
  ``regoSetInput`` about 70 µs more. ``regoSetInputJSON`` or ``regoSetInputTerm`` with the same
  document as text cost about three times as much. Only fewer nodes help: so each compile derives
  from the modules' tokens which top-level ``input`` and ``data.wasm`` keys they can read
  (``_reads``; any other reference to ``input`` or ``data``, such as bare ``input``, ``input[x]``
  or ``data.wasm`` alone, means all of them), and only those are pushed; the others are still
  checked as if pushed, so the same documents fail. An unread key is absent either way, and so is
  an unsent one: each generated wasm rule is then undefined. For agent_spend (two checks) that is
  43 pushes instead of 83, about 46 µs of an operator's ~620 µs. Nested objects are not cut: the
  keys a policy reads it reads whole (``spend``), or by a key its params choose (``history``),
  which the gateway already sends only for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import regopy
from regopy import rego_shared as _rs

from agentguard._json import MAX_DEPTH
from agentguard._json import _check_depth as check_depth
from agentguard._tiers import MAX_TIER
from agentguard.policies import NUL_REFUSED, Policy, canonical_json
from agentguard.policies._reads import Reads, reads

__all__ = ["Evaluation", "PolicyEngine", "PolicyEngineError"]

_WASM_KEY = "__agentguard_wasm__"
_EVAL_PACKAGE = "__agentguard_eval__"
_RESULT = f"{_EVAL_PACKAGE}/result"
# Keys the gateway sends; always shimmed so that one bundle serves payments and transactions.
_KNOWN_WASM_KEYS = ("approved", "history", "intent_hash", "now", "spend", "x402")
_KNOWN_WASM_SET = frozenset(_KNOWN_WASM_KEYS)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# a wasm key names a rule of package wasm: no keyword, nor a root document (a rule named data
# aborts the whole process inside rego-cpp 1.5.2)
_REGO_KEYWORDS = frozenset(
    {"as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null"}
    | {"package", "some", "true", "with", "data", "input"}
)
# rego-cpp's output printer does not escape quotes inside strings built at runtime, so reasons
# travel base64-encoded; the entrypoint's value is reduced to a kind so nothing else is printed.
# Each chain stops at its first body that holds (``else``), so a boolean entrypoint and a set of
# reasons are each read once: the earlier one rule per case tried every body (about 10 µs more
# per query for agent_spend; tests/policies/test_eval_module.py pins the same answers). The
# result is an array, not an object: rego-cpp builds and prints it about 12 µs faster per query
# (measured on every policy: 42 -> 30 µs for a one-rule policy).
_EVAL_MODULE = """package {package}
import rego.v1
default entry := "undefined"
entry := "true" if {{
	data.{entrypoint} == true
}} else := "false" if {{
	data.{entrypoint} == false
}} else := type_name(x) if {{
	x := data.{entrypoint}
}}
default reasons := []
reasons := [base64.encode(r) | some r in x; is_string(r)] if {{
	x := data.{policy_package}.reasons
	not is_string(x)
}} else := [base64.encode(x)] if {{
	x := data.{policy_package}.reasons
}}
default approval := false
approval := true if data.{policy_package}.approval_required == true
default tier := 0
tier := data.{policy_package}.tier
result := [entry, reasons, approval, tier]
"""
# the decided-output cache: bounded in entries and in the size of each output kept
_MAX_DECIDED, _MAX_DECIDED_TEXT = 1024, 512
_STRINGS_AND_COMMENTS = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
# The generated packages: a policy module in one adds rules to the engine's own (``entry :=
# "true"`` allows whatever the entrypoint says; ``data.wasm`` is the gateway's alone).
_RESERVED_PACKAGE = re.compile(rf"\bpackage\s+(?:data\s*\.\s*)?(?:{_EVAL_PACKAGE}|wasm)\b")
_INT64 = 1 << 63


@dataclass(frozen=True)
class Evaluation:
    decision: Literal["allow", "deny", "approval_required"]
    reasons: tuple[str, ...]
    tier: int = 0
    """The trust tier the policy's ``tier`` rule states (``agentguard._tiers``); 0 if none."""


class PolicyEngineError(Exception):
    """A policy failed to compile or evaluate; the message is safe to show users."""


# What a policy module may not say, each with why: read after its strings and comments are
# blanked. Rego calls ``a.b(x)`` and ``a["b"](x)`` alike, so a call through brackets is refused
# as such (its target is not visible in the text), and the dotted names below are enough.
_UNSUPPORTED = (
    (
        re.compile(r"\bwith\b"),
        "the 'with' keyword is not supported (it crashes rego-cpp 1.5.2); rewrite the rule "
        "without it",
    ),
    (
        re.compile(r"\](?:\s*\.\s*\w+)*\s*\("),  # x["f"](, x["io"].jwt.f(, x[y]\n(...
        'a call through a bracketed reference (x["f"](...)) is not supported: name the '
        "function with dots, so that what it calls can be checked",
    ),
    (
        # rego-cpp 1.5.2 runs template strings: the code in $"{opa.runtime()}" is blanked above
        re.compile(r"\$"),
        'template strings ($"...{x}...") are not supported: their expressions could not be '
        "checked; build the string with concat or sprintf",
    ),
    (
        # rego-cpp imports builtin namespaces too: ``import opa as o`` then ``o.runtime()`` read
        # the environment, ``import time as c`` then ``c.now_ns()`` the clock, unseen below
        re.compile(r"(?<![\w.])import\b(?!\s*(?:data|input|future|rego)\b)"),
        "an import must name data, input, future or rego (rego-cpp lets 'import opa as o' "
        "rename a builtin namespace, so that what a call reaches could not be checked)",
    ),
    (
        re.compile(r"(?<![\w.])(?:opa|internal)\s*[.\[]"),
        "opa.runtime() is not supported, nor any opa.* or internal.* builtin: it reads the "
        "evaluating process's environment, where an operator's secrets may live",
    ),
    (
        re.compile(
            r"\btime\s*\.\s*now_ns\b|\bio\s*\.\s*jwt\s*\.\s*decode_verify\b"
            r"|\bcrypto\s*\.\s*x509\s*\.\s*parse_and_verify_certificates\b"
        ),
        "time.now_ns(), io.jwt.decode_verify() and crypto.x509.parse_and_verify_certificates() "
        "are not supported: they read the evaluating machine's clock, so a challenger "
        "re-evaluating later gets another decision than the operators signed (a policy could "
        "frame honest operators); use data.wasm.now, the signed time",
    ),
    (
        # uuid.parse reads only its argument: allowed when spelled exactly so, as a call
        re.compile(r"(?<![\w.])(?:rand\s*[.\[]|uuid(?!\.parse\()\s*[.\[])"),
        "uuid.* (but uuid.parse(...)) and rand.* are not supported: rego-cpp's answers depend "
        "on how many the process has made before, so operators and a challenger "
        "re-evaluating get different decisions",
    ),
    (
        re.compile(r"\bprint\s*\("),
        "print() is not supported: rego-cpp writes it to the evaluating process's stdout, "
        "where a policy could flood or forge an operator's logs with the task's input",
    ),
    (
        _RESERVED_PACKAGE,
        f"packages {_EVAL_PACKAGE} and wasm are reserved for the engine's generated rules",
    ),
)


def _refusal(source: str) -> str | None:
    """Why a policy module cannot be compiled as written (``_UNSUPPORTED``), or ``None``."""
    code = _STRINGS_AND_COMMENTS.sub(" ", source)
    for pattern, why in _UNSUPPORTED:
        if pattern.search(code):
            return why
    return None


def _readable(error: str, modules: Mapping[str, str]) -> str:
    """rego-cpp reports errors as length-prefixed S-expressions; turn them into file:line:col."""
    found: list[str] = []
    for where in re.finditer(r"\(error (\d+):", error):
        start = where.end()
        name = error[start : start + int(where.group(1))]
        location = re.match(r"\|(\d+)\|\d+", error[start + len(name) :])
        msg = re.search(r"\(errormsg (\d+):", error[start:])
        text = ""
        if msg:
            at = start + msg.end()
            text = error[at : at + int(msg.group(1))]
        if location and name in modules:
            offset = int(location.group(1))
            before = modules[name][:offset]
            line, col = before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1
            found.append(f"{name}:{line}:{col}: {text}")
        else:
            found.append(text or error.strip()[:200])
    if not found:
        for msg in re.finditer(r"\(errormsg (\d+):", error):
            found.append(error[msg.end() : msg.end() + int(msg.group(1))])
    return "; ".join(found) if found else error.strip()[:300]


_lib = _rs.rego  # the ctypes CDLL: calling it directly is 3x faster than regopy's wrappers


_MAX_JSON_VALUES = 4096
# a string (an unterminated one runs to the end: linear, never rescanned from each quote)
_STRING_LITERAL = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)


def _check_json_text(text: str) -> None:
    """An input string a policy could ``json.unmarshal``: at most ``MAX_DEPTH`` levels deep
    (deeper overflows rego-cpp's stack: SIGSEGV) and at most 4,096 values (its unmarshal is
    quadratic in their number: 30,000 took 17 s under the engine lock)."""
    try:
        check_depth(text, MAX_DEPTH)
    except ValueError:
        raise PolicyEngineError(
            f"an input string nests deeper than {MAX_DEPTH} levels of JSON"
        ) from None
    if text.count(",") > _MAX_JSON_VALUES and (
        _STRING_LITERAL.sub("", text).count(",") > _MAX_JSON_VALUES
    ):
        raise PolicyEngineError(
            f"an input string holds more than {_MAX_JSON_VALUES} JSON values; a policy input "
            "passes references, not long lists"
        )


def _string_node(handle: int, text: str) -> int:
    """One input string; the ``[``/``{`` test keeps ``_check_json_text`` off plain strings."""
    if "[" in text or "{" in text or len(text) > _MAX_JSON_VALUES:
        _check_json_text(text)
    return _input_string(handle, text.encode())  # type: ignore[no-any-return]


_STRING_KEYS = "policy documents need string keys"
_SURROGATES = "policy documents must be text without lone surrogates"


def _too_big(val: int) -> PolicyEngineError:
    return PolicyEngineError(
        f"input number {val} does not fit in 64 bits; pass amounts as decimal strings"
    )


def _node(handle: int, val: Any) -> int:
    """Push ``val`` onto the input stack; non-zero if rego-cpp refused a push.

    Written for the shapes an operator's input has (objects of strings, nested objects):
    string values and keys are pushed inline, not through a recursive call per string (about
    half of the pushes of an operator's input are strings).
    """
    kind = type(val)
    if kind is dict or (kind is not str and isinstance(val, Mapping)):
        failed = 0
        for k, v in val.items():
            if type(k) is not str:
                raise PolicyEngineError(_STRING_KEYS)
            failed |= _input_string(handle, k.encode())
            if type(v) is str:
                if "[" in v or "{" in v or len(v) > _MAX_JSON_VALUES:
                    _check_json_text(v)
                failed |= _input_string(handle, v.encode())
            else:
                failed |= _node(handle, v)
            failed |= _input_item(handle)
        return failed | _input_object(handle, len(val))  # type: ignore[no-any-return]
    if kind is str:
        return _string_node(handle, val)
    if kind is bool:
        return _input_boolean(handle, val)  # type: ignore[no-any-return]
    if kind is int:
        if not -_INT64 <= val < _INT64:
            raise _too_big(val)
        return _input_int(handle, val)  # type: ignore[no-any-return]
    if kind is list or kind is tuple:
        failed = 0
        for v in val:
            failed |= _string_node(handle, v) if type(v) is str else _node(handle, v)
        return failed | _input_array(handle, len(val))  # type: ignore[no-any-return]
    if val is None:
        return _input_null(handle)  # type: ignore[no-any-return]
    if kind is float:
        return _input_float(handle, val)  # type: ignore[no-any-return]
    raise PolicyEngineError(f"cannot pass a {kind.__name__} to a policy")


# regopy declares each of these with ``restype = c_uint32``: they return a Python int
_input_string, _input_int, _input_boolean = (
    _lib.regoInputString,
    _lib.regoInputInt,
    _lib.regoInputBoolean,
)
_input_item, _input_object, _input_array = (
    _lib.regoInputObjectItem,
    _lib.regoInputObject,
    _lib.regoInputArray,
)
_input_null, _input_float = _lib.regoInputNull, _lib.regoInputFloat


def _check(val: Any) -> None:
    """What ``_node`` refuses in ``val``, in the same order, without pushing it."""
    kind = type(val)
    if kind is dict or (kind is not str and isinstance(val, Mapping)):
        for k, v in val.items():
            if type(k) is not str:
                raise PolicyEngineError(_STRING_KEYS)
            k.encode()
            _check(v)
    elif kind is str:
        if "[" in val or "{" in val or len(val) > _MAX_JSON_VALUES:
            _check_json_text(val)
        val.encode()
    elif kind is int:
        if not -_INT64 <= val < _INT64:
            raise _too_big(val)
    elif kind is list or kind is tuple:
        for v in val:
            _check(v)
    elif not (kind is bool or val is None or kind is float):
        raise PolicyEngineError(f"cannot pass a {kind.__name__} to a policy")


def _pruned(
    handle: int, document: Mapping[Any, Any], keep: frozenset[str], wasm: Reads | None
) -> int:
    """``_node`` of ``document`` holding only the keys in ``keep`` (and, at the top, the wasm
    document holding only ``wasm``'s keys). The others are checked where ``_node`` would have
    pushed them, so an evaluation fails on exactly the documents it failed on unpruned."""
    failed = kept = 0
    for k, v in document.items():
        if type(k) is not str:
            raise PolicyEngineError(_STRING_KEYS)
        if wasm is not None and k == _WASM_KEY:
            failed |= _input_string(handle, k.encode()) | _pruned(handle, v, wasm.wasm, None)
        elif k in keep:
            failed |= _input_string(handle, k.encode()) | _node(handle, v)
        else:
            k.encode()
            _check(v)
            continue
        failed |= _input_item(handle)
        kept += 1
    return failed | _input_object(handle, kept)  # type: ignore[no-any-return]


def _set_input(interpreter: regopy.Interpreter, value: Any, only: Reads | None = None) -> None:
    """``Interpreter.set_input`` without regopy's per-node wrappers (the cost of a whole query).

    Also refuses integers that regopy's int64 input API would silently wrap, and strings a
    policy's ``json.unmarshal`` would choke on (``_check_json_text``). ``only``: push just
    the keys a policy can read (``_reads``); ``value`` is then ``{**input, _WASM_KEY: wasm}``.
    """
    handle = _lib.regoNewInput()
    try:
        pushed = _node(handle, value) if only is None else _pruned(handle, value, only.input, only)
        if pushed or _lib.regoSetInput(interpreter._impl, handle):
            raise PolicyEngineError("rego-cpp refused the input document")
    finally:
        _lib.regoFreeInput(handle)


class PolicyEngine:
    """Compiles each Policy once per params (keyed by code_hash) and evaluates it with regopy.

    ``evaluate`` is safe to call from several threads (they take turns).
    """

    def __init__(self, *, max_bundles: int = 256, prune: bool = True) -> None:
        """``prune=False`` pushes the whole input document whatever the policy reads: the
        general path the differential tests hold pruning to."""
        self._max_bundles = max_bundles
        self._prune = prune
        self._compiled: OrderedDict[tuple[bytes, ...], _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        # (entrypoint, query output) -> its Evaluation: most evaluations print one of a few
        # outputs ("allow, no reasons"); an Evaluation is immutable and depends on nothing else
        self._decided: dict[tuple[str, str], Evaluation] = {}

    def evaluate(
        self,
        policy: Policy,
        *,
        input: dict[str, Any],
        params: dict[str, Any],
        wasm: dict[str, Any],
        params_json: bytes | None = None,
    ) -> Evaluation:
        """``params_json``: ``canonical_json({"params": params})`` when the caller holds it
        (an operator computes it once per registration), so it is not rebuilt per call."""
        extra = tuple(sorted(wasm.keys() - _KNOWN_WASM_SET))
        document = {**input, _WASM_KEY: wasm}
        try:  # text with a lone surrogate has no UTF-8 form (for rego-cpp, for the hash)
            if params_json is None:
                params_json = canonical_json({"params": params})
        except UnicodeEncodeError:
            raise PolicyEngineError(_SURROGATES) from None
        with self._lock:
            try:
                compiled = self._get(policy, params_json, extra)
                _set_input(compiled.interpreter, document, compiled.reads)
            except UnicodeEncodeError:
                raise PolicyEngineError(_SURROGATES) from None
            try:  # regopy raises its own untyped error when rego-cpp gives no output
                output = _rs.rego_bundle_query_entrypoint(
                    compiled.interpreter._impl, compiled.bundle._impl, _RESULT
                )
                try:
                    ok, text = _rs.rego_output_ok(output), _rs.rego_output_string(output)
                finally:
                    _rs.rego_free_output(output)
            except regopy.RegoError:
                ok, text = False, ""
        if not ok or text.startswith("(error"):
            detail = (
                _readable(text, policy.modules)
                if ok
                else "rego-cpp reported an error (for example conflicting rule values)"
            )
            raise PolicyEngineError(f"policy {policy.name!r} failed to evaluate: {detail}")
        key = (policy.entrypoint, text)
        decided = self._decided.get(key)
        if decided is not None:
            return decided
        try:
            decided = _decide(policy.entrypoint, json.loads(text)["expressions"][0])
        except (ValueError, LookupError, TypeError):
            raise PolicyEngineError(f"policy {policy.name!r} gave an unreadable result") from None
        if len(text) <= _MAX_DECIDED_TEXT:
            if len(self._decided) >= _MAX_DECIDED:
                self._decided.clear()
            self._decided[key] = decided
        return decided

    # -- compilation ------------------------------------------------------------------------

    def _get(self, policy: Policy, params_json: bytes, extra: tuple[str, ...]) -> _Compiled:
        digest = hashlib.sha256(params_json).digest()
        key = (policy.code_hash, policy.schema_hash, digest, *(k.encode() for k in extra))
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        compiled = _compile(policy, params_json, extra, prune=self._prune)
        self._compiled[key] = compiled
        if len(self._compiled) > self._max_bundles:
            self._compiled.popitem(last=False)
        return compiled


@dataclass(frozen=True)
class _Compiled:
    """A bundle and the interpreter that built it, which also runs it.

    Any interpreter could run the bundle; keeping one per bundle means no two policy
    configurations ever share an interpreter, not even its last input.
    """

    interpreter: regopy.Interpreter
    bundle: regopy.Bundle
    reads: Reads | None
    """The input and wasm keys the policy can read (``_reads``); None: it may read anything."""


def _compile(
    policy: Policy, params_json: bytes, extra: tuple[str, ...], *, prune: bool = True
) -> _Compiled:
    if "\0" in policy.entrypoint or any("\0" in source for source in policy.modules.values()):
        raise PolicyEngineError(f"policy {policy.name!r}: {NUL_REFUSED}")
    segments = policy.entrypoint.split(".")
    if len(segments) < 2 or segments[0] == "data" or not all(_IDENT.match(s) for s in segments):
        raise PolicyEngineError(
            f"entrypoint {policy.entrypoint!r} must look like 'package.rule' (e.g. "
            "'agentguard.agent_spend.allow'), without the 'data.' prefix"
        )
    for key in extra:
        if not _IDENT.match(key) or key in _REGO_KEYWORDS:
            raise PolicyEngineError(f"wasm key {key!r} is not a Rego identifier")
    for name, source in policy.modules.items():
        refusal = _refusal(source)
        if refusal is not None:
            raise PolicyEngineError(f"policy {policy.name!r}, {name}: {refusal}")
    _check_params(policy, json.loads(params_json)["params"])
    package = ".".join(segments[:-1])
    wasm_rules = "".join(
        f'{k} := input["{_WASM_KEY}"]["{k}"]\n' for k in sorted({*_KNOWN_WASM_KEYS, *extra})
    )
    shims = {
        f"{_WASM_KEY}.rego": f"package wasm\nimport rego.v1\n{wasm_rules}",
        f"{_EVAL_PACKAGE}.rego": _EVAL_MODULE.format(
            package=_EVAL_PACKAGE, entrypoint=policy.entrypoint, policy_package=package
        ),
    }
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    if shims.keys() & policy.modules.keys():  # the shim would replace the module unseen
        raise PolicyEngineError(
            f"policy {policy.name!r}: module names {sorted(shims)} are reserved for the engine"
        )
    modules = {**policy.modules, **shims}
    try:
        for name, source in modules.items():
            interpreter.add_module(name, source)
        interpreter.add_data_json(params_json.decode())
        bundle = interpreter.build(None, [_RESULT])
    except regopy.RegoError as exc:
        raise PolicyEngineError(
            f"policy {policy.name!r} does not compile: {_readable(str(exc), modules)}"
        ) from None
    if not bundle.ok():
        raise PolicyEngineError(f"policy {policy.name!r} does not compile")
    # the engine's module reads data.<entrypoint> and its package's rules: in package wasm,
    # wasm keys no policy module names
    prune = prune and segments[0] != "wasm"
    return _Compiled(interpreter, bundle, reads(policy.modules.values()) if prune else None)


def _check_params(policy: Policy, params: Any) -> None:
    """Params the schema refuses never reach Rego, where a wrong type fails checks open."""
    if not policy.params_schema:
        return
    schema = dict(policy.params_schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "params"
        raise PolicyEngineError(
            f"params for policy {policy.name!r} do not match its schema at {where}: {error.message}"
        )


def _decide(entrypoint: str, result: list[Any]) -> Evaluation:
    """``result``: the generated rule's ``[entry, reasons, approval, tier]``."""
    entry, encoded, approval, tier = result
    reasons = sorted({base64.b64decode(r).decode("utf-8", "replace") for r in encoded})
    if type(tier) is not int or not 0 <= tier <= MAX_TIER:
        # A tier nobody can enforce must not become a weaker one: deny.
        reasons.append(f"policy tier {str(tier)[:40]} is not a known trust tier (0..7); denied")
        return Evaluation("deny", tuple(sorted(reasons)))
    if entry == "true":
        return Evaluation("allow", tuple(reasons), tier)
    if approval is True:
        return Evaluation("approval_required", tuple(reasons), tier)
    if entry == "undefined":
        reasons.append(f"policy entrypoint {entrypoint} is undefined; denied")
    elif entry != "false":
        reasons.append(f"policy entrypoint {entrypoint} returned a {entry}, not a boolean; denied")
    return Evaluation("deny", tuple(sorted(reasons)), tier)
