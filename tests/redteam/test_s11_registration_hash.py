"""Red team s11-r5: registrations named by hash (``registration_hash``, s11-h5) and the server's
timers applied once per chunk. A hostile gateway names registrations it should not (another
client's, a superseded one, one whose fields disagree with the request, two at once, odd
spellings of a hash), a hostile owner floods the caches, a hostile operator asks for the
registration forever; and slow clients drip requests at the server the timers must still cut off.
Each test asserts what the attacker gets, most against what the full registration gets."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard.network import _server
from agentguard.network import operator as operator_module
from agentguard.network._rpc import INVALID_PARAMS, REGISTRATION_REQUIRED, RPCError
from agentguard.network.gateway import _operators
from agentguard.network.gateway._operators import OperatorFailure, call_operator
from agentguard.network.operator import Operator, create_app
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from tests.network.conftest import UNIT, params
from tests.network.test_operator import registration, request
from tests.network.test_operator_registration_hash import _answer, _bodies, _hash, _Link
from tests.network.test_server import (
    HONEST,
    Server,
    _Transport,
    closed,
    read_response,
    read_responses,
    server,
)

__all__ = ["server"]

KEY = PrivateKey(b"\x0b" * 32)
KEY2 = PrivateKey(b"\x0c" * 32)
OTHER = "0x" + "dd" * 20
VAULT_OWNER = PrivateKey(b"\x1d" * 32)


def _named(body: dict[str, Any], raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """``body`` naming ``raw`` (default: its own registration) by hash only."""
    named = copy.deepcopy(body)
    own = named.pop("registration")
    named["registration_hash"] = _hash(own if raw is None else raw)
    return named


def _same(full: Any, named: Any) -> None:
    """The same answer by hash as in full (signatures and decisions, or the same error)."""
    assert type(full) is type(named)
    if isinstance(full, dict):
        assert {k: v for k, v in full.items() if k != "signature"} == {
            k: v for k, v in named.items() if k != "signature"
        }
    else:
        assert full == named


# -- a hostile gateway names registrations it should not --------------------------------------


def test_client_a_hash_for_client_b_is_refused_also_on_a_host() -> None:
    """Held: A's registration, verified and held, named for B: refused as its JSON is, by a
    single operator and by a host asked for both keys."""
    single = Operator(KEY, Registry(":memory:"))
    host = Operator([KEY, KEY2], Registry(":memory:"))
    other = registration(client=OTHER)
    for op in (single, host):
        body = request(registration=other, policy_client=OTHER)
        if op is single:
            op.evaluate_and_sign(body)
        else:
            op.evaluate_for({**body, "operators": list(op.addresses)})
    full = _answer(single, request(registration=other))
    assert full == (INVALID_PARAMS, "registration: it is for another policy client")
    assert _answer(single, _named(request(), other)) == full
    with pytest.raises(RPCError) as refused:
        host.evaluate_for({**_named(request(), other), "operators": list(host.addresses)})
    assert (refused.value.code, refused.value.message) == full


def test_a_hash_of_a_superseded_version_is_refused_as_its_json_is() -> None:
    """Held: without a chain to read pins, only the newest is signed under; the old version's
    hash (held and verified when it was newest) pins nothing."""
    operator = Operator(KEY, Registry(":memory:"))
    loose_params = params(max_per_tx=100 * UNIT)
    loose = registration(config=loose_params, version=1)
    assert _answer(operator, request(registration=loose, params=loose_params))["decision"]
    assert _answer(operator, _named(request(registration=loose, params=loose_params)))["decision"]
    operator.hold({"registration": registration(version=2)})  # the owner tightened the cap
    stale = request(50 * UNIT, registration=loose, params=loose_params)
    full = _answer(operator, stale)
    assert full[0] == INVALID_PARAMS and "not newer" in full[1]
    assert _answer(operator, _named(stale)) == full
    tight = _named(request(50 * UNIT, registration=registration(version=2)))
    assert _answer(operator, tight)["decision"] == "deny"  # held when delivered: by hash


def test_a_vault_hash_counts_only_while_the_vault_pins_it() -> None:
    """Held: a vault's older version is signed under only while the chain says the vault pins
    its policy id; by hash exactly as in full, before and after the owner moves the pin."""
    pin: list[bytes | None] = []
    operator = Operator(KEY, Registry(":memory:", pinned=lambda _: pin[0]))
    cap = params(max_per_tx=100 * UNIT)
    v1 = registration(owner=VAULT_OWNER, config=cap, version=1)
    v2 = registration(owner=VAULT_OWNER, version=2)
    pin.append(Registration.from_json(v1).policy_id)
    first = request(50 * UNIT, registration=v1, params=cap)
    assert _answer(operator, first)["decision"] == "allow"
    operator.hold({"registration": v2})
    again = request(50 * UNIT, registration=v1, params=cap)
    _same(_answer(operator, again), _answer(operator, _named(again)))
    assert _answer(operator, _named(again))["decision"] == "allow"
    pin[0] = Registration.from_json(v2).policy_id  # the owner moved the pin onchain
    moved = request(50 * UNIT, registration=v1, params=cap)
    full = _answer(operator, moved)
    assert full[0] == INVALID_PARAMS and "pins policy id" in full[1]
    assert _answer(operator, _named(moved)) == full
    pin[0] = None  # the chain cannot tell: the newest only
    unknown = request(50 * UNIT, registration=v1, params=cap)
    full = _answer(operator, unknown)
    assert full[0] == INVALID_PARAMS and "not newer" in full[1]
    assert _answer(operator, _named(unknown)) == full


@pytest.mark.parametrize(
    "override",
    [
        {"chain_id": 1},
        {"policy_code_hash": "0x" + "ab" * 32},
        {"params": params(max_per_tx=10**9 * UNIT)},
        {"expire_after": 600},
    ],
    ids=["chain", "code", "params", "expiry"],
)
def test_a_held_hash_with_a_request_that_disagrees_is_refused(override: dict[str, Any]) -> None:
    """Held: the registration named is genuine and held; the request around it claims another
    chain, code, params or expiry: refused with the error the full registration gets."""
    operator = Operator(KEY, Registry(":memory:"))
    operator.evaluate_and_sign(request())
    body = request(**override)
    full = _answer(operator, body)
    assert isinstance(full, tuple) and full[0] == INVALID_PARAMS
    assert _answer(operator, _named(body)) == full


def test_a_request_naming_two_registrations_is_refused() -> None:
    """Broken before: ``registration`` and ``registration_hash`` together, disagreeing; the
    operator took the JSON and ignored the hash, so what it signed under depended on which
    field a reader looks at. No gateway sends both: refused, in either order of agreement."""
    operator = Operator(KEY, Registry(":memory:"))
    loose_params = params(max_per_tx=100 * UNIT)
    loose = registration(config=loose_params, version=1)
    operator.evaluate_and_sign(request(registration=loose, params=loose_params))
    operator.evaluate_and_sign(request(registration=registration(version=2)))
    for named in (registration(config=loose_params, version=1), registration(version=2)):
        body = request(registration=registration(version=2))
        body["registration_hash"] = _hash(named)
        got = _answer(operator, body)
        assert got[0] == INVALID_PARAMS and "registration_hash" in got[1]


def test_a_hash_in_upper_case_names_the_same_registration_and_wrong_ones_do_not() -> None:
    """Held: hex case is not part of the name (the bytes are); any other form is refused,
    never taken as "no registration, use the newest"."""
    operator = Operator(KEY, Registry(":memory:"))
    operator.evaluate_and_sign(request())
    upper = _named(request())
    upper["registration_hash"] = "0x" + upper["registration_hash"][2:].upper()
    assert _answer(operator, upper)["decision"] == "allow"
    for bad in ["0X" + upper["registration_hash"][2:], upper["registration_hash"] + "\n", [], ""]:
        body = _named(request())
        body["registration_hash"] = bad
        assert _answer(operator, body)[0] == INVALID_PARAMS


def test_canonical_spellings_name_one_registration_and_others_cannot_be_forged() -> None:
    """Held: key order and ``\\u`` escapes are spellings of one registration (one hash); 1 and
    1.0 are two params, so two registrations the owner must sign apart; a JSON body with a key
    twice never reaches the operator."""
    raw = registration(config={**params(), "note": "caf\u00e9"})
    reordered = dict(reversed(list(raw.items())))
    escaped = json.loads(json.dumps(raw, ensure_ascii=True))
    assert _hash(raw) == _hash(reordered) == _hash(escaped)
    one = registration(config={**params(), "k": 1})
    one_point_zero = copy.deepcopy(one)
    one_point_zero["params"]["k"] = 1.0
    one_point_zero.pop("policy_id")
    with pytest.raises(Exception, match="signed by"):
        Registration.from_json(one_point_zero)  # the owner signed 1, not 1.0
    signed_float = registration(config={**params(), "k": 1.0})
    assert _hash(one) != _hash(signed_float)

    operator = Operator(KEY, Registry(":memory:"))
    operator.evaluate_and_sign(request())
    handler = create_app(operator, token="t")
    named = _named(request())
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": named}
    )
    doubled = body.replace(
        '"registration_hash":', '"registration_hash":"0x' + "00" * 32 + '","registration_hash":', 1
    )
    status, answer = asyncio.run(
        handler("POST", "/rpc", {"authorization": "Bearer t"}, doubled.encode())
    )
    assert status == 200 and json.loads(answer)["error"]["code"] == -32700


# -- caches: bounded, and an eviction costs only a resend -------------------------------------


def test_a_flood_of_registrations_evicts_and_costs_the_honest_client_one_resend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held: a hostile owner registering many clients empties the operator's hash table (it
    is bounded); the honest client's next task is asked for its registration once, then
    signed as before."""
    monkeypatch.setattr(operator_module, "_MAX_DERIVED", 8)
    operator = Operator(KEY, Registry(":memory:"))
    link: Any = _Link(operator)
    code = bytes.fromhex(request()["policy_code_hash"][2:])
    assert asyncio.run(call_operator(link, code, _bodies(request()), 5.0))["decision"] == "allow"
    for i in range(10):
        operator.hold({"registration": registration(client="0x" + f"{i + 1:040x}")})
    assert len(operator._by_hash) <= 8
    link.sent.clear()
    assert asyncio.run(call_operator(link, code, _bodies(request()), 5.0))["decision"] == "allow"
    asked, resent = link.sent
    assert "registration_hash" in asked and "registration" in resent


