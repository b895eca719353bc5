"""A hostile gateway (or a man in the middle) answering the client, against s9-client's
``Attestation.from_json`` fast path and ``recover_signer``'s address cache: every answer below
is a valid, eth-account-signed attestation bent one way, served as raw bytes, read by the real
client and checked by the real ``Verifier``. Each must be refused with agentguard's typed
error, and the honest answer (first test) must still pass, so the refusals mean something."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account

from agentguard import (
    AttestationExpired,
    DuplicateSignature,
    GatewayProtocolError,
    InsufficientQuorum,
    IntentMismatch,
    MalformedSignature,
    PolicyDenied,
    UnknownOperator,
)
from agentguard._attestation import _address_of, recover_signer
from agentguard._eip712 import keccak
from agentguard._exceptions import AgentGuardError, MalformedAttestation

from ._s9_client import (
    KEYS,
    OTHER_CLIENT,
    STRANGER,
    N,
    answering,
    attestation_doc,
    intent,
    sign,
    verifier,
)


def _through_the_client(build: Callable[[bytes], dict[str, Any]]) -> Any:
    """What the client makes of ``build(task id asked)`` for the intent it asked about: read,
    then verified."""
    asked = intent()
    received = answering(build).authorize(asked)
    return verifier().verify(received, asked)


def test_the_honest_answer_is_accepted() -> None:
    verified = _through_the_client(lambda task_id: attestation_doc(intent(), task_id=task_id))
    assert set(verified.signers) == {a.address.lower() for a in KEYS[:2]}


def test_an_honest_attestation_of_another_task_is_refused() -> None:
    """The asked intent, honestly signed, but under another task's id (a replay of another
    request's answer, or of one for other x402 details): not the task asked for."""
    with pytest.raises(GatewayProtocolError, match="not the one asked for"):
        _through_the_client(lambda task_id: attestation_doc(intent(), task_id=keccak(task_id)))


def _sig(att: dict[str, Any], i: int) -> bytes:
    return bytes.fromhex(att["signatures"][i]["signature"][2:])


def _set_sig(att: dict[str, Any], i: int, raw: bytes) -> dict[str, Any]:
    att["signatures"][i]["signature"] = "0x" + raw.hex()
    return att


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


