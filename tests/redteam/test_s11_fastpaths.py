"""Red team for session 11's two fast paths.

1. ``recover_signer`` calls libsecp256k1 through coincurve's cffi ``lib`` (parse, recover,
   serialize): held to the code it replaced (``a51bac5``, kept below as ``_previous``), to
   coincurve's objects, and to two independent peers (eth-keys, eth-account), on hostile
   signatures, digests and argument types, from many threads at once, and end to end through
   the gateway's vote count and the client's Verifier.
2. ``TransactionIntent.from_wire`` builds the model itself (``_constructed``) instead of
   through ``model_construct``: held to ``model_construct`` on every seeded wire case and on
   everything that reads a model (dump, equality, hash, copies, pickle, ``model_copy``), and
   its import-time guard must fire on every model change ``_constructed`` would get wrong.
"""

from __future__ import annotations

import copy
import pickle
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from coincurve import PrivateKey, PublicKey
from coincurve.context import GLOBAL_CONTEXT
from eth_account import Account
from eth_keys import keys as eth_keys

import agentguard._intent as intent_module
from agentguard import Attestation, TransactionIntent
from agentguard._attestation import (
    _SECP256K1_N,
    _address_of,
    attestation_digest,
    recover_signer,
    sign_attestation,
)
from agentguard._exceptions import (
    MalformedSignature,
    UnknownOperator,
    VerificationError,
)
from agentguard._tickets import fresh_intent
from agentguard.network.gateway._fanout import vote
from agentguard.network.gateway._operators import OperatorFailure

from ._s9_client import KEYS, POLICY_ID, attestation_doc, intent, sign, verifier

N = _SECP256K1_N
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
ROOT = Path(__file__).resolve().parents[2]


def _previous(digest: Any, signature: Any) -> bytes:
    """``recover_signer`` as it was before the fast path (a51bac5), verbatim but for names."""
    if len(signature) != 65:
        raise MalformedSignature(f"signature is {len(signature)} bytes, expected 65")
    v = signature[64] - 27
    if v not in (0, 1):
        raise MalformedSignature(f"signature recovery id {signature[64]} is not 27/28")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < N and 0 < s <= N // 2):
        raise MalformedSignature("signature has r/s out of range (or a malleable high s)")
    try:
        public = PublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), digest, hasher=None
        )
    except Exception:
        raise MalformedSignature("signature does not recover to a public key") from None
    return _address_of(public.format(compressed=False)[1:])


def _eth_keys(digest: bytes, signature: bytes) -> bytes:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    sig = eth_keys.Signature(vrs=(signature[64] - 27, r, s))
    return bytes(sig.recover_public_key_from_msg_hash(digest).to_canonical_address())


def _eth_account(digest: bytes, signature: bytes) -> bytes:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    return bytes.fromhex(Account._recover_hash(digest, vrs=(signature[64], r, s))[2:])


def _outcome(recover: Any, digest: Any, signature: Any) -> Any:
    """The address, or the kind of refusal: a typed one, or anything else escaping."""
    try:
        return recover(digest, signature)
    except MalformedSignature:
        return "refused"
    except Exception as exc:  # an untyped escape: never equal to a typed refusal
        return f"escaped {type(exc).__name__}"