def test_the_gateway_does_not_remember_registrations_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Broken before: every registration an operator ever answered under stayed in the link's
    ``has_registration`` (an owner re-registering in a loop grows the gateway's memory, per
    host, forever). Now bounded like the operator's own table: a forgotten one is sent in full."""
    monkeypatch.setattr(_operators, "MAX_HELD", 4)
    operator = Operator(KEY, Registry(":memory:"))
    link: Any = _Link(operator)
    code = bytes.fromhex(request()["policy_code_hash"][2:])
    for version in range(1, 8):
        raw = registration(version=version)
        got = asyncio.run(call_operator(link, code, _bodies(request(registration=raw)), 5.0))
        assert got["decision"] == "allow"
        assert len(link.has_registration) <= 4


class _Asking:
    """A hostile operator that answers every request with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.has_code: set[bytes] = set()
        self.has_registration: set[bytes] = set()
        self.http = self
        self.posts = 0

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        self.posts += 1
        error = {"code": self.code, "message": "resend"}
        return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "error": error}).encode()


@pytest.mark.parametrize("code", [REGISTRATION_REQUIRED, -32621])
def test_an_operator_asking_forever_gets_two_posts_per_task(code: int) -> None:
    """Held: the gateway resends once, then counts the operator as failed; held material is
    forgotten, so later tasks start in full (one post each, never a loop)."""
    link: Any = _Asking(code)
    link.has_code.add(b"code")
    bodies = _bodies(request())
    link.has_registration.add(bodies.registration_hash)
    for task in range(3):
        with pytest.raises(OperatorFailure) as failed:
            asyncio.run(call_operator(link, b"code", bodies, 5.0))
        assert failed.value.rpc_code == code or failed.value.reason == "invalid_response"
        assert link.posts == 2 + task
    assert not link.has_code and not link.has_registration


def test_a_host_restarted_between_the_hash_and_the_resend_gets_it_in_full() -> None:
    """Held: the host that asked for the registration is gone when the resend arrives; the
    new one takes the full registration (and, re-registered meanwhile, refuses the old one as
    its JSON would be refused)."""
    operator = Operator(KEY, Registry(":memory:"))
    link: Any = _Link(operator)
    code = bytes.fromhex(request()["policy_code_hash"][2:])
    asyncio.run(call_operator(link, code, _bodies(request()), 5.0))
    restarted = Operator(KEY, Registry(":memory:"))
    restarted.hold({"registration": registration(version=2)})

    class Swap(_Link):
        async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
            answer = await super().post(body, timeout)
            self.operator = restarted
            return answer

    swapping: Any = Swap(Operator(KEY, Registry(":memory:")))
    swapping.has_code, swapping.has_registration = link.has_code, link.has_registration
    with pytest.raises(OperatorFailure) as refused:
        asyncio.run(call_operator(swapping, code, _bodies(request()), 5.0))
    assert refused.value.rpc_code == INVALID_PARAMS and "not newer" in str(refused.value)
    first, second = swapping.sent
    assert "registration_hash" in first and "registration" in second


def test_a_host_answers_every_key_alike_by_hash() -> None:
    """Held: keys of one host share what it verified; a hash learned through one key is good
    for the other, and each key's answer by hash is its answer in full."""
    host = Operator([KEY, KEY2], Registry(":memory:"))
    a, b = host.addresses
    host.evaluate_for({**request(), "operators": [a]})
    full = host.evaluate_for({**request(50 * UNIT), "operators": [b]})["answers"]
    named = host.evaluate_for({**_named(request(50 * UNIT)), "operators": [b]})["answers"]
    _same(full[0], named[0])
    both = host.evaluate_for({**_named(request()), "operators": [a, b]})["answers"]
    assert [x["decision"] for x in both] == ["allow", "allow"]
    assert both[0]["policy_id"] == both[1]["policy_id"]


