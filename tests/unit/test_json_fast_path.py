"""``strict_loads`` skips its walk over every string when the bytes hold no ``\\u`` escape
(decoded UTF-8 cannot hold a surrogate); each way a lone surrogate can still arrive must
still be refused, or the fast path is a hole."""

from __future__ import annotations

import pytest

from agentguard._json import strict_loads


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\ud800"}',  # in a value
        b'{"\\udc00": 1}',  # in a key
        b'[[[{"deep": ["x", "\\udbff"]}]]]',  # nested
        b'["\\\\", "\\ud800"]',  # after an escaped backslash
        '["\ud800"]',  # text handed over as str, not bytes
        b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as (invalid) UTF-8 bytes
    ],
)
def test_a_lone_surrogate_is_refused_however_it_is_spelled(raw: bytes | str) -> None:
    with pytest.raises(ValueError):
        strict_loads(raw)


def test_escapes_of_real_characters_still_parse() -> None:
    assert strict_loads(b'["caf\\u00e9", "\\ud83d\\ude00", "plain"]') == ["café", "😀", "plain"]
