"""The signer's one-pass EIP-3009 path (``Signer._plain_eip3009``) signs exactly what
eth-account's generic EIP-712 signer signs, refuses exactly what the general path refuses, and
cannot be talked into signing another payee or amount than the one it checked: by objects whose
reads change, by key objects that answer another key's lookup, or by another thread editing the
authorization or swapping the attestation's intent while it signs."""

from __future__ import annotations

import copy
import random
import sys
import threading
import time
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account

from agentguard import Signer, Verifier
from agentguard._exceptions import AgentGuardError, MalformedSignature
from agentguard._intent import PaymentIntent
from agentguard._signer import _EIP3009_FIELDS, eip3009_digest, sign_typed_digest
from agentguard._verifier import VerifiedAttestation
from agentguard.chain.eip3009 import EIP3009_TYPES
from tests.unit.conftest import POLICY_CLIENT, Operators

from .fakes import PAYEE, STRANGER

OPERATORS = Operators([PrivateKey() for _ in range(3)])
VERIFIER = Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
KEYS = ["0x" + bytes([i + 1]).hex() * 32 for i in range(6)]
SIGNERS = [Signer.from_key(k) for k in KEYS]
ACCOUNTS = [Account.from_key(k) for k in KEYS]


def _address(rng: random.Random) -> str:
    raw = "0x" + rng.randbytes(20).hex()
    return str(
        rng.choice([raw, raw.upper().replace("0X", "0x"), Account.from_key(b"\x01" * 32).address])
    )


def _case(rng: random.Random) -> tuple[int, PaymentIntent, dict[str, Any], int]:
    """A random authorization the port could build, its intent and the attestation expiry."""
    who = rng.randrange(len(SIGNERS))
    payer = SIGNERS[who].address
    chain_id = rng.choice([8453, 84532, 1, rng.randrange(1, 2**64)])
    token, payee = _address(rng), _address(rng)
    amount = rng.choice([1, rng.randrange(1, 2**64), rng.randrange(1, 2**256)])
    intent = PaymentIntent(
        payer=payer, scheme="exact", network=f"eip155:{chain_id}", asset=token,
        amount=amount, pay_to=payee,
    )  # fmt: skip
    now = int(time.time())
    expires = now + rng.randrange(30, 300)
    name = rng.choice(["USD Coin", "USDC", "Ünïcødé €", "", "x" * 64])
    version = rng.choice(["2", "1", "", "v2.0"])
    typed = {
        "types": {k: [dict(f) for f in v] for k, v in EIP3009_TYPES.items()},
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": rng.choice([token, token.lower()]),
        },
        "message": {
            "from": rng.choice([payer, payer.lower()]),
            "to": rng.choice([payee, payee.lower()]),
            "value": amount,
            "validAfter": rng.choice([0, now - 600, now]),
            "validBefore": rng.choice([expires, expires - 1, now + 1]),
            "nonce": "0x" + rng.randbytes(32).hex(),
        },
    }
    return who, intent, typed, expires


def _verified(intent: PaymentIntent, expires: int) -> VerifiedAttestation:
    return VERIFIER.verify(OPERATORS.attest(intent, expires_at=expires), intent)  # type: ignore[arg-type]


def test_the_private_type_table_is_eip3009s() -> None:
    assert {
        name: [{"name": n, "type": t} for n, t in fields] for name, fields in _EIP3009_FIELDS
    } == EIP3009_TYPES


def test_byte_identical_to_eth_account_on_fuzzed_authorizations() -> None:
    rng = random.Random(3009)
    fast = 0
    for _ in range(400):
        who, intent, typed, expires = _case(rng)
        signer = SIGNERS[who]
        verified = _verified(intent, expires)
        assert signer._plain_eip3009(intent, typed, expires) == eip3009_digest(typed)
        fast += 1
        ours = signer.sign_payment(verified, typed)
        theirs = bytes(ACCOUNTS[who].sign_typed_data(full_message=typed).signature)
        assert ours == theirs
        assert ours[64] in (27, 28)
    assert fast == 400


# -- hostile shapes: the one-pass path and the general path give the same verdict --------------


class _Flip(str):
    """A str whose comparisons and lowercase flip to another address after the first read."""

    reads = 0

    def lower(self) -> str:
        _Flip.reads += 1
        return PAYEE.lower() if _Flip.reads == 1 else STRANGER.lower()

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class _Index(int):
    def __index__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class _Key(str):
    """A key object that answers the lookup of ``"to"``."""

    def __eq__(self, other: object) -> bool:
        return other == "to" or str.__eq__(self, other)

    __hash__ = str.__hash__


class _Dict(dict):  # type: ignore[type-arg]
    pass