# -- the server's timers, applied once per chunk ----------------------------------------------


def _armed_after(chunks: list[bytes]) -> str | None:
    """The timer a connection holds after ``chunks`` arrive one by one (its callback)."""

    async def scenario() -> str | None:
        gate = asyncio.Event()

        async def handler(m: str, p: str, h: Mapping[str, str], b: bytes) -> tuple[int, bytes]:
            await gate.wait()
            return 200, b"{}"

        connection = _server._Connection(_server._Server(handler, max_body=1000))
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        for chunk in chunks:
            connection.data_received(chunk)
            await asyncio.sleep(0)
        timer = connection._timer
        name = None if timer is None else timer._callback.__name__  # type: ignore[attr-defined]
        connection.connection_lost(None)
        return name

    return asyncio.run(scenario())


def test_timers_after_each_chunk_shape() -> None:
    """Held: a byte per chunk, a head then a dripped body, and pipelined requests where the
    first ends mid-chunk and the second stalls all leave the timer that must fire."""
    head, body = HONEST.split(b"\r\n\r\n")
    head += b"\r\n\r\n"
    assert _armed_after([bytes([c]) for c in head[:-4]]) == "_on_slow_head"
    assert _armed_after([bytes([c]) for c in head]) == "_on_slow_body"
    assert _armed_after([head, body[:1]]) == "_on_slow_body"
    assert _armed_after([HONEST + head[:12]]) == "_on_slow_head"
    assert _armed_after([HONEST + head + body[:1]]) == "_on_slow_body"
    assert _armed_after([HONEST[:-1], HONEST[-1:] + head[:5]]) == "_on_slow_head"
    assert _armed_after([HONEST * 3 + head]) == "_on_slow_body"
    assert _armed_after([HONEST * 3]) is None  # the worker, blocked, arms idle when done


