"""Red team of s16-scheme (d89ee27): the ``Signer`` signs an x402 authorization only in the
scheme of the verified ``PaymentIntent`` (EIP-3009 for ``exact``, Permit2 for ``upto``).

What held: odd typed data (subclassed or mixed-case primary types, extra keys and types, other
field types, dict subclasses) signs nothing of the other scheme on any path (``sign_payment``,
``sign_eip3009`` and its fall to the general path, ``sign_vault_payment``); a refusal gives the
attestation back; a scheme flipped on the caller's intent after verification is refused (and
spends the attestation, by the ticket registry's design). What did not: the scheme is not part
of what the operators sign (the attestation digest covers the intent hash, an ERC-20 transfer),
so whoever picks the intent at verification picks the scheme (tests marked HOLE). One way
to pick it through the public API, ``Guard.authorize``'s ``wasm_args``, is closed.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import encode_typed_data

from agentguard import (
    AttestationReplayed,
    Guard,
    IntentError,
    IntentMismatch,
    PaymentIntent,
    PolicyDenied,
    Signer,
    VerifiedAttestation,
    Verifier,
)
from agentguard._exceptions import AgentGuardError
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import Policy
from agentguard.testing import SigningSpy
from agentguard.x402.upto.client import UPTO_PERMIT2_PROXY
from tests.unit.conftest import PAYEE, POLICY_CLIENT, TOKEN, Operators
from tests.unit.test_signer import KEY, _permit2, eip3009
from tests.x402.conftest import connect

OPERATORS = Operators([PrivateKey() for _ in range(3)])
SPENDERS = [UPTO_PERMIT2_PROXY]


class Str(str):
    """A ``str`` subclass: equal to its text, but not exactly a ``str``."""


class Dict(dict):  # type: ignore[type-arg]
    """A ``dict`` subclass."""


@pytest.fixture
def signer() -> Signer:
    return Signer.from_key(KEY)


@pytest.fixture
def spy() -> Iterator[SigningSpy]:
    with SigningSpy() as s:
        yield s


def payment(scheme: str, payer: str) -> PaymentIntent:
    return PaymentIntent(
        payer=payer, scheme=scheme, network="eip155:8453", asset=TOKEN, amount=10_000,
        pay_to=PAYEE,
    )  # fmt: skip


def verify(
    intent: PaymentIntent, attested: PaymentIntent | None = None, *, client: str = POLICY_CLIENT
) -> VerifiedAttestation:
    """``intent`` verified under an attestation the operators signed for ``attested`` (default
    ``intent``): they sign its transfer's hash, the only thing of a payment they sign."""
    signed_for = intent if attested is None else attested
    attestation = OPERATORS.attest(
        signed_for.newton_intent(), expires_at=int(time.time()) + 60, policy_client=client
    )
    return Verifier(OPERATORS.addresses, policy_client=client).verify(attestation, intent)


def exact_typed(payer: str) -> dict[str, Any]:
    typed = eip3009(payer, PAYEE, 10_000)
    typed["message"]["nonce"] = "0x" + typed["message"]["nonce"].hex()
    return typed


def upto_typed() -> dict[str, Any]:
    return _permit2(TOKEN, UPTO_PERMIT2_PROXY)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(typed: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = typed
        for key in parents:
            node = node[key]
        node[leaf] = value(node[leaf]) if callable(value) else value

    return edit


def _extra_type(typed: dict[str, Any]) -> None:
    typed["types"]["Extra"] = [{"name": "x", "type": "uint256"}]


def _dict_subclass(typed: dict[str, Any]) -> None:
    typed["message"] = Dict(typed["message"])


# Each makes the canonical authorization of one scheme odd in one way.
EIP3009_ODDITIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "canonical (one-pass path)": lambda typed: None,
    "primaryType a str subclass": _set("primaryType", Str),
    "primaryType mixed case": _set("primaryType", "transferWithAuthorization"),
    "an extra top-level key": _set("scheme", "exact"),
    "an extra struct in types": _extra_type,
    "value a decimal str": _set("message.value", str),
    "value a hex str": _set("message.value", hex),
    "chainId a hex str": _set("domain.chainId", hex),
    "addresses upper case": _set("message.to", lambda a: "0x" + a[2:].upper()),
    "nonce as bytes": _set("message.nonce", lambda n: bytes.fromhex(n[2:])),
    "nonce a str subclass": _set("message.nonce", Str),
    "message a dict subclass": _dict_subclass,
    "types a tuple": _set("types.TransferWithAuthorization", tuple),
    "validAfter a bool": _set("message.validAfter", False),
}
PERMIT2_ODDITIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "canonical": lambda typed: None,
    "primaryType a str subclass": _set("primaryType", Str),
    "primaryType lower case": _set("primaryType", "permitWitnessTransferFrom"),
    "an extra top-level key": _set("scheme", "upto"),
    "amount a decimal str": _set("message.permitted.amount", str),
    "spender upper case": _set("message.spender", lambda a: "0x" + a[2:].upper()),
    "message a dict subclass": _dict_subclass,
    "types a tuple": _set("types.PermitWitnessTransferFrom", tuple),
}


