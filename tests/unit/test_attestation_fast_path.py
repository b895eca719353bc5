"""``Attestation.from_json`` builds the models without pydantic when every field is a well
formed JSON value (``_plain``); pydantic judges everything else. Differential: for a real
attestation document and thousands of hostile variants of it, the fast path and pydantic's
path give the same model (same field values and types, same fields set, same repr and dump)
or the same ``MalformedAttestation`` message."""

from __future__ import annotations

import random
from typing import Any

import pytest
from coincurve import PrivateKey
from pydantic import BaseModel, ValidationError

import agentguard._attestation as attestation_module
from agentguard._attestation import (
    Attestation,
    OperatorSignature,
    attestation_digest,
    operator_address,
    sign_attestation,
)
from agentguard._exceptions import MalformedAttestation

_KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(3)]
_CLIENT = "0x0000000000000000000000000000000000bE7C40"


def _document(rng: random.Random) -> dict[str, Any]:
    """An attestation as the reference gateway sends it (0x-hex ids, checksummed operators)."""
    task_id, policy_id, intent_hash = (rng.randbytes(32) for _ in range(3))
    expires_at = rng.randrange(1 << 40)
    digest = attestation_digest(
        chain_id=8453,
        policy_client=bytes.fromhex(_CLIENT[2:]),
        task_id=task_id,
        policy_id=policy_id,
        intent_hash=intent_hash,
        allow=True,
        expires_at=expires_at,
    )
    return {
        "scheme": "ecdsa",
        "decision": "allow",
        "task_id": "0x" + task_id.hex(),
        "policy_id": "0x" + policy_id.hex(),
        "policy_client": _CLIENT,
        "intent_hash": "0x" + intent_hash.hex(),
        "expires_at": expires_at,
        "tier": 0,
        "signatures": [
            {"operator": operator_address(k), "signature": "0x" + sign_attestation(k, digest).hex()}
            for k in _KEYS[:2]
        ],
        "reasons": [],
    }


def _snapshot(model: BaseModel) -> Any:
    """Everything that could tell two models apart."""
    fields = []
    for name, value in model.__dict__.items():
        if isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
            value = tuple(_snapshot(v) for v in value)
        fields.append((name, type(value), value))
    return (
        type(model),
        fields,
        model.model_fields_set,
        model.__pydantic_extra__,
        model.__pydantic_private__,
        repr(model),
        model.model_dump(),
    )


def _outcome(doc: Any, errors: Any, *, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(attestation_module, "_plain", lambda cls, values: None)
        try:
            return "model", _snapshot(Attestation.from_json(doc, operator_errors=errors))
        except MalformedAttestation as exc:
            return "refused", exc.message


def _same(doc: Any, monkeypatch: pytest.MonkeyPatch, errors: Any = ()) -> str:
    slow = _outcome(doc, errors, fast=False, monkeypatch=monkeypatch)
    assert _outcome(doc, errors, fast=True, monkeypatch=monkeypatch) == slow, doc
    return str(slow[0])


class _Str(str):
    pass


class _Int(int):
    pass


_HOSTILE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    256,
    1 << 64,
    (1 << 64) - 1,
    1 << 300,
    _Int(5),
    1.0,
    "",
    "allow",
    "deny",
    "approval_required",
    "ALLOW",
    _Str("allow"),
    "ecdsa",
    "newton-bls",
    "0x",
    "0x" + "00" * 32,
    "0x" + "00" * 31,
    "0x" + "00" * 32 + "\n",
    "0x" + "ab" * 32,
    "0x" + "AB" * 32,
    "0x" + "0g" * 32,
    "0x" + "00 " * 32,
    _Str("0x" + "11" * 32),
    b"\x11" * 32,
    bytearray(32),
    [0] * 32,
    [255] * 32,
    [256] + [0] * 31,
    [True] + [0] * 31,
    [0] * 31,
    "0x" + "00" * 20,
    "0x" + "ab" * 20,
    "0x" + "AB" * 20,
    "0xd1187B1B1Aa776805c6c536F6FD7DD51a9a7dA00",
    "0xd1187b1b1aa776805c6c536f6fd7dd51a9a7da00",
    "0xD1187B1B1Aa776805c6c536F6FD7DD51a9a7dA00",  # a wrong checksum
    "0x0000000000000000000000000000000000bE7C40\n",
    _Str(_CLIENT),
    "0x" + "11" * 65,
    "0x" + "11" * 64,
    [1] * 65,
    [],
    [""],
    ["a reason"],
    [1],
    [_Str("x")],
    {},
    {"a": 1},
]