def _drip(conn: socket.socket, data: bytes) -> bytes:
    """Send ``data`` a byte at a time until the server answers; what it answered first."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(0.05)
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        try:
            got = conn.recv(65536)
        except TimeoutError:
            continue
        return got
    conn.settimeout(10)
    return conn.recv(65536)


def test_a_slowloris_a_byte_at_a_time_is_cut_off(server: Server) -> None:
    """Held: an endless head, a byte per segment, is answered 408 and closed (bytes do not
    re-arm the head timer), and the server still answers an honest client."""
    with server.connect() as conn:
        got = _drip(conn, b"POST /echo HTTP/1.1\r\n" + b"X-A: " + b"a" * 1500)
        assert got.startswith(b"HTTP/1.1 408")
        conn.settimeout(10)
        assert closed(conn)
    with server.connect() as conn:
        conn.sendall(HONEST)
        assert read_response(conn)[0].startswith(b"HTTP/1.1 200")


def test_a_dripped_body_after_a_whole_head_is_cut_off(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
        got = _drip(conn, b"{" + b" " * 898 + b"}")
        assert got.startswith(b"HTTP/1.1 200") and b"did not arrive" in got
    assert server.calls == []


def test_a_pipelined_second_request_that_stalls_is_cut_off(server: Server) -> None:
    """Held: the first request completes mid-segment, the second stalls in its head, then
    (another connection) in its body: the first is answered, the second timed out."""
    with server.connect() as conn:
        conn.sendall(HONEST + b"POST /echo HTTP/1.1\r\nHo")
        (first, _), (second, _) = read_responses(conn, 2)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 408")
        assert closed(conn)
    with server.connect() as conn:
        conn.sendall(HONEST + b"POST /echo HTTP/1.1\r\nContent-Length: 9\r\n\r\n{")
        (first, _), (second, error) = read_responses(conn, 2)
        assert first.startswith(b"HTTP/1.1 200") and b"did not arrive" in error
        assert closed(conn)
    with server.connect() as conn:  # the first one slow: the stall is timed meanwhile
        conn.sendall(b"POST /slow HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /echo HTTP/1.1\r\nHo")
        deadline = time.monotonic() + 10
        while len(server.calls) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(_server.HEAD_TIMEOUT * 2)
        server.gate.set()
        (first, _), (second, _) = read_responses(conn, 2)
        assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 408")
        assert closed(conn)


def test_a_strangers_hash_after_the_owner_took_the_vault_over_is_refused() -> None:
    """Held: a stranger registered the vault first (verified, held, its hash known); the
    vault's owner took it over (the chain says so). The stranger's registration, by hash as
    in full, is no longer held: refused, never signed under."""
    stranger = PrivateKey(b"\x2e" * 32)
    owner_hex = Registration.from_json(registration(owner=VAULT_OWNER)).owner_hex
    operator = Operator(KEY, Registry(":memory:", check_owner=lambda _: owner_hex))
    loose_params = params(max_per_tx=100 * UNIT)
    theirs = registration(owner=stranger, config=loose_params, version=7)
    assert _answer(operator, request(registration=theirs, params=loose_params))["decision"]
    operator.hold({"registration": registration(owner=VAULT_OWNER, version=1)})
    stale = request(50 * UNIT, registration=theirs, params=loose_params)
    full, named = _answer(operator, stale), _answer(operator, _named(stale))
    assert full == named and full[0] == INVALID_PARAMS and "not held" in full[1]


def test_seeded_vault_histories_answer_alike_by_hash_and_in_full() -> None:
    """Held: a vault's versions delivered in any order, its pin moved at random, tasks under
    any version: an operator asked by hash first (in full only when it asks, as the gateway
    does) answers every task as one always asked in full."""
    rng = random.Random(5)
    pin: list[bytes | None] = [None]
    full = Operator(KEY, Registry(":memory:", pinned=lambda _: pin[0]))
    named = Operator(KEY, Registry(":memory:", pinned=lambda _: pin[0]))
    caps = [10 * UNIT, 100 * UNIT, 1000 * UNIT, 20 * UNIT]
    versions = [
        registration(owner=VAULT_OWNER, config=params(max_per_tx=cap), version=i + 1)
        for i, cap in enumerate(caps)
    ]
    signed = by_hash = 0
    for _ in range(150):
        step = rng.random()
        if step < 0.2:
            raw = rng.choice(versions)
            for op in (full, named):
                try:
                    op.hold({"registration": raw})
                except RPCError:
                    pass
        elif step < 0.35:
            pin[0] = rng.choice([None, *(Registration.from_json(v).policy_id for v in versions)])
        else:
            i = rng.randrange(len(versions))
            body = request(
                rng.choice([5 * UNIT, 50 * UNIT, 500 * UNIT]),
                registration=versions[i],
                params=params(max_per_tx=caps[i]),
            )
            expected = _answer(full, body)
            got = _answer(named, _named(body))
            if isinstance(got, tuple) and got[0] == REGISTRATION_REQUIRED:
                got = _answer(named, body)
            else:
                by_hash += 1
            _same(expected, got)
            signed += isinstance(expected, dict)
    assert signed > 10 and by_hash > 30
