"""``chain_id_from_network`` and ``_checksum`` answer from bounded caches for exact ``str``
keys: against their uncached bodies (copied here as they were), on seeded random and hostile
inputs, each asked several times (cold, then from the cache): the same answers, the same
refusals (class and message)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentguard._exceptions import IntentError
from agentguard._intent import (
    _ADDRESS_RE,
    _V1_NETWORKS,
    _checksum,
    _checksum_cached,
    chain_id_from_network,
)


def _old_chain_id(network: str) -> int:
    if network.startswith("eip155:"):
        tail = network[7:]
        if tail.isascii() and tail.isdigit() and len(tail) <= 20 and (chain_id := int(tail)):
            return chain_id
        raise IntentError(f"network {network!r} is not a valid CAIP-2 eip155 id")
    if network in _V1_NETWORKS:
        return _V1_NETWORKS[network]
    raise IntentError(f"network {network!r} is not a supported EVM network")


def _old_checksum(value: Any, field: str) -> str:
    if isinstance(value, bytes) and len(value) == 20:
        value = "0x" + value.hex()
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise IntentError(f"{field} must be a 0x-prefixed 20-byte address, got {value!r:.80}")
    checksummed = _checksum_cached(value)
    hex_part = value[2:]
    if hex_part != hex_part.lower() and hex_part != hex_part.upper() and value != checksummed:
        raise IntentError(
            f"{field} {value} has a wrong EIP-55 checksum (expected {checksummed}); "
            "check the address, or pass it all lowercase"
        )
    return checksummed


def _outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except Exception as exc:  # every refusal, typed or not, compared as data
        return ("error", type(exc).__name__, str(exc))


class _Liar(str):
    """Equal to (and hashed as) a valid key while its text is another."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("eip155:8453")


class _Shifty(str):
    def startswith(self, *args: Any) -> bool:  # type: ignore[override]
        return True


def _networks(rng: random.Random) -> list[Any]:
    out: list[Any] = [
        "eip155:8453", "eip155:0", "eip155:", "eip155:01", "eip155:" + "9" * 20,
        "eip155:" + "9" * 21, "eip155:\u0668\u0664", "eip155: 1", "base", "Base", "sepolia",
        "", "x" * 100, "eip155:" + "1" * 80, _Liar("nope"), _Shifty("base"), _Liar("eip155:1"),
    ]  # fmt: skip
    for _ in range(300):
        roll = rng.random()
        if roll < 0.5:
            out.append("eip155:" + "".join(rng.choice("0123456789a ٣") for _ in range(rng.randrange(0, 24))))  # fmt: skip
        elif roll < 0.8:
            out.append(rng.choice(list(_V1_NETWORKS)) + rng.choice(("", "", " ", "x")))
        else:
            out.append("".join(rng.choice("eip155:bases") for _ in range(rng.randrange(0, 70))))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_chain_ids_from_the_cache_are_the_uncached_answers(seed: int) -> None:
    for network in _networks(random.Random(seed)) * 3:
        assert _outcome(chain_id_from_network, network) == _outcome(_old_chain_id, network), repr(
            network
        )


def _addresses(rng: random.Random) -> list[Any]:
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    out: list[Any] = [
        good, good.lower(), "0x" + good[2:].upper(), good[:-1] + "d", good + " ", " " + good,
        good[:-1], good + "0", "0X" + good[2:], "0x" + "g" * 40, bytes(20), b"\x01" * 20,
        bytes(19), bytearray(20), 7, None, _Liar(good), _Liar("0x" + "0" * 40), "x" * 42,
        good + "\n", "0x" + "0" * 39 + "\n",
    ]  # fmt: skip
    for _ in range(300):
        body = "".join(rng.choice("0123456789abcdefABCDEFx") for _ in range(rng.randrange(38, 43)))  # fmt: skip
        out.append(rng.choice(("0x", "0x", "0X", "")) + body)
        addr = "0x" + bytes(rng.randrange(256) for _ in range(20)).hex()
        checksummed = _checksum_cached(addr)
        flipped = "".join(c.swapcase() if rng.random() < 0.1 else c for c in checksummed[2:])
        out.extend((addr, checksummed, "0x" + flipped))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_checksums_from_the_cache_are_the_uncached_answers(seed: int) -> None:
    for value in _addresses(random.Random(seed)) * 3:
        for field in ("payer", "pay_to"):
            assert _outcome(_checksum, value, field) == _outcome(_old_checksum, value, field), repr(
                value
            )


def test_a_wrong_checksum_is_refused_every_time_not_only_once() -> None:
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    wrong = good[:3] + good[3].swapcase() + good[4:]
    for _ in range(3):
        with pytest.raises(IntentError, match="wrong EIP-55 checksum"):
            _checksum(wrong, "payer")
    assert _checksum(good.lower(), "payer") == good