def _cases(task_id: bytes = bytes(32)) -> list[Any]:
    """Every attestation signed under ``task_id``, the id the client asked for (an
    attestation under another id is refused before the Verifier sees it)."""
    asked = intent()
    other = intent(amount=999_000_000)
    cases: list[Any] = []
    signed = functools.partial(attestation_doc, task_id=task_id)

    # another intent, honestly labelled: the recomputed hash differs
    cases.append(("other_intent", signed(other), IntentMismatch))
    # another intent's signatures under this intent's hash: they recover to strangers
    forged = signed(other)
    forged["intent_hash"] = "0x" + asked.intent_hash.hex()
    cases.append(("relabelled_intent_hash", forged, UnknownOperator))
    # signed for another vault, honestly labelled, then relabelled as ours
    cases.append(("other_client", signed(asked, policy_client=OTHER_CLIENT), IntentMismatch))
    moved = signed(asked, policy_client=OTHER_CLIENT)
    moved["policy_client"] = "0x000000000000000000000000000000000000c1E7"
    cases.append(("relabelled_client", moved, UnknownOperator))
    # signed for another chain
    cases.append(("other_chain", signed(asked, chain_id=1), UnknownOperator))
    # expired, and relabelled as fresh
    cases.append(("expired", signed(asked, expires_at=int(time.time()) - 1), AttestationExpired))
    stale = signed(asked, expires_at=int(time.time()) - 1)
    stale["expires_at"] = int(time.time()) + 60
    cases.append(("relabelled_expiry", stale, UnknownOperator))
    cases.append(
        (
            "far_future",
            signed(asked, expires_at=int(time.time()) + 10**6),
            AttestationExpired,
        )
    )
    # too few, duplicated, strangers
    cases.append(("one_signer", signed(asked, signers=KEYS[:1]), InsufficientQuorum))
    cases.append(("no_signer", signed(asked, signers=[]), InsufficientQuorum))
    cases.append(("same_twice", signed(asked, signers=[KEYS[0], KEYS[0]]), DuplicateSignature))
    cases.append(("stranger", signed(asked, signers=[KEYS[0], STRANGER]), UnknownOperator))
    # the stranger's signature under an operator's name: the name is never trusted
    named = signed(asked, signers=[KEYS[0], STRANGER])
    named["signatures"][1]["operator"] = KEYS[1].address
    cases.append(("stranger_named_operator", named, UnknownOperator))
    # deny relabelled as allow; tier relabelled
    flipped = signed(asked, decision="deny")
    flipped["decision"] = "allow"
    cases.append(("deny_relabelled_allow", flipped, UnknownOperator))
    cases.append(("deny", signed(asked, decision="deny"), PolicyDenied))
    tiered = signed(asked)
    tiered["tier"] = 1
    cases.append(("relabelled_tier", tiered, UnknownOperator))
    # another task's genuine signatures relabelled with the id asked for
    replayed = attestation_doc(asked, task_id=keccak(task_id))
    replayed["task_id"] = "0x" + task_id.hex()
    cases.append(("relabelled_task_id", replayed, UnknownOperator))
    # v and s: every spelling the operators never produce (the vault refuses them all)
    bends: list[tuple[str, Callable[[bytes], bytes]]] = [
        ("v_0_or_1", lambda s: s[:64] + bytes([s[64] - 27])),
        ("v_29", lambda s: s[:64] + b"\x1d"),
        ("v_255", lambda s: s[:64] + b"\xff"),
        ("v_26", lambda s: s[:64] + b"\x1a"),
        ("high_s", _high_s),
        ("r_zero", lambda s: b"\x00" * 32 + s[32:]),
        ("s_zero", lambda s: s[:32] + b"\x00" * 32 + s[64:]),
        ("r_is_n", lambda s: N.to_bytes(32, "big") + s[32:]),
        ("all_zero", lambda s: b"\x00" * 65),
    ]
    for name, bend in bends:
        att = signed(asked)
        cases.append((name, _set_sig(att, 1, bend(_sig(att, 1))), MalformedSignature))
    return cases


_NAMES = [c[0] for c in _cases()]


@pytest.mark.parametrize("name", _NAMES)
def test_a_bent_attestation_is_refused_typed(name: str) -> None:
    """Built when the test runs (an expiry fixed at collection would lapse on a slow run)."""
    [error] = [e for n, _, e in _cases() if n == name]
    with pytest.raises(error):
        _through_the_client(lambda task_id: next(a for n, a, _ in _cases(task_id) if n == name))


def test_v_0_or_1_is_refused_by_recover_signer_itself() -> None:
    """ecrecover, and so the vault (OZ ECDSA: MalformedSignature), reads v only as 27/28;
    the client must not accept a spelling the contract refuses (it would sign a vault call
    bound to revert, or an EOA action on a signature no chain would take)."""
    digest = keccak(b"digest")
    good = sign(KEYS[0], digest)
    assert recover_signer(digest, good) == bytes.fromhex(KEYS[0].address[2:])
    for v in (0, 1, 2, 26, 29, 35, 36, 255):
        with pytest.raises(MalformedSignature, match="27/28"):
            recover_signer(digest, good[:64] + bytes([v]))


# -- the address cache -------------------------------------------------------------------------


def test_the_cache_is_keyed_on_the_whole_public_key() -> None:
    """Two keys that agree on every byte but one (and two that agree on their last 20 bytes)
    get their own keccak: nothing shorter than the key decides the address."""
    _address_of.cache_clear()
    digest = keccak(b"m")
    real = recover_signer(digest, sign(KEYS[0], digest))
    from coincurve import PublicKey as Pub  # the operator's public key, bent in one byte

    pub = Pub.from_signature_and_message(
        sign(KEYS[0], digest)[:64] + bytes([sign(KEYS[0], digest)[64] - 27]), digest, hasher=None
    ).format(compressed=False)[1:]
    for i in (0, 31, 32, 63):
        bent = pub[:i] + bytes([pub[i] ^ 1]) + pub[i + 1 :]
        assert _address_of(bent) == keccak(bent)[12:] != real
    assert _address_of(pub) == real == keccak(pub)[12:]
    with pytest.raises(TypeError):  # a mutable key cannot be cached under (and later change)
        _address_of(bytearray(pub))  # type: ignore[arg-type]


