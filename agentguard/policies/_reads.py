"""Which top-level ``input`` keys and ``data.wasm`` keys a policy's modules can read.

Pushing the input document into rego-cpp costs about 1.2 µs a node (``_engine``), and an
operator's input holds keys no bundled policy reads (``function``, ``intent_hash``, ...). The
engine pushes only the keys this analysis names, so it must never miss one: any reference to
``input`` or ``data`` other than a literal key path (bare ``input``, ``input[x]``, ``walk(data)``,
``data.wasm`` alone, a package or name it cannot place, a character it does not know) makes it
answer ``None``, "everything", and the engine pushes the whole document as before. So does any
way the policy could define its own ``object.get`` (whose builtin reads one literal key),
including string path segments: ``package t["object"]``, a rule head ``t["object"].get(...)``.

Works on tokens, not raw text: strings (with only JSON escapes), raw strings and comments are
skipped, so ``"input"`` or ``# input[x]`` neither count nor hide code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Reads", "reads"]


@dataclass(frozen=True)
class Reads:
    """The top-level ``input`` keys and ``data.wasm`` keys some module may read."""

    input: frozenset[str]
    wasm: frozenset[str]


_TOKEN = re.compile(
    r"""(?P<ws>[ \t\n]+|\r\n)
    |(?P<comment>\#[^\n\r]*)
    |(?P<string>"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
    |(?P<raw>`[^`]*`)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<op>:=|==|!=|<=|>=|[=<>+\-*/%&|.,;:()\[\]{}])""",
    re.VERBOSE,
)
# line ends other than \n and \r\n: a comment rego-cpp ends there would hide code from us
_ODD_BREAKS = re.compile("\r(?!\n)|[\x00\x0b\x0c\x85\u2028\u2029]")
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
# what may stand before ``object.get`` outside brackets in an expression (not a rule head)
_BEFORE_EXPR = frozenset(
    {"if", "not", "in", "contains", ":=", "=", "==", "!=", "<", ">", "<=", ">=", ","}
    | {"+", "-", "*", "/", "%", "&", "|"}
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int
    depth: int  # brackets open before it
    first: bool  # the first token on its line


def _tokens(source: str) -> list[_Tok] | None:
    """The module's code tokens (no whitespace or comments); None if any text is not one."""
    if _ODD_BREAKS.search(source):
        return None
    found: list[_Tok] = []
    pos, depth, first = 0, 0, True
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            return None
        kind, text = m.lastgroup or "", m.group()
        if kind not in ("ws", "comment"):
            if text in _CLOSE:
                depth -= 1
            found.append(_Tok(kind, text, m.start(), m.end(), depth, first))
            if text in _OPEN:
                depth += 1
            first = False
        first = first or "\n" in text
        pos = m.end()
    return found


class _Everything(Exception):
    """A reference the analysis cannot bound."""


def _key(toks: list[_Tok], i: int) -> tuple[str, int]:
    """The literal key right after ``toks[i]`` (``.name``, ``["name"]``, ``[`name`]``, no
    space before it) and the index of its last token."""
    if i + 1 >= len(toks) or toks[i + 1].start != toks[i].end:
        raise _Everything
    nxt = toks[i + 1]
    if nxt.text == "." and i + 2 < len(toks):
        name = toks[i + 2]
        if name.kind == "ident" and name.start == nxt.end:
            return name.text, i + 2
    elif nxt.text == "[" and i + 3 < len(toks) and toks[i + 3].text == "]":
        key = _literal(toks[i + 2])
        if key is not None:
            return key, i + 3
    raise _Everything


def _literal(tok: _Tok) -> str | None:
    """A string token's value; None for escapes (whose reading is rego-cpp's, not ours)."""
    if tok.kind not in ("string", "raw") or "\\" in tok.text:
        return None
    return tok.text[1:-1]


def _object_get_key(toks: list[_Tok], i: int) -> str | None:
    """``k`` if ``toks[i]`` (``input``) is the first argument of ``object.get(input, "k", _)``."""
    if i < 4 or i + 3 >= len(toks):
        return None
    call = [t.text for t in toks[i - 4 : i]]
    if call != ["object", ".", "get", "("] or (i > 4 and toks[i - 5].text == "."):
        return None
    if toks[i + 1].text != "," or toks[i + 3].text != ",":
        return None
    return _literal(toks[i + 2])


def _check_statements(toks: list[_Tok]) -> None:
    """Every ``package`` and ``import`` is a plain path (``_path``), and no package lies in
    ``data``, ``input`` or ``wasm`` (whose rules read ``data.wasm`` by bare names; ``_engine``
    refuses such modules too)."""
    for i, tok in enumerate(toks):
        if tok.text not in ("package", "import") or (i and toks[i - 1].text == "."):
            continue  # a field named package
        end = i + 1
        while end < len(toks) and not toks[end].first:
            end += 1
        path = _path(toks[i + 1 : end], tok.text == "import")
        if tok.text == "package" and path[0] in ("data", "wasm", "input"):
            raise _Everything


def _path(toks: list[_Tok], imported: bool) -> list[str]:
    """The names of a statement's path: ``a.b.c``; an import may also take ``["key"]``
    segments and ``as name``. A string segment could name ``object`` unseen
    (``package t["object"]`` makes ``object.get`` in package t the policy's own function), so
    a package takes none and an import none that spells ``object`` or holds an escape."""
    if imported and len(toks) > 2 and toks[-2].text == "as" and toks[-1].kind == "ident":
        toks = toks[:-2]
    if not toks or toks[0].kind != "ident":
        raise _Everything
    names, j = [toks[0].text], 1
    while j < len(toks):
        if toks[j].text == "." and j + 1 < len(toks) and toks[j + 1].kind == "ident":
            names.append(toks[j + 1].text)
            j += 2
            continue
        key = _literal(toks[j + 1]) if imported and j + 2 < len(toks) else None
        if toks[j].text != "[" or key in (None, "object") or toks[j + 2].text != "]":
            raise _Everything
        names.append(key)
        j += 3
    return names


def _may_define_object(toks: list[_Tok], i: int, statement: str) -> bool:
    """Whether ``object`` at ``toks[i]`` could name something of the policy's (an import, a
    package, a rule head, a variable) that ``object.get`` would then call."""
    tok = toks[i]
    if statement in ("import", "package") or i + 1 >= len(toks) or toks[i + 1].text != ".":
        return True
    return tok.depth == 0 and (tok.first or toks[i - 1].text not in _BEFORE_EXPR)


def _segment(toks: list[_Tok], i: int) -> bool:
    """Whether ``toks[i]`` is a path segment: ``[`` before it and ``]`` after."""
    return 0 < i < len(toks) - 1 and toks[i - 1].text == "[" and toks[i + 1].text == "]"


def _module(toks: list[_Tok], inputs: set[str], wasm: set[str]) -> None:
    _check_statements(toks)
    statement = ""  # the first token of the line
    for i, tok in enumerate(toks):
        statement = tok.text if tok.first else statement
        if tok.text == "object" and _may_define_object(toks, i, statement):
            raise _Everything
        if (
            tok.kind in ("string", "raw")
            and _segment(toks, i)
            and _literal(tok) in (None, "object")
        ):
            raise _Everything  # t["object"].get(...) := defines an object.get (``_path``)
        if tok.kind != "ident" or (i and toks[i - 1].text == "." and toks[i - 1].end == tok.start):
            continue  # a field of something else (``x.input``)
        if tok.text == "input":
            got = _object_get_key(toks, i)
            key = got if got is not None else _key(toks, i)[0]
            if key.startswith("__agentguard"):
                raise _Everything  # the reserved key carries data.wasm whole
            inputs.add(key)
        elif tok.text == "data":
            key, end = _key(toks, i)
            if key == "wasm":
                wasm.add(_key(toks, end)[0])


def reads(sources: Iterable[str]) -> Reads | None:
    """The keys ``sources`` (all of a policy's modules) may read; ``None``: everything."""
    inputs: set[str] = set()
    wasm: set[str] = set()
    try:
        for source in sources:
            toks = _tokens(source)
            if toks is None:
                return None
            _module(toks, inputs, wasm)
    except _Everything:
        return None
    return Reads(frozenset(inputs), frozenset(wasm))
