"""Red team (session 9) on the signer's one-pass EIP-3009 path (``Signer._plain_eip3009``).

A hostile agent host hands the signer an authorization it keeps editing from another thread.
The one-pass path checks sizes (a field dict of 2 entries, a field list of the canonical
length) and then reads: a thread that grows the dict or list between the check and the read
made the unpack (``too many values``) or the strict ``zip`` raise a bare ``ValueError`` out of
``sign_payment``. The preemption is made deterministic here with an opcode tracer that does,
at exactly that instruction, what the other thread would. Nothing may come out but a
signature over the attested payment or an ``AgentGuardError``.

Also pinned (held): one signature per attestation on the fast path, the window edges, names
that are not UTF-8, nonce spellings, a hash-colliding key object that swaps the message during
the lookup, and no key material in what a refusal says."""

from __future__ import annotations

import dis
import random
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_account import Account

from agentguard import Signer, Verifier
from agentguard._exceptions import AgentGuardError, AttestationReplayed, IntentMismatch
from agentguard._intent import PaymentIntent
from agentguard._signer import _canonical_eip3009_types
from agentguard._verifier import VerifiedAttestation
from agentguard.chain.eip3009 import EIP3009_TYPES
from tests.unit.conftest import POLICY_CLIENT, Operators

OPERATORS = Operators([PrivateKey() for _ in range(3)])
VERIFIER = Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
KEY = "0x" + "5a" * 32
SIGNER = Signer.from_key(KEY)
ACCOUNT = Account.from_key(KEY)
TOKEN, PAYEE, STRANGER = "0x" + "22" * 20, "0x" + "33" * 20, "0x" + "ee" * 20


def _case(amount: int = 1_000) -> tuple[PaymentIntent, dict[str, Any], int]:
    intent = PaymentIntent(
        payer=SIGNER.address, scheme="exact", network="eip155:8453", asset=TOKEN,
        amount=amount, pay_to=PAYEE,
    )  # fmt: skip
    now = int(time.time())
    expires = now + 120
    typed = {
        "types": {k: [dict(f) for f in v] for k, v in EIP3009_TYPES.items()},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 8453, "verifyingContract": TOKEN},
        "message": {
            "from": SIGNER.address, "to": PAYEE, "value": amount, "validAfter": now - 5,
            "validBefore": expires, "nonce": "0x" + "ab" * 32,
        },
    }  # fmt: skip
    return intent, typed, expires


def _verified(intent: PaymentIntent, expires: int) -> VerifiedAttestation:
    return VERIFIER.verify(OPERATORS.attest(intent, expires_at=expires), intent)  # type: ignore[arg-type]


def _the_authorization(typed: dict[str, Any]) -> bytes:
    return bytes(ACCOUNT.sign_typed_data(full_message=typed).signature)


# -- a thread resizing what the one-pass path reads, between its size check and its read -------

_CODE = _canonical_eip3009_types.__code__
_INSTRUCTIONS = list(dis.get_instructions(_CODE))
_AFTER_ITEMS = next(i for i, x in enumerate(_INSTRUCTIONS) if x.argval == "items")
_UNPACK = next(x.offset for x in _INSTRUCTIONS[_AFTER_ITEMS:] if x.opname == "UNPACK_SEQUENCE")


def _preempted(
    when: Callable[[FrameType], bool], do: Callable[[], None], run: Callable[[], Any]
) -> Any:
    """``run()``, with ``do()`` done once inside ``_canonical_eip3009_types`` right before the
    unpack of a field's items, in the first frame state ``when`` accepts: what a thread that
    got the GIL exactly there would do."""
    done: list[bool] = []

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and not done and frame.f_lasti == _UNPACK and when(frame):
            done.append(True)
            do()
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is _CODE:
            frame.f_trace_opcodes = True
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return run()
    finally:
        sys.settrace(previous)
        assert done, "the preemption point was never reached"


def _sign_or_refuse(typed: dict[str, Any], verified: VerifiedAttestation) -> bytes | None:
    try:
        return SIGNER.sign_payment(verified, typed)
    except AgentGuardError:
        return None


def test_a_field_dict_grown_between_its_size_check_and_its_unpack_is_refused_typed() -> None:
    intent, typed, expires = _case()
    field = typed["types"]["TransferWithAuthorization"][2]
    verified = _verified(intent, expires)
    result = _preempted(
        lambda frame: frame.f_locals.get("field") is field,
        lambda: field.__setitem__("extra", "uint256"),
        lambda: _sign_or_refuse(typed, verified),
    )
    assert result is None  # the general path refuses the non-canonical types, typed
    del field["extra"]
    assert SIGNER.sign_payment(verified, typed) == _the_authorization(typed)  # handed back


def test_a_field_list_grown_during_the_strict_zip_is_refused_typed() -> None:
    intent, typed, expires = _case()
    fields = typed["types"]["TransferWithAuthorization"]
    first = fields[0]
    verified = _verified(intent, expires)
    result = _preempted(
        lambda frame: frame.f_locals.get("field") is first,
        lambda: fields.append({"name": "memo", "type": "string"}),
        lambda: _sign_or_refuse(typed, verified),
    )
    assert result is None
    fields.pop()
    assert SIGNER.sign_payment(verified, typed) == _the_authorization(typed)


