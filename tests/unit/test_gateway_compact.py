"""The gateway's compact ``newt_createTask`` answer (``compact_result``) against the whole one:
an agentguard client reads both alike. On seeded random answers of every kind (allow, deny,
approval_required, a failed quorum with or without a tier) the client's parser gives equal
attestations, or the same error, for both forms; and so it does after the same hostile change
to a field both forms hold (wrong types, missing keys, contradicting values), so what the
compact form leaves out never decided anything. Also: the client asks for it only where it was
offered, and never sends the param otherwise."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from agentguard import _gateway
from agentguard._exceptions import ConfigurationError, GatewayProtocolError
from agentguard._json import canonical_json, strict_loads
from agentguard.network._rpc import encode
from agentguard.network.gateway._results import COMPACT_PARAM, compact_result, task_result

from ..challenge.test_record_attacks import _paths
from .test_gateway_answer import TEXT, _client, _outcome, _task, _wasm

HOSTILE: list[Any] = [None, True, 0, -1, 2**64, "", "0x", "0x" + "zz" * 32, [], {}, [1] * 32,
                      "0x" + "11" * 32, 1.5, "allow", "deny", *TEXT]  # fmt: skip


def _answers(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    clients = [_client(rng) for _ in range(3)]
    out = []
    for _ in range(n):
        task = _task(rng, rng.choice(clients))
        wasm = _wasm(rng, task)
        task_id = "0x" + rng.randbytes(32).hex()
        now, expires_at = rng.randrange(2**33), rng.randrange(2**33)
        outcome = _outcome(rng)
        result = task_result(
            task, task_id, "r", now, expires_at, wasm, canonical_json(wasm), outcome
        )
        out.append(strict_loads(encode(result)))  # as a client receives it
    return out


def _read(result: Any) -> Any:
    """What the client makes of an answer: an attestation, or the error (type and text)."""
    try:
        return _gateway._parse_task(strict_loads(json.dumps(result)), "0x" + "00" * 20)
    except Exception as exc:
        return (type(exc), str(exc))


def _change(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize("seed", range(4))
def test_the_client_reads_the_compact_answer_as_the_whole_one(seed: int) -> None:
    kinds = set()
    for answer in _answers(seed, 150):
        compact = compact_result(answer)
        assert len(encode(compact)) < len(encode(answer))
        assert _read(compact) == _read(answer)
        kinds.add((answer["status"], (answer["attestation"] or {}).get("decision")))
    assert len(kinds) == 4  # allow, deny, approval_required, failed


@pytest.mark.parametrize("seed", range(3))
def test_the_same_hostile_change_to_a_field_both_hold_reads_the_same(seed: int) -> None:
    rng = random.Random(1000 + seed)
    errors = 0
    for answer in _answers(seed, 60):
        compact = compact_result(answer)
        for _ in range(12):
            path = rng.choice(_paths(compact))
            delete = rng.random() < 0.25 and not isinstance(path[-1], int)
            value = rng.choice(HOSTILE)
            before = _read(_change(answer, path, value, delete))
            after = _read(_change(compact, path, value, delete))
            gone = delete or value is None
            if answer["status"] == "success" and path == ("attestation",) and gone:
                # without it the whole answer is a Newton (BLS) answer, which the compact form
                # is not meant to be: refused, never read as something else
                assert isinstance(after, tuple) and issubclass(after[0], GatewayProtocolError)
                assert isinstance(before, tuple) or before.scheme == "newton-bls"
                continue
            assert after == before, (path, value, delete)
            errors += isinstance(before, tuple)
    assert errors > 100  # the changes did reach the checks


def test_the_compact_answer_keeps_what_the_client_reads() -> None:
    answer = next(a for a in _answers(5, 50) if a["status"] == "success")
    compact = compact_result(answer)
    assert set(compact) == {
        "task_id", "status", "error", "expiration", "operator_errors", "attestation",
        "task_response",
    }  # fmt: skip
    assert compact["attestation"] == answer["attestation"]
    response = answer["task_response"]
    assert compact["task_response"] == {
        "evaluation_result": response["evaluation_result"],
        "policy_task_data": {
            "policyData": [{"data": response["policy_task_data"]["policyData"][0]["data"]}]
        },
    }
    failed = next(a for a in _answers(6, 80) if a["status"] == "failed" and "tier" in a)
    assert compact_result(failed)["tier"] == failed["tier"]
    assert "task_response" not in compact_result(failed)


def _cfg(compact: bool, url: str = "http://127.0.0.1:1") -> Any:
    return _gateway._config(
        url, None, "0x" + "00" * 20, "00", None, None, None, 1, False, None, None, None,
        compact=compact,
    )  # fmt: skip


def test_the_client_sends_the_param_only_when_compact() -> None:
    from agentguard import TransactionIntent

    intent = TransactionIntent(
        **{"from": "0x" + "11" * 20, "to": "0x" + "22" * 20, "value": 1}, chain_id=8453
    )
    assert _gateway.COMPACT_PARAM == COMPACT_PARAM
    assert COMPACT_PARAM not in _gateway._task_params(_cfg(False), intent, None)
    assert _gateway._task_params(_cfg(True), intent, None)[COMPACT_PARAM] is True
    with pytest.raises(ConfigurationError):
        _cfg(1)  # type: ignore[arg-type]


def test_network_info_compact_answers_must_be_a_boolean() -> None:
    info = _gateway._parse_network_info({"scheme": "ecdsa", "dedupes": True})
    assert info["compact_answers"] is False
    ok = {"scheme": "ecdsa", "dedupes": True, "compact_answers": True}
    assert _gateway._parse_network_info(ok)["compact_answers"] is True
    with pytest.raises(GatewayProtocolError):
        _gateway._parse_network_info({**ok, "compact_answers": "yes"})


def test_connect_asks_for_compact_answers_only_where_offered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentguard import Guard, _guard

    offers = {"scheme": "ecdsa", "dedupes": True, "compact_answers": True}
    for url, info, expected in (
        ("http://127.0.0.1:9", offers, True),
        ("http://127.0.0.1:9", {"scheme": "ecdsa", "dedupes": True}, False),
        ("http://127.0.0.1:9", None, False),
        ("https://gateway.testnet.newton.xyz", offers, False),  # never to Newton's own
    ):
        monkeypatch.setattr(_guard, "probe_network", lambda u, k, info=info: info)
        guard = Guard.connect(
            url, policy_client="0x" + "00" * 19 + "01", operators=["0x" + "11" * 20],
            policy_id="0x" + "22" * 32, web3=object(),  # type: ignore[arg-type]
        ) if "newton" in url else Guard.connect(
            url, policy_client="0x" + "00" * 19 + "01", operators=["0x" + "11" * 20],
            policy_id="0x" + "22" * 32,
        )  # fmt: skip
        try:
            assert guard.authorizer._cfg.compact is expected, (url, info)
        finally:
            guard.close()


def test_a_compact_answer_is_built_from_the_same_result_without_its_whole_json() -> None:
    """``task_result(whole=False)`` (the gateway's path for a compact request) skips joining
    the whole answer's JSON, and nothing else: the same dict, keys in the same order (the
    state records it), the same compact bytes, and ``encode`` of it the very bytes the whole
    one carries; over seeded answers of every kind."""
    rng = random.Random(1311)
    clients = [_client(rng) for _ in range(3)]
    joined = 0
    for _ in range(300):
        task = _task(rng, rng.choice(clients))
        wasm = _wasm(rng, task)
        args = (
            task,
            "0x" + rng.randbytes(32).hex(),
            rng.randbytes(8).hex(),
            rng.randrange(2**33),
            rng.randrange(2**33),
        )
        outcome = _outcome(rng)
        whole = task_result(*args, wasm, canonical_json(wasm), outcome)
        plain = task_result(*args, wasm, canonical_json(wasm), outcome, whole=False)
        assert type(plain) is dict
        assert plain == whole and json.dumps(plain) == json.dumps(whole)  # same order too
        assert encode(compact_result(plain)) == encode(compact_result(whole))
        assert encode(plain) == encode(whole)
        joined += type(whole) is not dict
    assert joined > 50  # quorums' answers came joined on the whole path
