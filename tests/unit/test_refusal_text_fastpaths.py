"""Two fast paths against the bodies they replaced (copied here as they were), on seeded random
and hostile inputs: the same answers, the same refusals.

* ``Allowances.refusal`` / ``select`` write the requirement's description only when they
  refuse (it was formatted for every requirement, refused or not);
* the ledger's ``_text`` lets an exact, non-empty, short-enough ASCII ``str`` through at once.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

import pytest

from agentguard._exceptions import IntentError, PaymentRequiredError, ReservationError
from agentguard._intent import chain_id_from_network
from agentguard.ledger._ledger import _text
from agentguard.x402._select import Allowances, select
from agentguard.x402._wire import PaymentRequired, Requirement, _address
from agentguard.x402.upto.client import UPTO_PERMIT2_PROXY

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OTHER = "0x4200000000000000000000000000000000000006"
FACILITATOR = "0x1111111111111111111111111111111111111111"


def _old_refusal(allowances: Allowances, req: Requirement) -> str | None:
    where = f"{req.scheme} {req.amount} of {req.asset} on {req.network}"
    if req.scheme not in allowances.schemes:
        return f"{where}: scheme {req.scheme!r} is not supported"
    try:
        chain_id = chain_id_from_network(req.network)
    except IntentError:
        return f"{where}: network {req.network!r} is not a known EVM network"
    if chain_id not in allowances.chain_ids:
        return f"{where}: chain {chain_id} is not one this agent pays on"
    cap = allowances._caps.get(req.asset.lower())
    if cap is None:
        return f"{where}: asset {req.asset} is not on the allowlist"
    if req.amount > cap:
        return f"{where}: above the per-payment cap of {cap}"
    return _old_scheme_refusal(req, where, allowances.upto_spenders)


def _old_scheme_refusal(req: Requirement, where: str, spenders: Collection[str]) -> str | None:
    extra = req.extra
    if req.scheme == "exact":
        method = extra.get("assetTransferMethod", "eip3009")
        if method != "eip3009":
            return f"{where}: asset transfer method {method!r} is not supported (eip3009 only)"
        name, version = extra.get("name"), extra.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            return f"{where}: extra lacks the token's EIP-712 name and version"
        if len(name) > 64 or len(version) > 16:
            return f"{where}: extra name/version are implausibly long"
        return None
    if _address(extra.get("facilitatorAddress")) is None:
        return f"{where}: extra.facilitatorAddress is missing or not an address"
    spender = extra.get("spender", UPTO_PERMIT2_PROXY)
    if not isinstance(spender, str) or spender.lower() not in spenders:
        return f"{where}: Permit2 spender {spender!r} is not a trusted x402 upto proxy"
    return None


def _old_select(
    required: PaymentRequired, allowances: Allowances, *, from_vault: bool = False
) -> Requirement:
    reasons = list(required.dropped)
    payable: list[Requirement] = []
    for req in required.accepts:
        refusal = _old_refusal(allowances, req)
        if refusal is None and from_vault and req.scheme != "exact":
            refusal = (
                f"{req.scheme} {req.amount} of {req.asset} on {req.network}: a vault pays only "
                "'exact' (EIP-3009, checked by its ERC-1271); Permit2 'upto' from a vault is not "
                "supported"
            )
        if refusal is None:
            payable.append(req)
        else:
            reasons.append(refusal)
    if not payable:
        raise PaymentRequiredError(
            "no payment option in the 402 answer may be paid", reasons=reasons
        )
    return min(payable, key=lambda r: r.amount)


def _requirement(rng: random.Random) -> Requirement:
    scheme = rng.choice(("exact", "exact", "upto", "upto", "stream", ""))
    extra: dict[str, Any] = {}
    for key, values in (
        ("assetTransferMethod", ("eip3009", "permit2", 7)),
        ("name", ("USD Coin", "", None, "x" * 65, 3)),
        ("version", ("2", "", "v" * 17, None)),
        ("facilitatorAddress", (FACILITATOR, "0x12", None, FACILITATOR.upper()[2:])),
        ("spender", (UPTO_PERMIT2_PROXY, UPTO_PERMIT2_PROXY.upper(), OTHER, 5)),
    ):
        if rng.random() < 0.7:
            extra[key] = rng.choice(values)
    return Requirement(
        x402_version=rng.choice((1, 2)),
        scheme=scheme,
        network=rng.choice(("eip155:8453", "base", "eip155:1", "eip155:0", "solana", "eip155:x")),
        amount=rng.choice((0, 1, 10**6, 10**7, 10**30)),
        asset=rng.choice((USDC, USDC.lower(), OTHER, "0xnope")),
        pay_to=OTHER,
        max_timeout_seconds=60,
        extra=extra,
        resource="https://shop.test/paid",
        raw={},
    )


ALLOWANCES = (
    Allowances({USDC: 10**7}),
    Allowances({USDC: 10**6, OTHER: 5}, chain_ids=(8453, 1), schemes=("exact",)),
    Allowances({OTHER: 10**30}, schemes=("upto",), upto_spenders=(UPTO_PERMIT2_PROXY, OTHER)),
)


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except PaymentRequiredError as exc:
        return ("refused", str(exc), exc.reasons)


@pytest.mark.parametrize("seed", range(8))
def test_refusals_and_selections_are_the_old_ones(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        req = _requirement(rng)
        for allowances in ALLOWANCES:
            assert allowances.refusal(req) == _old_refusal(allowances, req), req
        required = PaymentRequired(
            x402_version=2,
            accepts=tuple(_requirement(rng) for _ in range(rng.randrange(0, 4))),
            dropped=("an entry without an amount",) * rng.randrange(2),
            error="",
            resource=None,
            extensions={},
        )
        for allowances in ALLOWANCES:
            for from_vault in (False, True):
                new = _outcome(lambda: select(required, allowances, from_vault=from_vault))  # noqa: B023
                old = _outcome(lambda: _old_select(required, allowances, from_vault=from_vault))  # noqa: B023
                assert new == old


def _old_text(value: object, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ReservationError(f"{what} must be a non-empty string of at most {limit} characters")
    if type(value) is not str:
        value = str.__str__(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ReservationError(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


class _Lying(str):
    def isascii(self) -> bool:
        return True

    def __len__(self) -> int:
        return 1


def _texts(rng: random.Random) -> list[Any]:
    out: list[Any] = ["", "a", "a" * 256, "a" * 257, "é", "\ud800", "x\udfff", b"key", 5, None]
    out += [_Lying("\ud800" * 300), _Lying(""), _Lying("k"), bytearray(b"k")]
    alphabet = "ab0x \t\n\x00é€\ud800\U0001f600"
    for _ in range(400):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300))))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit", [256, 1024, 3])
def test_ledger_text_is_the_old_check(seed: int, limit: int) -> None:
    for value in _texts(random.Random(seed)):
        try:
            want: Any = ("ok", _old_text(value, "key", limit))
        except ReservationError as exc:
            want = ("error", str(exc))
        try:
            got: Any = ("ok", _text(value, "key", limit))
        except ReservationError as exc:
            got = ("error", str(exc))
        assert got == want, repr(value)
        if got[0] == "ok":
            assert type(got[1]) is str