def _compact(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


_KEY = PrivateKey(b"\x07" * 32)
_DIGEST = bytes(range(32))
_SIG = sign_attestation(_KEY, _DIGEST)
_R, _S, _V = int.from_bytes(_SIG[:32], "big"), int.from_bytes(_SIG[32:64], "big"), _SIG[64]
_SIGNER = recover_signer(_DIGEST, _SIG)


# -- (1) recover_signer: hostile signatures ------------------------------------------------------


def _hostile_signatures() -> dict[str, bytes]:
    no_point = next(x for x in range(2, 1000) if pow((x**3 + 7) % P, (P - 1) // 2, P) != 1)
    cases = {
        "honest": _SIG,
        "high s (n - s, v flipped)": _compact(_R, N - _S, 55 - _V),
        "high s (n - s, v kept)": _compact(_R, N - _S, _V),
        "s = n/2 + 1": _compact(_R, N // 2 + 1, _V),
        "r = 0": _compact(0, _S, _V),
        "s = 0": _compact(_R, 0, _V),
        "r = n": _compact(N, _S, _V),
        "s = n": _compact(_R, N, _V),
        "r = n + 1 (x = 1 + n)": _compact(N + 1, _S, _V),
        "r = p - 1": _compact(P - 1, _S, _V),
        "r = 2^256 - 1": _compact((1 << 256) - 1, _S, _V),
        "r has no curve point": _compact(no_point, _S, _V),
        "64 bytes": _SIG[:64],
        "66 bytes": _SIG + b"\x00",
        "empty": b"",
    }
    for v in (0, 1, 2, 3, 26, 29, 30, 35, 36, 37, 38, 0x7F, 0x80, 255):
        cases[f"v = {v}"] = _compact(_R, _S, v)
    return cases


@pytest.mark.parametrize("name", list(_hostile_signatures()))
def test_hostile_signature_answers_as_before_and_as_the_peers(name: str) -> None:
    signature = _hostile_signatures()[name]
    ours = _outcome(recover_signer, _DIGEST, signature)
    assert ours == _outcome(_previous, _DIGEST, signature)
    if name == "honest":
        assert ours == _SIGNER == _eth_keys(_DIGEST, signature)
        assert ours == _eth_account(_DIGEST, signature)
    else:  # malleable, out of range, not 27/28, wrong length, no point: all refused, typed
        assert ours == "refused"


def test_the_point_at_infinity_is_refused_by_every_implementation() -> None:
    """s·R = e·G makes Q = r⁻¹(sR - eG) the point at infinity: no key, no address."""
    rng = random.Random(1101)
    found = 0
    while found < 8:
        k = rng.randrange(1, N)
        point = PrivateKey(k.to_bytes(32, "big")).public_key.format(compressed=False)
        x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
        s = rng.randrange(1, N // 2)
        digest, signature = ((s * k) % N).to_bytes(32, "big"), _compact(x, s, 27 + (y & 1))
        assert _outcome(recover_signer, digest, signature) == "refused"
        assert _outcome(_previous, digest, signature) == "refused"
        for peer in (_eth_keys, _eth_account):
            with pytest.raises(Exception):
                peer(digest, signature)
        found += 1


def test_random_signatures_and_digests_agree_with_the_peers() -> None:
    """Seeded: real signatures over random and edge digests (0, n, n + 1, 2^256 - 1) recover to
    the same address as eth-keys and eth-account; random 65-byte strings recover to what the
    previous code and eth-keys say (for low s), or are refused by both."""
    rng = random.Random(1102)
    edges = [bytes(32), N.to_bytes(32, "big"), (N + 1).to_bytes(32, "big"), b"\xff" * 32]
    recovered = refused = 0
    for i in range(600):
        digest = edges[i % 4] if i % 5 == 0 else rng.randbytes(32)
        if i % 2:
            signature = sign_attestation(PrivateKey(rng.randbytes(32)), digest)
        else:
            signature = rng.randbytes(64) + bytes([rng.choice((27, 28))])
        ours = _outcome(recover_signer, digest, signature)
        assert ours == _outcome(_previous, digest, signature), signature.hex()
        if ours == "refused":
            refused += 1
            low_s = 0 < int.from_bytes(signature[32:64], "big") <= N // 2
            assert not (low_s and isinstance(_outcome(_eth_keys, digest, signature), bytes))
            continue
        recovered += 1
        assert ours == _eth_keys(digest, signature) == _eth_account(digest, signature)
    assert recovered > 300 and refused > 100


# -- (1) recover_signer: argument types ----------------------------------------------------------


class _BytesLike(bytes):
    """Bytes whose own slicing lies: the range checks see a low s, the bytes are a high s."""

    def __getitem__(self, key: Any) -> Any:
        if key == slice(32, 64):
            return _S.to_bytes(32, "big")
        return bytes.__getitem__(self, key)


class _Sequence:
    """A 65-long sequence whose slices disagree: low s where checked, high s where used."""

    def __len__(self) -> int:
        return 65

    def __getitem__(self, key: Any) -> Any:
        high = _compact(_R, N - _S, 55 - _V)
        if key == slice(32, 64):
            return _S.to_bytes(32, "big")
        return high[key]


def test_a_signature_that_is_not_bytes_is_refused_as_before() -> None:
    """The previous code refused every signature but ``bytes`` (coincurve's parser takes no
    other type); the fast path took bytearray, memoryview, lists and tuples of the same bytes.
    A str, None or an int escaped as a TypeError on both (now a typed refusal)."""
    for signature in (
        bytearray(_SIG),
        memoryview(_SIG),
        list(_SIG),
        tuple(_SIG),
        memoryview(bytes(130)).cast("H"),
        _SIG.hex()[:65],
        "0x" + _SIG.hex(),
        None,
        65,
        [256] * 65,
    ):
        assert _outcome(recover_signer, _DIGEST, signature) == "refused", type(signature)


def test_a_signature_whose_slices_disagree_cannot_pass_a_high_s() -> None:
    """A high-s signature dressed so that the range check reads another s: refused (the fast
    path, and the code before it, recovered it: a malleated twin of an honest signature)."""
    assert _outcome(_previous, _DIGEST, _compact(_R, N - _S, 55 - _V)) == "refused"
    assert _outcome(recover_signer, _DIGEST, _Sequence()) == "refused"
    assert _outcome(recover_signer, _DIGEST, _BytesLike(_compact(_R, N - _S, 55 - _V))) == (
        "refused"
    )
    # a bytes subclass that does not lie is still bytes, read as before
    assert recover_signer(_DIGEST, type("Sub", (bytes,), {})(_SIG)) == _SIGNER


def test_a_digest_that_is_not_32_bytes_is_refused_as_before() -> None:
    sub = type("Sub", (bytes,), {})
    for digest in (
        bytearray(_DIGEST),
        memoryview(_DIGEST),
        _DIGEST.hex()[:32],
        int.from_bytes(_DIGEST, "big"),
        _DIGEST[:31],
        _DIGEST + b"\x00",
        b"",
        None,
        sub(_DIGEST),
    ):
        ours = _outcome(recover_signer, digest, _SIG)
        assert ours == _outcome(_previous, digest, _SIG), type(digest)
        assert ours == (_SIGNER if isinstance(digest, sub) else "refused")


def test_recovery_from_many_threads_while_the_context_is_reseeded() -> None:
    """The fast path shares coincurve's global context across threads (cffi drops the GIL in
    the C calls); a reseed (the only thing that writes that context) and signing run alongside.
    Every answer must be the one computed alone."""
    rng = random.Random(1103)
    cases = []
    for i in range(120):
        digest = rng.randbytes(32)
        if i % 3:
            signature = sign_attestation(PrivateKey(rng.randbytes(32)), digest)
        else:
            signature = rng.randbytes(64) + bytes([27 + i % 2])
        cases.append((digest, signature, _outcome(recover_signer, digest, signature)))
    wrong: list[Any] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        picks = random.Random(seed)
        for _ in range(1500):
            digest, signature, expected = picks.choice(cases)
            got = _outcome(recover_signer, digest, signature)
            if got != expected:
                wrong.append((digest.hex(), signature.hex(), got, expected))

    def writer() -> None:
        while not stop.is_set():
            GLOBAL_CONTEXT.reseed()
            sign_attestation(PrivateKey(), bytes(32))

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    churn = threading.Thread(target=writer)
    churn.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    churn.join()
    assert wrong == []


# -- (1) end to end: the gateway's vote count and the client's Verifier --------------------------


def _digests() -> dict[tuple[bool, int], bytes]:
    asked = intent()
    common = {
        "chain_id": asked.chain_id,
        "policy_client": b"\xc1" * 20,
        "task_id": b"\x05" * 32,
        "policy_id": POLICY_ID,
        "intent_hash": asked.intent_hash,
        "expires_at": 2_000_000_000,
    }
    return {
        (allow, 0): attestation_digest(allow=allow, tier=0, **common) for allow in (True, False)
    }


def _vote(link_key: Any, signature: bytes, decision: str = "allow") -> Any:
    asked = intent()
    link = SimpleNamespace(address_bytes=bytes.fromhex(link_key.address[2:]), address="x")
    reply = {
        "decision": decision,
        "intent_hash": "0x" + asked.intent_hash.hex(),
        "policy_id": "0x" + POLICY_ID.hex(),
        "tier": 0,
        "reasons": [],
        "signature": "0x" + signature.hex(),
    }
    return vote(
        link,  # type: ignore[arg-type]
        reply,
        intent_hash_hex="0x" + asked.intent_hash.hex(),
        policy_id_hex="0x" + POLICY_ID.hex(),
        digests=_digests(),
    )


def test_the_gateway_counts_a_vote_only_for_the_key_that_signed_it() -> None:
    allow = _digests()[True, 0]
    honest = sign(KEYS[0], allow)
    assert _vote(KEYS[0], honest)[0] == ("allow", 0)
    r, s, v = int.from_bytes(honest[:32]), int.from_bytes(honest[32:64]), honest[64]
    forged = {
        "another operator's signature": sign(KEYS[1], allow),
        "its signature over deny, reported as allow": sign(KEYS[0], _digests()[False, 0]),
        "the malleated twin (n - s, v flipped)": _compact(r, N - s, 55 - v),
        "the other recovery id": _compact(r, s, 55 - v),
        "v as 0/1": _compact(r, s, v - 27),
        "v as EIP-155 (chain 1)": _compact(r, s, v - 27 + 37),
        "r = 0": _compact(0, s, v),
    }
    for name, signature in forged.items():
        with pytest.raises(OperatorFailure) as refused:
            _vote(KEYS[0], signature)
        assert refused.value.code == "bad_signature", name


def test_the_verifier_counts_no_signature_over_another_digest_or_in_another_form() -> None:
    asked = intent()
    doc = attestation_doc(asked)
    assert len(verifier().verify(Attestation.from_json(doc), asked).signers) == 2

    other = attestation_doc(intent(amount=2_000_000))  # signed over another intent's digest
    spliced = {**doc, "signatures": other["signatures"]}
    with pytest.raises(UnknownOperator):
        verifier().verify(Attestation.from_json(spliced), asked)

    first = bytes.fromhex(doc["signatures"][0]["signature"][2:])
    r, s, v = int.from_bytes(first[:32]), int.from_bytes(first[32:64]), first[64]
    twin = "0x" + _compact(r, N - s, 55 - v).hex()
    doubled = {
        **doc,
        "signatures": [doc["signatures"][0], {**doc["signatures"][0], "signature": twin}],
    }
    with pytest.raises(MalformedSignature):
        verifier().verify(Attestation.from_json(doubled), asked)


def test_the_verifier_refuses_a_hand_built_attestation_whose_signature_lies() -> None:
    """An attestation built in process (``model_construct``: no validation) whose first
    signature is replaced by its malleated (high-s) twin, dressed so the range check reads
    the honest s: the Verifier counted the twin as a valid signature (before the fast path
    too: both read the caller's own slicing). It must be refused as malformed, as a plain
    high-s signature is."""
    asked = intent()
    att = Attestation.from_json(attestation_doc(asked))
    sig = att.signatures[0]
    r, s, v = (
        int.from_bytes(sig.signature[:32]),
        int.from_bytes(sig.signature[32:64]),
        sig.signature[64],
    )

    class Lying(bytes):
        def __getitem__(self, key: Any) -> Any:
            return s.to_bytes(32, "big") if key == slice(32, 64) else bytes.__getitem__(self, key)

    twin = sig.model_construct(operator=sig.operator, signature=Lying(_compact(r, N - s, 55 - v)))
    forged = att.model_construct(**{**dict(att), "signatures": (twin, att.signatures[1])})
    with pytest.raises(VerificationError) as refused:
        verifier().verify(forged, asked)
    assert isinstance(refused.value, MalformedSignature)


# -- (2) TransactionIntent.from_wire: _constructed against model_construct ---------------------


def _wire_cases() -> list[Any]:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    try:
        import test_intent_fast  # the seeded generator of the unit differential
    finally:
        sys.path.remove(str(ROOT / "tests" / "unit"))
    return list(test_intent_fast.cases())[:1500]


def _read(wire: Any, *, old: bool) -> Any:
    real = intent_module._constructed
    if old:
        intent_module._constructed = lambda cls, values, fields_set=None: cls.model_construct(  # type: ignore[assignment]
            fields_set, **values
        )
    try:
        return TransactionIntent.from_wire(wire)
    except Exception as exc:
        return (type(exc).__name__, str(exc))
    finally:
        intent_module._constructed = real


def _observed(model: Any) -> list[Any]:
    """Everything a reader of the object can see, each a value or the error it raises."""

    def read(view: Any) -> Any:
        try:
            return view()
        except Exception as exc:
            return ("raised", type(exc).__name__)

    views = [
        lambda: list(vars(model).items()),
        lambda: model.__pydantic_fields_set__,
        lambda: model.__pydantic_extra__,
        lambda: model.__pydantic_private__,
        lambda: model.model_dump(),
        lambda: model.model_dump(by_alias=True),
        lambda: model.model_dump_json(),
        lambda: repr(model),
        lambda: list(model),
        lambda: hash(model),
        lambda: model.intent_hash,
        lambda: model.__getstate__(),
        lambda: list(vars(copy.copy(model)).items()),
        lambda: list(vars(copy.deepcopy(model)).items()),
        lambda: list(vars(pickle.loads(pickle.dumps(model))).items()),
        lambda: vars(model.model_copy(update={"value": 7})),
        lambda: model.model_copy(update={"value": 7}).intent_hash,
        lambda: model.model_copy().intent_hash,
        lambda: fresh_intent(model).intent_hash,
        lambda: model.parsed(),
        lambda: model.wire(),
    ]
    return [read(view) for view in views]


def test_from_wire_answers_and_objects_equal_model_constructs() -> None:
    accepted = 0
    for wire in _wire_cases():
        fast, old = _read(wire, old=False), _read(wire, old=True)
        if isinstance(old, tuple):
            assert fast == old, wire
            continue
        accepted += 1
        assert type(fast) is type(old) is TransactionIntent
        assert _observed(fast) == _observed(old), wire
        assert fast == old and old == fast and hash(fast) == hash(old)
    assert 300 < accepted < 1500


def test_a_subclass_is_built_by_model_construct_and_hashes_alike() -> None:
    class Mine(TransactionIntent):
        pass

    wire = intent().wire()
    built = Mine.from_wire(wire)
    assert type(built) is Mine
    assert built.intent_hash == TransactionIntent.from_wire(wire).intent_hash
    with pytest.raises(VerificationError):
        fresh_intent(built)  # a subclass is not an intent a Verifier takes


def test_editing_a_read_intent_behind_the_frozen_model_changes_no_checked_hash() -> None:
    """``from_wire``'s ``__dict__`` is the dict it built: editing it (or a field) afterwards
    leaves the cached hash stale on that object, but everything that checks a hash rebuilds
    the intent from its fields (``fresh_intent``, ``model_copy``)."""
    read = TransactionIntent.from_wire(intent().wire())
    stale = read.intent_hash
    object.__setattr__(read, "chain_id", 1)
    assert read.intent_hash == stale  # the cache, as on any model
    other = TransactionIntent.from_wire({**intent().wire(), "chain_id": "0x1"})
    assert fresh_intent(read).intent_hash == other.intent_hash != stale
    assert read.model_copy().intent_hash == other.intent_hash
    with pytest.raises(Exception):
        read.chain_id = 6  # type: ignore[misc]


_DOC = '    """Newton\'s six-field intent; frozen, validated, hashed once."""\n'
_MODEL_CHANGES = {  # name: (a line of TransactionIntent, what replaces it)
    "a private attribute": (_DOC, _DOC + "    _note: int = PrivateAttr(0)\n"),
    "a post-init hook": (
        _DOC,
        _DOC + "    def model_post_init(self, context: Any) -> None:\n        pass\n",
    ),
    "a new field": (_DOC, _DOC + "    nonce: int = 0\n"),
    "extra allowed": (
        _DOC,
        _DOC + "    model_config = ConfigDict(extra='allow', frozen=True, populate_by_name=True,"
        " ignored_types=(cached_property,))\n",
    ),
    "an alias naming another field": (
        "    value: int = 0\n",
        "    value: int = Field(0, validation_alias='data')\n",
    ),
    "from_'s alias renamed to another field": (
        '    from_: str = Field(alias="from")\n',
        "    from_: str = Field(alias='to')\n",
    ),
}


@pytest.mark.parametrize("change", list(_MODEL_CHANGES))
def test_the_import_time_guard_fires_on_a_model_change(change: str) -> None:
    """``_intent``'s source with TransactionIntent changed, imported in a fresh interpreter:
    every change ``_constructed`` would build differently from ``model_construct`` must stop
    the import (an alias that names another field makes ``model_construct`` take that field's
    value: ``_constructed`` would not)."""
    source = (ROOT / "agentguard" / "_intent.py").read_text()
    line, replacement = _MODEL_CHANGES[change]
    assert source.count(line) == 1
    changed = source.replace(line, replacement)
    changed = changed.replace(
        "from pydantic import (", "from pydantic import PrivateAttr\nfrom pydantic import (", 1
    )
    program = textwrap.dedent(
        """
        import sys, types
        source = sys.stdin.read()
        module = types.ModuleType("agentguard._intent_changed")
        sys.modules[module.__name__] = module
        try:
            exec(compile(source, "changed_intent.py", "exec"), module.__dict__)
        except RuntimeError as exc:
            print("guard:", exc)
        else:
            print("imported")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        input=changed,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.stdout.startswith("guard: TransactionIntent changed"), done.stdout + done.stderr


def test_the_guard_lets_the_model_as_it_is_through() -> None:
    source = (ROOT / "agentguard" / "_intent.py").read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, types; m = types.ModuleType('x'); "
            "sys.modules['x'] = m; exec(sys.stdin.read(), m.__dict__); print('imported')",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip() == "imported", done.stderr
