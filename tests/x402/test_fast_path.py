"""The x402 fast path computes less, never differently: the written-out payment intent hash,
the cached token domain, the digest shared by the shape check and the signature, and the
remembered 402 parse all give exactly what the generic code gives, and x402's own facilitator
accepts what is signed (and refuses it once a field is changed after signing)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
from x402.schemas import PaymentPayload, PaymentRequirements

from agentguard import Signer, Verifier
from agentguard._exceptions import PaymentRequiredError
from agentguard._intent import PaymentIntent
from agentguard.chain.eip3009 import token_domain_separator
from agentguard.x402._payment import Payment, PaymentPort
from agentguard.x402._wire import encode_header, parse_v2_header
from tests.unit.conftest import POLICY_CLIENT, Operators

from .conftest import AGENT_KEY
from .fakes import PAYEE, TOKEN, requirement

SIGNER = Signer.from_key(AGENT_KEY)
OPERATORS = Operators([PrivateKey() for _ in range(3)])


def _address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def test_the_written_out_payment_hash_is_the_transfer_intents_hash() -> None:
    rng = random.Random(7)
    for _ in range(300):
        intent = PaymentIntent(
            payer=_address(rng), scheme=rng.choice(["exact", "upto"]),
            network=rng.choice(["eip155:8453", "base", "eip155:84532"]), asset=_address(rng),
            amount=rng.randrange(1, 2**256), pay_to=_address(rng),
        )  # fmt: skip
        assert intent.intent_hash == intent.newton_intent().intent_hash


def test_the_cached_token_domain_ignores_address_case_and_nothing_else() -> None:
    base = {"chain_id": 8453, "name": "USD Coin", "version": "2"}
    lower = token_domain_separator(token=TOKEN.lower(), **base)  # type: ignore[arg-type]
    assert token_domain_separator(token=TOKEN, **base) == lower  # type: ignore[arg-type]
    for change in ({"name": "USDC"}, {"version": "1"}, {"chain_id": 84532}):
        assert token_domain_separator(token=TOKEN, **{**base, **change}) != lower  # type: ignore[arg-type]


def _document() -> str:
    return encode_header(
        {
            "x402Version": 2,
            "resource": {"url": "http://shop.test/paid", "description": "", "mimeType": ""},
            "accepts": [requirement()],
        }
    )


def test_a_remembered_402_parse_is_shared_but_what_is_sent_is_a_copy() -> None:
    header = _document()
    first, again = parse_v2_header(header), parse_v2_header(header)
    assert first is again
    verified, port = _verified_port(first)
    signed = port.sign(verified, port.prepare(verified))
    payment: Payment = signed.payload
    assert payment.requirement is first.accepts[0]
    # the document sent is built from copies: changing one never reaches the remembered parse
    assert dict(first.accepts[0].raw) == requirement()


def test_a_failed_parse_is_not_remembered() -> None:
    bad = encode_header({"x402Version": 2, "accepts": []})
    for _ in range(2):
        with pytest.raises(PaymentRequiredError):
            parse_v2_header(bad)


def _verified_port(required: Any) -> tuple[Any, PaymentPort]:
    req = required.accepts[0]
    intent = PaymentIntent(
        payer=SIGNER.address, scheme=req.scheme, network=req.network, asset=req.asset,
        amount=req.amount, pay_to=req.pay_to, resource=req.resource, x402_version=2,
    )  # fmt: skip
    verifier = Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
    verified = verifier.verify(OPERATORS.attest(intent, signers=[0, 1, 2]), intent)  # type: ignore[arg-type]
    port = PaymentPort(
        signer=SIGNER, payer=SIGNER.address, vault=None, required=required, req=req,
        permit2_spenders=(), clock=time.time,
    )  # fmt: skip
    return verified, port


def test_the_signature_is_eth_accounts_own() -> None:
    """coincurve over the precomputed digest signs exactly what eth-account's generic EIP-712
    signer signs (both RFC 6979: the same bytes)."""
    required = parse_v2_header(_document())
    verified, port = _verified_port(required)
    prepared = port.prepare(verified)
    ours = SIGNER.sign_payment(verified, prepared.payload)
    theirs = Account.from_key(AGENT_KEY).sign_typed_data(full_message=prepared.payload)
    assert ours == bytes(theirs.signature)


class _Chainless:
    """Just enough of x402's ``FacilitatorEvmSigner`` for ``verify``: the payer is an EOA
    (x402 then recovers the signature itself), the token has code, the transfer simulates."""

    def get_addresses(self) -> list[str]:
        return ["0x" + "55" * 20]

    def get_code(self, address: str) -> bytes:
        return b"\x60" if address.lower() == TOKEN.lower() else b""

    def read_contract(self, *args: Any) -> Any:
        return False if args[2] == "authorizationState" else None


def _facilitator_verdict(payment: Payment, change: dict[str, str] | None = None) -> Any:
    import base64
    import json

    document = json.loads(base64.b64decode(payment.value))
    document["payload"]["authorization"].update(change or {})
    scheme = ExactEvmFacilitatorScheme(_Chainless())  # type: ignore[arg-type]
    return scheme.verify(
        PaymentPayload.model_validate(document),
        PaymentRequirements.model_validate(requirement()),
    )


@pytest.mark.parametrize(
    "change",
    [None, {"value": "10001"}, {"to": "0x" + "44" * 20}, {"nonce": "0x" + "00" * 32}],
)
def test_x402s_facilitator_accepts_the_payment_and_refuses_it_changed(
    change: dict[str, str] | None,
) -> None:
    required = parse_v2_header(_document())
    verified, port = _verified_port(required)
    payment: Payment = port.sign(verified, port.prepare(verified)).payload
    verdict = _facilitator_verdict(payment, change)
    assert verdict.is_valid is (change is None), verdict


def test_the_fast_path_keeps_refusing_a_changed_authorization() -> None:
    """The digest is computed once before the checks now: an authorization for another payee
    is still refused (the checks read the typed data, not the digest)."""
    from agentguard._exceptions import IntentMismatch

    required = parse_v2_header(_document())
    verified, port = _verified_port(required)
    typed = port.prepare(verified).payload
    typed["message"]["to"] = "0x" + "44" * 20
    with pytest.raises(IntentMismatch, match="payee"):
        SIGNER.sign_payment(verified, typed)
    assert typed["message"]["to"] != PAYEE


def test_only_a_cpu_only_verifier_runs_on_the_event_loop() -> None:
    """``AsyncGuard`` verifies inline (a thread hop costs more than two recoveries) only when
    the verifier says it cannot wait on I/O: a shared replay guard (Redis, SQL) or a subclass
    of the memory one keeps verification off the loop."""
    from agentguard._verifier import MemoryReplayGuard

    class Shared:
        def claim(self, task_id: bytes, expires_at: int) -> bool:
            return True

    class Subclassed(MemoryReplayGuard):
        pass

    addresses = OPERATORS.addresses
    assert Verifier(addresses, policy_client=POLICY_CLIENT).blocking is False
    for guard in (Shared(), Subclassed()):
        verifier = Verifier(addresses, policy_client=POLICY_CLIENT, replay_guard=guard)
        assert verifier.blocking is True