@pytest.mark.parametrize("odd", EIP3009_ODDITIES, ids=str)
def test_an_upto_attestation_signs_no_eip3009_authorization(signer, spy, odd):
    verified = verify(payment("upto", signer.address))
    typed = exact_typed(signer.address)
    EIP3009_ODDITIES[odd](typed)
    with pytest.raises(IntentMismatch):
        signer.sign_payment(verified, typed, permit2_spenders=SPENDERS)
    assert spy.calls == []
    # not spent by the refusal: its own scheme still signs, once
    assert signer.sign_payment(verified, upto_typed(), permit2_spenders=SPENDERS)
    assert spy.calls == ["sign_typed_data"]


@pytest.mark.parametrize("odd", PERMIT2_ODDITIES, ids=str)
def test_an_exact_attestation_signs_no_permit2_authorization(signer, spy, odd):
    verified = verify(payment("exact", signer.address))
    typed = upto_typed()
    PERMIT2_ODDITIES[odd](typed)
    with pytest.raises(IntentMismatch):
        signer.sign_payment(verified, typed, permit2_spenders=SPENDERS)
    assert spy.calls == []
    assert signer.sign_payment(verified, exact_typed(signer.address))
    assert spy.calls == ["sign_typed_data"]


SIGN_EIP3009_ODDITIES: dict[str, dict[str, Any]] = {
    "plain (one-pass)": {},
    "chain_id a str": {"chain_id": "8453"},
    "value a str": {"value": "10000"},
    "valid_after a bool": {"valid_after": False},
    "valid_before a float": {"valid_before": float(int(time.time()) + 30)},
    "nonce as bytes": {"nonce": b"\x07" * 32},
    "nonce upper case": {"nonce": "0x" + "AB" * 32},
    "token upper case": {"token": "0x" + TOKEN[2:].upper()},
    "name a str subclass": {"name": Str("USD Coin")},
    "to a str subclass": {"to": Str(PAYEE)},
}


@pytest.mark.parametrize("odd", SIGN_EIP3009_ODDITIES, ids=str)
def test_sign_eip3009_of_an_upto_attestation_is_refused_on_either_path(signer, spy, odd):
    """Fields the one pass does not take fall to the general path with the typed data they
    make: an upto attestation is refused there too, and stays usable."""
    verified = verify(payment("upto", signer.address))
    fields: dict[str, Any] = {
        "name": "USD Coin", "version": "2", "chain_id": 8453, "token": TOKEN,
        "payer": signer.address, "to": PAYEE, "value": 10_000, "valid_after": 0,
        "valid_before": int(time.time()) + 30, "nonce": "0x" + "07" * 32,
    }  # fmt: skip
    fields.update(SIGN_EIP3009_ODDITIES[odd])
    with pytest.raises(IntentMismatch):
        signer.sign_eip3009(verified, **fields)
    assert spy.calls == []
    assert signer.sign_payment(verified, upto_typed(), permit2_spenders=SPENDERS)


def test_a_vault_signs_no_upto_attestation_and_keeps_it(signer, spy):
    """A vault pays only ``exact``: an ``upto`` attestation for the vault signs no EIP-3009
    blob (twice: the first refusal did not spend it, which ``AttestationReplayed`` would say),
    while the same payment attested ``exact`` does."""
    vault = POLICY_CLIENT
    verified = verify(payment("upto", vault))
    typed = exact_typed(vault)
    typed["message"]["nonce"] = "0x" + verified.attestation.task_id.hex()
    for _ in range(2):
        with pytest.raises(IntentMismatch, match="scheme"):
            signer.sign_vault_payment(verified, copy.deepcopy(typed), vault=vault)
    assert spy.calls == []
    exact = verify(payment("exact", vault))
    typed["message"]["nonce"] = "0x" + exact.attestation.task_id.hex()
    assert signer.sign_vault_payment(exact, typed, vault=vault)