def test_a_flood_of_strangers_evicts_but_never_lends_an_address() -> None:
    """More strangers' signatures than the cache holds, interleaved with the operators': each
    recovery still names its own signer, and a stranger is still refused afterwards."""
    _address_of.cache_clear()
    digest = keccak(b"flood")
    strangers = [Account.from_key((i + 1000).to_bytes(32, "big")) for i in range(300)]
    for i, account in enumerate(strangers):
        assert recover_signer(digest, sign(account, digest)).hex() == account.address[2:].lower()
        if i % 50 == 0:
            op = KEYS[i % 3]
            assert recover_signer(digest, sign(op, digest)).hex() == op.address[2:].lower()
    assert _address_of.cache_info().currsize <= 256
    with pytest.raises(UnknownOperator):
        _through_the_client(
            lambda task_id: attestation_doc(
                intent(), signers=[KEYS[0], strangers[0]], task_id=task_id
            )
        )
    assert _through_the_client(lambda task_id: attestation_doc(intent(), task_id=task_id)).signers


def test_threads_recovering_at_once_each_get_their_own_signer() -> None:
    """Operators and strangers recovered from 8 threads at once through the shared cache."""
    digest = keccak(b"threads")
    accounts = KEYS + [Account.from_key((i + 5000).to_bytes(32, "big")) for i in range(40)]
    signed = [(a.address[2:].lower(), sign(a, digest)) for a in accounts]
    wrong: list[Any] = []

    def run(seed: int) -> None:
        for n in range(400):
            address, sig = signed[(seed * 7 + n * 13) % len(signed)]
            got = recover_signer(digest, sig).hex()
            if got != address:
                wrong.append((address, got))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# -- "0x<40 hex>\n": the $ quirk ----------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["policy_client", "task_id", "policy_id", "intent_hash", "operator", "signature"]
)
def test_a_trailing_newline_is_not_part_of_a_strict_hex_field(field: str) -> None:
    """``$`` also matches before a final newline, so ``"0x<40 hex>\\n"`` passed as an address
    and ``"0x<64 hex>\\n"`` as 32 bytes. The signatures do not cover the spelling (the digest
    reads the bytes; fromhex skips the newline), so a man in the middle could re-spell a
    genuine attestation's policy client: the Verifier then refused it only by luck of a string
    comparison, and everything that keys on the text (the challenge watcher's history, the
    audit log) saw a second policy client. A strict reader refuses the spelling outright."""

    def bent(task_id: bytes) -> dict[str, Any]:
        att = attestation_doc(intent(), task_id=task_id)
        # lower case: a mixed-case address with a newline already failed its EIP-55 check
        if field in ("operator", "signature"):
            att["signatures"][0][field] = att["signatures"][0][field].lower() + "\n"
        else:
            att[field] = att[field].lower() + "\n"
        return att

    from agentguard import Attestation

    with pytest.raises(MalformedAttestation):
        Attestation.from_json(json.loads(json.dumps(bent(keccak(b"task")))))
    with pytest.raises(AgentGuardError):
        _through_the_client(bent)


def test_a_trailing_newline_in_a_verifier_setting_is_a_configuration_error() -> None:
    from agentguard import ConfigurationError, Verifier

    ops = [a.address for a in KEYS]
    with pytest.raises(ConfigurationError):
        Verifier(ops, policy_client="0x000000000000000000000000000000000000c1e7\n")
    with pytest.raises(ConfigurationError):
        Verifier([*ops, KEYS[0].address + "\n"], policy_client=KEYS[0].address)
    with pytest.raises(ConfigurationError):
        Verifier(ops, policy_client=KEYS[0].address, policy_id="0x" + "02" * 32 + "\n")


# -- the from_json fast path against pydantic's ------------------------------------------------


