"""The gateway's reader of operator response heads takes our operators' own head at once
(``_http._OK_HEAD``): on that head and on every mutation of it (seeded random edits, edge
lengths, other spellings) it must answer exactly what the general parser answers, the same
(status, length, keep-alive) or the same ``HTTPError``."""

from __future__ import annotations

import random

import pytest

from agentguard.network._http import _OK_HEAD, MAX_RESPONSE, HTTPError, _parse_any_head, _parse_head

LENGTHS = [b"0", b"7", b"512", b"0000000", b"00000001", str(MAX_RESPONSE).encode()]
LENGTHS += [str(MAX_RESPONSE + 1).encode(), b"99999999", b"\xd9\xa3", b"", b"1 ", b" 1", b"-1"]
EDGES = [
    _OK_HEAD + b"12\r\nconnection: close\r\n\r\n",
    _OK_HEAD + b"12\r\ntransfer-encoding: chunked\r\n\r\n",
    _OK_HEAD + b"12\r\ncontent-length: 13\r\n\r\n",
    _OK_HEAD.replace(b"200", b"500") + b"12\r\n\r\n",
    _OK_HEAD.replace(b"1.1", b"1.0") + b"12\r\n\r\n",
    _OK_HEAD.replace(b"content-length", b"Content-Length") + b"12\r\n\r\n",
    _OK_HEAD + b"12\r\n\r\n\r\n\r\n",
    _OK_HEAD + b"12\n\r\n",
]


def _outcome(head: bytes) -> object:
    try:
        return _parse_any_head(head)
    except HTTPError as exc:
        return ("HTTPError", str(exc))


def _fast(head: bytes) -> object:
    try:
        return _parse_head(head)
    except HTTPError as exc:
        return ("HTTPError", str(exc))


@pytest.mark.parametrize("length", LENGTHS)
def test_every_length_reads_as_the_general_parser_reads_it(length: bytes) -> None:
    head = _OK_HEAD + length + b"\r\n\r\n"
    assert _fast(head) == _outcome(head)


@pytest.mark.parametrize("head", EDGES)
def test_other_heads_read_as_the_general_parser_reads_them(head: bytes) -> None:
    assert _fast(head) == _outcome(head)


def test_seeded_mutations_of_the_operators_head() -> None:
    rng = random.Random(11)
    alphabet = b"0123456789\r\n :HTTPcontent-length\xd9\xa3"
    accepted = refused = 0
    for _ in range(20_000):
        head = bytearray(_OK_HEAD + rng.choice(LENGTHS) + b"\r\n\r\n")
        for _ in range(rng.randrange(0, 3)):
            at = rng.randrange(len(head) + 1)
            edit = rng.randrange(3)
            if edit == 0:
                head[at:at] = bytes([rng.choice(alphabet)])
            elif edit == 1:
                del head[at : at + 1]
            else:
                head[at : at + 1] = bytes([rng.choice(alphabet)])
        expected = _outcome(bytes(head))
        assert _fast(bytes(head)) == expected
        if isinstance(expected, tuple) and expected[0] == "HTTPError":
            refused += 1
        else:
            accepted += 1
    assert accepted > 1000 and refused > 1000


def test_our_operators_head_is_read() -> None:
    assert _parse_head(_OK_HEAD + b"42\r\n\r\n") == (200, 42, True)


def test_it_is_the_head_our_operators_server_writes() -> None:
    """Else the quick read never happens (correct still, only slower)."""
    from agentguard.network._server import _head

    assert _head(200, 42, True) == _OK_HEAD + b"42\r\n\r\n"