def _random_typed(rng: random.Random, payer: str) -> dict[str, Any]:
    """One of either scheme's canonical authorizations, with up to two random oddities (some
    harmless, some not), its primary type sometimes swapped for the other scheme's."""
    if rng.random() < 0.5:
        typed, oddities = exact_typed(payer), EIP3009_ODDITIES
    else:
        typed, oddities = upto_typed(), PERMIT2_ODDITIES
    for name in rng.sample(sorted(oddities), rng.randint(0, 2)):
        oddities[name](typed)
    if rng.random() < 0.15:
        other = {"TransferWithAuthorization": "PermitWitnessTransferFrom"}
        primary = typed["primaryType"]
        typed["primaryType"] = other.get(primary, "TransferWithAuthorization")
    return typed


def test_random_authorizations_sign_only_the_attested_scheme(signer):
    """Differential over random odd authorizations: under an ``exact`` and an ``upto``
    attestation of the same payment, whatever is signed is that scheme's authorization and a
    signature over it (recovered by eth-account, independently of agentguard's encoder, to
    this key), and each scheme signs some."""
    rng = random.Random(16)
    signed = {"exact": 0, "upto": 0}
    for _ in range(120):
        typed = _random_typed(rng, signer.address)
        for scheme in ("exact", "upto"):
            verified = verify(payment(scheme, signer.address))
            try:
                signature = signer.sign_payment(
                    verified, copy.deepcopy(typed), permit2_spenders=SPENDERS
                )
            except AgentGuardError:
                continue
            assert SCHEME_OF[typed["primaryType"]] == scheme
            recovered = Account.recover_message(
                encode_typed_data(full_message=_plainly(typed)), signature=signature
            )
            assert recovered == signer.address
            signed[scheme] += 1
    assert signed["exact"] > 5 and signed["upto"] > 5, signed


SCHEME_OF = {"TransferWithAuthorization": "exact", "PermitWitnessTransferFrom": "upto"}


def _plainly(typed: dict[str, Any]) -> dict[str, Any]:
    """``typed`` as eth-account reads it (what it signed was plain data of these values)."""
    plain = copy.deepcopy(dict(typed))
    plain["message"] = dict(plain["message"])
    return plain


# -- the intent after verification -----------------------------------------------------------


def test_a_scheme_flipped_after_verification_is_refused_and_spends_the_attestation(signer, spy):
    """The signer reads the scheme from the verifier's private copy; a caller's intent
    flipped afterwards no longer matches it. Such a refusal (in the ticket registry, before
    anything is built) spends the attestation: by design, an altered attestation or intent
    is used up for good (``_tickets.redeem``), even if put back."""
    verified = verify(payment("upto", signer.address))
    object.__setattr__(verified.intent, "scheme", "exact")
    with pytest.raises(IntentMismatch, match="altered"):
        signer.sign_payment(verified, exact_typed(signer.address))
    object.__setattr__(verified.intent, "scheme", "upto")
    with pytest.raises(AttestationReplayed):
        signer.sign_payment(verified, upto_typed(), permit2_spenders=SPENDERS)
    assert spy.calls == []


def test_a_verified_attestation_carrying_another_schemes_intent_signs_nothing(signer, spy):
    """``dataclasses.replace`` makes a ``VerifiedAttestation`` with the other scheme's intent
    (it copies the private token): refused, and, as any altered intent, the attestation is
    spent (``_tickets.redeem``) rather than handed back."""
    verified = verify(payment("upto", signer.address))
    swapped = dataclasses.replace(verified, intent=payment("exact", signer.address))
    with pytest.raises(IntentMismatch, match="altered"):
        signer.sign_payment(swapped, exact_typed(signer.address))
    with pytest.raises(AttestationReplayed):
        signer.sign_payment(verified, upto_typed(), permit2_spenders=SPENDERS)
    assert spy.calls == []