def _bent_fields() -> list[tuple[str, Any]]:
    good = attestation_doc(intent())
    sig = good["signatures"][0]["signature"]
    return [
        ("expires_at", True),
        ("expires_at", 1.7e9),
        ("expires_at", "1700000000"),
        ("expires_at", -1),
        ("expires_at", 1 << 64),
        ("tier", True),
        ("tier", 1.0),
        ("tier", 256),
        ("tier", -0.0),
        ("decision", "Allow"),
        ("decision", ["allow"]),
        ("scheme", "ECDSA"),
        ("task_id", [True] + [1] * 31),
        ("task_id", [256] + [1] * 31),
        ("task_id", [1] * 31),
        ("task_id", "0X" + "11" * 32),
        ("task_id", "0x" + "11" * 31 + "1"),
        ("task_id", "0x" + "11" * 16 + " " + "11" * 16),
        ("policy_id", {"0": 1}),
        ("policy_client", ["0x" + "00" * 20]),
        ("policy_client", "0x" + "00" * 19),
        ("policy_client", "0x000000000000000000000000000000000000C1e7"),  # bad EIP-55
        ("reasons", [1]),
        ("reasons", [["nested"]]),
        ("signatures.operator", None),
        ("signatures.operator", 0),
        ("signatures.signature", sig[:-2]),
        ("signatures.signature", sig + "00"),
        ("signatures.signature", [*bytes.fromhex(sig[2:]), 0]),
        ("signatures.signature", [float(b) for b in bytes.fromhex(sig[2:])]),
        ("signatures.signature", None),
    ]


@pytest.mark.parametrize(("field", "value"), _bent_fields(), ids=range(len(_bent_fields())))
def test_the_fast_path_refuses_what_pydantic_refuses(
    field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bent field, read from JSON text as the client reads it: refused as
    MalformedAttestation with the same message by the fast path and by pydantic alone."""
    from agentguard import Attestation
    from agentguard import _attestation as module
    from agentguard._json import strict_loads

    att = attestation_doc(intent())
    if field.startswith("signatures."):
        att["signatures"][0][field.split(".")[1]] = value
    else:
        att[field] = value
    doc = strict_loads(json.dumps(att).encode())
    outcomes = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(module, "_plain", lambda cls, values: None)
        with pytest.raises(MalformedAttestation) as info:
            Attestation.from_json(doc)
        outcomes.append(str(info.value))
    assert outcomes[0] == outcomes[1]


def _sign_with_nonce(secret: bytes, digest: bytes, k: int) -> bytes:
    """A genuine low-s signature of ``digest`` by ``secret`` with the nonce ``k`` (not the
    RFC 6979 one every library picks): the same operator, other signature bytes."""
    from coincurve import PrivateKey

    point = PrivateKey(k.to_bytes(32, "big")).public_key.format(compressed=False)
    rx, ry = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    r = rx % N
    s = pow(k, -1, N) * (int.from_bytes(digest, "big") + r * int.from_bytes(secret, "big")) % N
    v = ry & 1
    if s > N // 2:
        s, v = N - s, v ^ 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + v])


def test_one_operator_signing_twice_with_other_nonces_is_one_signer() -> None:
    """Two different, valid signatures by the same operator (fresh nonces): counted once
    (signers are the recovered addresses, not the signature bytes), so no quorum of one."""
    from agentguard._attestation import Attestation

    asked = intent()

    def twins(task_id: bytes) -> dict[str, Any]:
        att = attestation_doc(asked, signers=[KEYS[0], KEYS[0]], task_id=task_id)
        digest = Attestation.from_json(att).digest_for(asked.intent_hash, asked.chain_id)
        sigs = [_sign_with_nonce(bytes(KEYS[0].key), digest, k) for k in (12345, 67890)]
        assert sigs[0] != sigs[1]
        for i, sig in enumerate(sigs):
            assert recover_signer(digest, sig) == bytes.fromhex(KEYS[0].address[2:])
            _set_sig(att, i, sig)
        return att

    with pytest.raises(DuplicateSignature):
        _through_the_client(twins)


def test_expiry_boundaries_with_a_fixed_clock() -> None:
    """Expiring exactly now is expired; exactly max_lifetime ahead is still accepted."""
    from agentguard import Attestation

    now = 1_900_000_000
    asked = intent()
    for expires_at, ok in [(now, False), (now + 1, True), (now + 3600, True), (now + 3601, False)]:
        received = Attestation.from_json(attestation_doc(asked, expires_at=expires_at))
        check = verifier(clock=lambda: now)
        if ok:
            assert check.verify(received, asked).expires_at == expires_at
        else:
            with pytest.raises(AttestationExpired):
                check.verify(received, asked)