# -- held ------------------------------------------------------------------------------------------


def test_one_signature_per_attestation_on_the_fast_path() -> None:
    intent, typed, expires = _case()
    verified = _verified(intent, expires)
    assert SIGNER.sign_payment(verified, typed) == _the_authorization(typed)
    with pytest.raises(AttestationReplayed):
        SIGNER.sign_payment(verified, typed)
    other = dict(typed, message={**typed["message"], "nonce": "0x" + "cd" * 32})
    with pytest.raises(AttestationReplayed):  # another nonce is not another attestation
        SIGNER.sign_payment(verified, other)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("validBefore", "expires+1"), ("validBefore", -1), ("validAfter", "future"),
        ("validAfter", -1), ("validBefore", 2**256), ("value", 999), ("value", 1001),
        ("value", 1000 + 2**256), ("to", STRANGER), ("nonce", "0x" + "ab" * 32 + "\n"),
        ("nonce", "0x" + "ab" * 31), ("nonce", "0x" + "\uff11" * 64), ("nonce", "0X" + "ab" * 32),
    ],
)  # fmt: skip
def test_what_the_attestation_does_not_cover_is_refused(field: str, value: Any) -> None:
    intent, typed, expires = _case()
    if value == "expires+1":
        value = expires + 1
    elif value == "future":
        value = int(time.time()) + 3600
    typed["message"][field] = value
    verified = _verified(intent, expires)
    with pytest.raises(IntentMismatch):
        SIGNER.sign_payment(verified, typed)
    # refused: the ticket is handed back, so the corrected authorization signs once
    _, good, _ = _case()
    good["message"]["validBefore"] = expires
    assert SIGNER.sign_payment(verified, good) == _the_authorization(good)


def test_the_window_edges_that_are_allowed_sign_what_eth_account_signs() -> None:
    intent, typed, expires = _case()
    typed["message"]["validBefore"] = expires
    typed["message"]["validAfter"] = 0
    assert SIGNER.sign_payment(_verified(intent, expires), typed) == _the_authorization(typed)


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [("domain", "name", "USD\ud800Coin"), ("domain", "version", "\udfff"),
     ("domain", "chainId", 8453 + 2**256), ("domain", "chainId", 1),
     ("domain", "verifyingContract", "0x" + "22" * 19 + "2g")],
)  # fmt: skip
def test_domains_that_cannot_be_signed_or_are_not_attested_are_refused(
    where: str, key: str, value: Any
) -> None:
    intent, typed, expires = _case()
    typed[where][key] = value
    with pytest.raises(IntentMismatch):
        SIGNER.sign_payment(_verified(intent, expires), typed)


class _Collider:
    """A key that hashes like ``"message"`` and, when compared during the lookup, swaps the
    real ``"message"`` entry in (a stranger's) and leaves the dict looking canonical."""

    def __init__(self, typed: dict[Any, Any], swap: dict[str, Any]) -> None:
        self.typed: dict[Any, Any] = typed
        self.swap = swap

    def __hash__(self) -> int:
        return hash("message")

    def __eq__(self, other: object) -> bool:
        value = dict.pop(self.typed, self, None)
        if value is not None:
            self.typed["message"] = self.swap
        return False


def test_a_key_that_swaps_the_message_during_the_lookup_never_redirects_the_payment() -> None:
    intent, typed, expires = _case()
    stranger = {**typed["message"], "to": STRANGER}
    good = {**typed["message"]}
    hostile: dict[Any, Any] = {k: v for k, v in typed.items() if k != "message"}
    collider = _Collider(hostile, stranger)
    dict.__setitem__(hostile, collider, good)
    verified = _verified(intent, expires)
    try:
        signature = SIGNER.sign_payment(verified, hostile)
    except AgentGuardError:
        assert hostile["message"] is stranger  # the swap happened, and was refused
        return
    assert signature == _the_authorization({**typed, "message": good})


def test_a_refusal_says_nothing_of_the_key() -> None:
    intent, typed, expires = _case()
    typed["message"]["to"] = STRANGER
    with pytest.raises(IntentMismatch) as caught:
        SIGNER.sign_payment(_verified(intent, expires), typed)
    text = str(caught.value) + repr(caught.value) + repr(SIGNER)
    assert KEY[2:] not in text.lower() and "5a5a5a5a" not in text.lower()


def test_seeded_random_edits_sign_only_the_attested_payment() -> None:
    rng = random.Random(909)
    for _ in range(60):
        intent, typed, expires = _case(rng.randrange(1, 2**64))
        field = rng.choice(["to", "value", "validBefore", "validAfter", "from", "nonce"])
        original = typed["message"][field]
        typed["message"][field] = rng.choice(
            [original, STRANGER, intent.amount + 1, expires + 1, True, str(original), None]
        )
        try:
            signature = SIGNER.sign_payment(_verified(intent, expires), typed)
        except AgentGuardError:
            continue
        message = typed["message"]
        assert message["to"].lower() == PAYEE and int(message["value"]) == intent.amount
        assert int(message["validBefore"]) <= expires
        assert signature == _the_authorization(typed)