def test_an_intent_whose_scheme_is_a_lying_str_is_pinned_to_its_text(signer, spy):
    """A ``str`` subclass equal to everything, as the scheme at verification: the verifier's
    copy holds the plain text ``"upto"``, so it does not pass as ``exact`` too."""

    class Liar(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __ne__(self, other: object) -> bool:
            return False

        __hash__ = str.__hash__

    intent = payment("upto", signer.address)
    object.__setattr__(intent, "scheme", Liar("upto"))
    verified = verify(intent, attested=payment("upto", signer.address))
    with pytest.raises(IntentMismatch):
        signer.sign_payment(verified, exact_typed(signer.address))
    assert spy.calls == []


# -- HOLE: the operators do not sign the scheme ---------------------------------------------


@pytest.mark.parametrize("attested, signed", [("exact", "upto"), ("upto", "exact")])
def test_hole_the_scheme_is_not_attested(signer, spy, attested, signed):
    """HOLE (not closed by d89ee27): operators sign ``PaymentIntent.intent_hash``, the hash of
    the ERC-20 ``transfer(pay_to, amount)``, which is the same for both schemes; so one
    attestation verifies as either scheme, and the scheme the signer checks is the one the
    caller of ``Verifier.verify`` chose, not one a quorum allowed. Here an attestation the
    operators signed for an ``exact`` payment signs a Permit2 ``upto`` authorization (and an
    ``upto`` one an EIP-3009 transfer of the whole maximum). What it cannot do: move more,
    another token, or to another payee than the attested transfer."""
    verified = verify(payment(signed, signer.address), attested=payment(attested, signer.address))
    typed = exact_typed(signer.address) if signed == "exact" else upto_typed()
    assert signer.sign_payment(verified, typed, permit2_spenders=SPENDERS)  # HOLE: signs
    assert spy.calls == ["sign_typed_data"]


# -- HOLE, end to end: a policy that tells the schemes apart --------------------------------

EXACT_ONLY = Policy(
    name="s16-exact-only",
    entrypoint="s16.allow",
    modules={
        "s16.rego": "package s16\nimport rego.v1\ndefault allow := false\n"
        'allow if data.wasm.x402.scheme == "exact"\n'
    },
)


@pytest.fixture
def exact_only(network: ReferenceNetwork) -> Iterator[Guard]:
    """A guard on a client whose (owner's own) policy allows only ``exact`` payments."""
    client = "0x00000000000000000000000000000000005C4E16"
    network.register_policy_client(client, EXACT_ONLY, {})
    with connect(network, client) as guard:
        yield guard


def test_a_policy_refusing_upto_refuses_it(exact_only, signer, spy):
    """The policy is honest: the pipeline's own request for an ``upto`` payment is denied,
    and an ``exact`` one allowed (so the holes below are not the policy's)."""
    with pytest.raises(PolicyDenied):
        exact_only.authorize(payment("upto", signer.address))
    verified = exact_only.authorize(payment("exact", signer.address))
    assert signer.sign_payment(verified, exact_typed(signer.address))


class Sneaky(dict):  # type: ignore[type-arg]
    """wasm_args hiding its ``x402`` key from ``in`` (``update`` still copies it)."""

    def __contains__(self, key: object) -> bool:
        return False


@pytest.mark.parametrize("wrap", [dict, Sneaky], ids=["dict", "hidden key"])
def test_wasm_args_may_not_show_the_policy_another_scheme(exact_only, signer, spy, wrap):
    """Was a HOLE (c1dd83e): ``Guard.authorize(intent, wasm_args=...)`` merged the caller's
    ``x402`` over the intent's own, so the operators evaluated an ``exact`` payment while the
    verified intent (and so the signer) was ``upto``: a Permit2 authorization a policy allowing
    only ``exact`` never allowed. Now refused before anything is sent; the payment's own
    details (as the pipeline passes them) still go."""
    upto, exact = payment("upto", signer.address), payment("exact", signer.address)
    with pytest.raises(IntentError, match="x402"):
        exact_only.authorize(upto, wasm_args=wrap(exact.wasm_args()))
    other = exact.wasm_args()
    other["x402"]["resource"] = "https://elsewhere.example/paid"
    with pytest.raises(IntentError, match="x402"):
        exact_only.authorize(exact, wasm_args=other)
    with pytest.raises(PolicyDenied):  # the policy sees the intent's own scheme
        exact_only.authorize(upto, wasm_args={"note": 1})
    verified = exact_only.authorize(exact, wasm_args=exact.wasm_args())
    assert signer.sign_payment(verified, exact_typed(signer.address))
    assert spy.calls == ["sign_typed_data"]


def test_hole_an_exact_attestation_verified_as_upto(exact_only, signer, spy):
    """HOLE (needs the operators to sign the x402 details): the attestation the network
    gives for an ``exact`` payment verifies as the ``upto`` one (the same transfer hash) and
    signs Permit2. A hostile gateway can do the same by handing the operators other x402
    details than the client sent: they check only that the details describe the transfer."""
    attestation = exact_only.authorizer.authorize(payment("exact", signer.address))
    verified = exact_only.verifier.verify(attestation, payment("upto", signer.address))
    assert signer.sign_payment(verified, upto_typed(), permit2_spenders=SPENDERS)  # HOLE
    assert spy.calls == ["sign_typed_data"]