_FIELDS = [
    "decision",
    "task_id",
    "policy_id",
    "policy_client",
    "intent_hash",
    "expires_at",
    "tier",
    "scheme",
    "reasons",
    "signatures",
]


def test_a_real_document_builds_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _document(random.Random(1))
    assert _same(doc, monkeypatch) == "model"
    built = Attestation.from_json(doc)
    assert built.signatures[0].operator == doc["signatures"][0]["operator"].lower()
    with pytest.raises(ValidationError):
        setattr(built, "tier", 1)  # noqa: B010 (still frozen)
    copy = built.model_copy(update={"policy_data": "{}"})
    assert copy.policy_data == "{}" and "policy_data" in copy.model_fields_set


@pytest.mark.parametrize("field", _FIELDS)
def test_every_hostile_value_of_every_field_is_judged_as_before(
    field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _document(random.Random(2))
    outcomes = set()
    for value in _HOSTILE_VALUES:
        doc = dict(base)
        doc[field] = value
        outcomes.add(_same(doc, monkeypatch))
        del doc[field]
        _same(doc, monkeypatch)
    assert "refused" in outcomes


@pytest.mark.parametrize("part", ["operator", "signature"])
def test_hostile_signatures_are_judged_as_before(
    part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _document(random.Random(3))
    outcomes = set()
    for value in _HOSTILE_VALUES:
        for index in (0, 1):
            signatures = [dict(s) for s in base["signatures"]]
            signatures[index][part] = value
            outcomes.add(_same({**base, "signatures": signatures}, monkeypatch))
            del signatures[index][part]
            _same({**base, "signatures": signatures}, monkeypatch)
    assert outcomes == {"model", "refused"}


def test_operator_errors_are_judged_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _document(random.Random(4))
    for errors in (
        (),
        [{"operator": "0x01", "error": "timeout"}],
        [{"operator": "0x01", "nested": {"a": [1, 2]}}],
        [{1: "not a text key"}],
        [{_Str("k"): 1}],
        [{b"k": 1}],
    ):
        _same(doc, monkeypatch, errors)


def test_random_mixtures_are_judged_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    outcomes = set()
    for _ in range(400):
        doc = _document(rng)
        for field in rng.sample(_FIELDS, rng.randrange(3)):
            doc[field] = rng.choice(_HOSTILE_VALUES)
        if rng.random() < 0.3:
            doc["decision"] = rng.choice(["deny", "approval_required"])
            doc["reasons"] = rng.sample(["over the cap", "unknown payee", "x"], 2)
        if rng.random() < 0.2:
            doc["signatures"] = [
                {"operator": operator_address(k), "signature": [rng.randrange(256)] * 65}
                for k in _KEYS
            ]
        outcomes.add(_same(doc, monkeypatch))
    assert outcomes == {"model", "refused"}


def test_the_models_hold_what_the_fast_builder_assumes() -> None:
    """``_built`` sets ``__dict__`` and the fields set directly: no alias, extra, private
    attribute or post-init may exist for ``model_construct`` to have handled."""
    for model in (Attestation, OperatorSignature):
        assert model.model_config.get("extra") in (None, "ignore")
        assert not model.__private_attributes__
        assert not model.__pydantic_post_init__
        assert not model.__pydantic_root_model__
        for field in model.model_fields.values():
            assert field.alias is None and field.validation_alias is None
    assert list(Attestation.model_fields) == list(
        Attestation.from_json(_document(random.Random(6))).__dict__
    )