def _mutations(rng: random.Random, typed: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(typed)
    m, d = t["message"], t["domain"]
    choice = rng.randrange(24)
    if choice == 0:
        m["to"] = STRANGER
    elif choice == 1:
        m["value"] += 1
    elif choice == 2:
        m["value"] = str(m["value"])
    elif choice == 3:
        m["value"] = hex(m["value"])
    elif choice == 4:
        m["validAfter"] = True
    elif choice == 5:
        m["validBefore"] = float(m["validBefore"])
    elif choice == 6:
        m["validBefore"] += 10_000
    elif choice == 7:
        m["validAfter"] = int(time.time()) + 3600
    elif choice == 8:
        m["to"] = _Flip(m["to"])
    elif choice == 9:
        m["value"] = _Index(m["value"])
    elif choice == 10:
        t["message"] = _Dict(m)
    elif choice == 11:
        m["extra"] = "x"
    elif choice == 12:
        del d["version"]
    elif choice == 13:
        d["salt"] = "0x" + "00" * 32
    elif choice == 14:
        t["types"]["TransferWithAuthorization"] = tuple(t["types"]["TransferWithAuthorization"])
    elif choice == 15:
        t["types"]["TransferWithAuthorization"][1]["type"] = "uint160"
    elif choice == 16:
        m["nonce"] = bytes.fromhex(m["nonce"][2:])
    elif choice == 17:
        m["nonce"] = m["nonce"][:-1]
    elif choice == 18:
        d["chainId"] = str(d["chainId"])
    elif choice == 19:
        d["name"] = "\ud800"  # a lone surrogate: no UTF-8 encoding
    elif choice == 20:
        d["verifyingContract"] = d["verifyingContract"][2:]
    elif choice == 21:
        value = m.pop("to")
        m[_Key("to")] = value
    elif choice == 22:
        t["primaryType"] = "ReceiveWithAuthorization"
    else:
        t["extra"] = {}
    return t


def _verdict(signer: Signer, verified: VerifiedAttestation, typed: dict[str, Any]) -> object:
    _Flip.reads = 0
    try:
        return signer.sign_payment(verified, typed)
    except AgentGuardError as exc:
        return (type(exc).__name__, exc.message)


def test_hostile_authorizations_get_the_general_paths_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    refused = 0
    for i in range(200):
        who, intent, typed, expires = _case(rng)
        hostile = _mutations(rng, typed) if i % 8 else typed
        signer = SIGNERS[who]
        fast = _verdict(signer, _verified(intent, expires), hostile)
        with monkeypatch.context() as m:
            m.setattr(Signer, "_plain_eip3009", lambda *a: None)
            general = _verdict(signer, _verified(intent, expires), hostile)
        assert fast == general, (i, hostile)
        refused += isinstance(fast, tuple)
    assert refused > 100  # most mutations are refused, by both


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t["message"].__setitem__("to", _Flip(PAYEE)),
        lambda t: t["message"].__setitem__("value", _Index(t["message"]["value"])),
        lambda t: t.__setitem__("message", _Dict(t["message"])),
        lambda t: t["message"].__setitem__(_Key("to"), t["message"].pop("to")),
    ],
)
def test_objects_whose_reads_change_are_refused_and_nothing_is_signed(edit: Any) -> None:
    rng = random.Random(5)
    who, intent, typed, expires = _case(rng)
    edit(typed)
    _Flip.reads = 0
    with pytest.raises(AgentGuardError):
        SIGNERS[who].sign_payment(_verified(intent, expires), typed)


def test_another_thread_editing_mid_sign_never_redirects_the_payment() -> None:
    """A thread flips the authorization's payee and amount and swaps the attestation's intent
    (``object.__setattr__`` on the frozen dataclass) while the signer works: every signature
    that comes out is over the authorization that was checked (PAYEE, the attested amount)."""
    rng = random.Random(9)
    who, intent, typed, expires = _case(rng)
    signer, pub = SIGNERS[who], PrivateKey(bytes.fromhex(KEYS[who][2:])).public_key
    typed["message"]["to"] = PAYEE
    intent = PaymentIntent(
        payer=intent.payer, scheme="exact", network=intent.network, asset=intent.asset,
        amount=intent.amount, pay_to=PAYEE,
    )  # fmt: skip
    other = PaymentIntent(
        payer=intent.payer, scheme="exact", network=intent.network, asset=intent.asset,
        amount=intent.amount + 1, pay_to=STRANGER,
    )  # fmt: skip
    stop = threading.Event()
    shared: list[VerifiedAttestation] = []

    def meddle() -> None:
        flip = False
        while not stop.is_set():
            flip = not flip
            message = typed["message"]
            message["to"] = STRANGER if flip else PAYEE
            message["value"] = intent.amount + 1 if flip else intent.amount
            for v in list(shared):
                object.__setattr__(v, "intent", other if flip else intent)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=meddle)
    thread.start()
    signed = 0
    try:
        for _ in range(150):
            verified = _verified(intent, expires)
            shared[:] = [verified]
            try:
                signature = signer.sign_payment(verified, typed)
            except AgentGuardError:
                continue
            signed += 1
            good = copy.deepcopy(typed)
            good["message"].update(to=PAYEE, value=intent.amount)
            digest = eip3009_digest(good)
            assert digest is not None
            recovered = PublicKey.from_signature_and_message(
                signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
            )
            assert recovered.format() == pub.format()  # signed over PAYEE and the amount
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert signed > 0  # some are refused (the intent was swapped); none is redirected


class _OddKey:
    def sign_recoverable(self, digest: bytes, hasher: Any = None) -> bytes:
        return b"\x01" * 64 + b"\x02"


def test_a_recovery_id_without_a_token_v_is_refused() -> None:
    with pytest.raises(MalformedSignature):
        sign_typed_digest(_OddKey(), b"\x00" * 32)  # type: ignore[arg-type]
