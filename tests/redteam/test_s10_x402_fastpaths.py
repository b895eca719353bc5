"""Red team (s10-a2): the x402 payment path's fast paths (keccak through cffi, intents built
without pydantic, ticket redemption without a rebuild, ``runner.now``, unaudited flows)
against a hostile host, server and inputs. Each test fails if the attack succeeds."""

from __future__ import annotations

import array
import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_hash.auto import keccak as eth_keccak

from agentguard import Signer
from agentguard._eip712 import keccak
from agentguard._exceptions import IntentError, IntentMismatch
from agentguard._intent import PaymentIntent
from agentguard._tickets import Ticket, _Registry, fresh_intent
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger
from agentguard.pipeline import LATER, Audit, Runner
from agentguard.x402 import X402Auth
from tests.x402.conftest import ALLOWANCES, connect_async
from tests.x402.fakes import PAYEE, TOKEN, FakeServer, requirement

URL = "http://shop.test/paid"
UINT256_MAX = 2**256 - 1
PAYER = "0x" + "a1" * 20


def _old_keccak(data: Any) -> bytes:
    """The implementation s10-a had."""
    return pycryptodome_keccak.new(data=data, digest_bits=256).digest()


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc))


# -- keccak ---------------------------------------------------------------------------------


def test_keccak_equals_the_old_object_and_eth_hash_on_seeded_bytes_likes() -> None:
    rng = random.Random(1010)
    sizes = [0, 1, 135, 136, 137, 271, 272, 273, *(rng.randrange(0, 5000) for _ in range(200))]
    for size in sizes:
        data = rng.randbytes(size)
        want = eth_keccak(data)
        assert _old_keccak(data) == want
        assert keccak(data) == want
        assert keccak(bytearray(data)) == want
        assert keccak(memoryview(data)) == want
        assert keccak(memoryview(bytearray(data))) == want
        # a view at an offset into a larger buffer: only its own bytes
        padded = rng.randbytes(7) + data + rng.randbytes(5)
        assert keccak(memoryview(padded)[7 : 7 + size]) == want


def test_keccak_of_a_huge_input() -> None:
    data = random.Random(3).randbytes(24 * 1024 * 1024 + 13)
    assert keccak(data) == _old_keccak(data) == eth_keccak(data)
    assert keccak(bytearray(data)) == eth_keccak(data)


def test_keccak_of_views_of_wide_items_or_several_dimensions_equals_the_old_object() -> None:
    """HOLE (fixed): the cffi path hashed ``bytes(view)`` (every byte) of a contiguous view
    of wider items (``array('I')``) or of several dimensions, where the hash object before
    hashed ``len(view)`` bytes: a different digest for the same input."""
    rng = random.Random(77)
    views: list[memoryview[Any]] = []
    for _ in range(50):
        n = rng.randrange(1, 40)
        views.append(memoryview(array.array("I", [rng.randrange(2**32) for _ in range(n)])))
        views.append(
            memoryview(array.array("h", [rng.randrange(-(2**15), 2**15) for _ in range(n)]))
        )
        views.append(memoryview(array.array("d", [rng.random() for _ in range(n)])))
        rows = rng.randrange(1, 6)
        views.append(memoryview(rng.randbytes(rows * n)).cast("B", (rows, n)))
        views.append(memoryview(rng.randbytes(n)).cast("b"))
        views.append(memoryview(rng.randbytes(n)).cast("c"))
    for view in views:
        assert _outcome(keccak, view) == _outcome(_old_keccak, view), (view.format, view.shape)


def test_keccak_of_non_bytes_gives_the_old_outcome() -> None:
    released = memoryview(b"abc")
    released.release()

    class Bytes(bytes):
        pass

    class Array(bytearray):
        pass

    hostile: list[object] = [
        "abc", "", 0, 5, None, 2.5, [1, 2], (1,), {b"a": 1}, object(), True,
        memoryview(b"abcdef")[::2], memoryview(b"abcdef")[::-1], released,
        Bytes(b"abc"), Array(b"abc"), memoryview(b""), bytearray(),
    ]  # fmt: skip
    for value in hostile:
        assert _outcome(keccak, value) == _outcome(_old_keccak, value), repr(value)


def test_keccak_under_concurrent_calls() -> None:
    rng = random.Random(5)
    inputs = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(400)]
    want = [eth_keccak(d) for d in inputs]
    barrier = threading.Barrier(8)

    def worker(seed: int) -> bool:
        barrier.wait()
        order = list(range(len(inputs)))
        random.Random(seed).shuffle(order)
        return all(keccak(inputs[i]) == want[i] for i in order for _ in range(3))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(worker, range(8)))


# -- PaymentIntent.from_fields --------------------------------------------------------------


class Str(str):
    pass


class EqStr(str):
    """Equal to anything; hashes like its value."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class Int(int):
    pass


def _fields(rng: random.Random) -> dict[str, Any]:
    def address() -> str:
        raw = rng.randbytes(20).hex()
        return "0x" + rng.choice([raw, raw.upper(), raw.lower()])

    amount = rng.choice(
        [
            rng.randrange(1, 10**6), rng.randrange(1, UINT256_MAX + 1), UINT256_MAX,
            UINT256_MAX + 1, 0, -1, str(rng.randrange(1, 10**9)), "0", "007", " 5", "5 ",
            "+5", "5.0", "1e3", "\u0665", "\uff15", "0x10", "", "9" * 78, "9" * 79,
            str(UINT256_MAX), str(UINT256_MAX + 1), True, 5.0, None, b"5",
        ]
    )  # fmt: skip
    fields: dict[str, Any] = {
        "payer": address(),
        "scheme": rng.choice(["exact", "upto", "EXACT", "exact ", "", "Exact"]),
        "network": rng.choice(
            [
                "eip155:8453",
                "eip155:1",
                "eip155:84532",
                "base",
                "eip155:08453",
                "EIP155:8453",
                "eip155:8453 ",
                "eip155:",
                "eip155:-1",
                "solana:x",
                "eip155:\u0668453",
            ]
        ),
        "asset": address(),
        "amount": amount,
        "pay_to": address(),
        "resource": rng.choice(["", "http://shop.test/paid", "x" * 2048, "x" * 2049, "\ud800"]),
        "x402_version": rng.choice([1, 2, 2, 3, 0, True, "2"]),
    }
    roll = rng.random()
    if roll < 0.1:
        fields[rng.choice(list(fields))] = rng.choice([None, 5, b"\x11" * 20, 2.5, [1]])
    elif roll < 0.15:
        del fields[rng.choice(list(fields))]
    elif roll < 0.2:
        fields["extra"] = "ignored?"
    elif roll < 0.25:  # a wrong EIP-55 checksum
        good = fields["pay_to"][2:].lower()
        fields["pay_to"] = "0x" + good[0].upper() + good[1:].lower() if good[0].isalpha() else good
    return fields


def _same(fields: Any) -> None:
    fast = _outcome(PaymentIntent.from_fields, fields)
    model = _outcome(PaymentIntent.model_validate, fields)
    if model[0] == "ok":
        assert fast[0] == "ok", fields
        a, b = fast[1], model[1]
        assert type(a) is type(b) is PaymentIntent
        assert a.model_dump() == b.model_dump()
        assert {k: type(v) for k, v in a.__dict__.items()} == {
            k: type(v) for k, v in b.__dict__.items()
        }
        assert a.model_fields_set == b.model_fields_set
        assert a.intent_hash == b.intent_hash and a.spend == b.spend and a.wire() == b.wire()
        with pytest.raises(Exception):  # frozen, like the model's
            a.amount = 1  # type: ignore[misc]
    else:
        assert fast == model, fields
        try:
            PaymentIntent.from_fields(fields)
        except Exception as e1:
            try:
                PaymentIntent.model_validate(fields)
            except Exception as e2:
                assert str(e1) == str(e2)


def test_from_fields_equals_the_model_on_seeded_random_and_hostile_fields() -> None:
    rng = random.Random(402)
    for _ in range(3000):
        _same(_fields(rng))


def test_from_fields_with_subclassed_values_gives_exact_builtins() -> None:
    """A str/int/dict subclass (or a value equal to everything) never reaches the intent:
    the model decides and stores exact builtins."""
    base = {
        "payer": PAYER, "scheme": "exact", "network": "eip155:8453", "asset": TOKEN,
        "amount": 10_000, "pay_to": PAYEE, "resource": URL, "x402_version": 2,
    }  # fmt: skip

    class Dict(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: Any) -> Any:
            return "0x" + "66" * 20 if key == "pay_to" else super().__getitem__(key)

    for name, value in [
        ("network", Str("eip155:8453")), ("network", EqStr("eip155:8453")),
        ("scheme", EqStr("exact")), ("resource", EqStr(URL)), ("pay_to", EqStr(PAYEE)),
        ("amount", Int(10_000)), ("amount", Str("10000")), ("x402_version", Int(2)),
    ]:  # fmt: skip
        fields = {**base, name: value}
        _same(fields)
        intent = PaymentIntent.from_fields(fields)
        assert all(type(v) in (str, int) for v in intent.__dict__.values())
        assert intent == PaymentIntent(**base)
    hostile = Dict(base)
    _same(hostile)
    assert PaymentIntent.from_fields(hostile) == PaymentIntent.model_validate(hostile)


# -- mutation after verification: cached spend, tickets -------------------------------------


def _intent(**over: Any) -> PaymentIntent:
    fields = {
        "payer": PAYER, "scheme": "exact", "network": "eip155:8453", "asset": TOKEN,
        "amount": 10_000, "pay_to": PAYEE, "resource": URL, "x402_version": 2,
    }  # fmt: skip
    fields.update(over)
    return PaymentIntent.from_fields(fields)


def test_a_cached_spend_does_not_survive_an_edit_behind_the_frozen_model() -> None:
    intent = _intent()
    assert intent.spend.amount == 10_000 and intent.intent_hash  # both cached now
    object.__setattr__(intent, "amount", 10**12)
    intent.__dict__["pay_to"] = "0x" + "66" * 20
    fresh = fresh_intent(intent)
    assert fresh.spend.amount == 10**12 and fresh.spend.recipient == "0x" + "66" * 20
    assert fresh.intent_hash == _intent(amount=10**12, pay_to="0x" + "66" * 20).intent_hash
    assert fresh.intent_hash != _intent().intent_hash


def _registry_with(intent: PaymentIntent) -> tuple[_Registry, Ticket]:
    from agentguard._attestation import Attestation

    fresh = fresh_intent(intent)
    task = bytes(range(32))
    attestation = Attestation.model_construct(task_id=task)  # type: ignore[call-arg]
    ticket = Ticket(task, attestation, fresh, fresh.intent_hash, 2**40, "quorum-ecdsa")
    registry = _Registry()
    registry.issue(ticket, 0)
    return registry, ticket


@pytest.mark.parametrize(
    "edit",
    [
        {"amount": 10_001},
        {"pay_to": "0x" + "66" * 20},
        {"asset": TOKEN.lower()},  # same address, another spelling: not the ticket's field
        {"network": "eip155:1"},
        {"pay_to": EqStr("0x" + "66" * 20)},  # equal to everything, another address
        {"amount": Int(10_001)},
        {"asset": EqStr("0x" + "77" * 20)},
        {"network": EqStr("eip155:1")},
    ],
    ids=lambda e: ",".join(f"{k}={type(v).__name__}" for k, v in e.items()),
)
def test_redeem_refuses_an_intent_edited_after_verification(edit: dict[str, Any]) -> None:
    intent = _intent()
    registry, ticket = _registry_with(intent)
    for name, value in edit.items():
        object.__setattr__(intent, name, value)
    with pytest.raises(IntentMismatch):
        registry.redeem(ticket.attestation, intent, 1)


def test_redeem_accepts_exactly_the_verified_values_and_only_once() -> None:
    intent = _intent()
    registry, ticket = _registry_with(intent)
    assert registry.redeem(ticket.attestation, _intent(), 1) is ticket
    with pytest.raises(Exception, match="already used"):
        registry.redeem(ticket.attestation, _intent(), 1)


def test_redeem_of_a_constructed_intent_with_missing_or_odd_fields_is_refused() -> None:
    for odd in (
        PaymentIntent.model_construct(payer=PAYER),  # type: ignore[call-arg]
        PaymentIntent.model_construct(**{**_intent().__dict__, "amount": "10000"}),
        PaymentIntent.model_construct(**{**_intent().__dict__, "amount": True}),
    ):
        registry, ticket = _registry_with(_intent())
        with pytest.raises(IntentMismatch):
            registry.redeem(ticket.attestation, odd, 1)


# -- runner.now ------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def append(self, kind: str, record: Any) -> None:
        self.kinds.append(kind)


def test_a_replaced_execute_sees_audit_steps_and_the_sink_gets_each_once() -> None:
    sink = _Sink()
    seen: list[str] = []

    class Tracing(Runner):
        def execute(self, step: Any, port: Any = None) -> Any:
            seen.append(type(step).__name__)
            return super().execute(step, port)

    with Ledger() as ledger:
        runner = Tracing(None, ledger, sink)  # type: ignore[arg-type]
        assert runner.now(Audit("signed", {}), None) is LATER
        plain = Runner(None, ledger, sink)  # type: ignore[arg-type]
        assert plain.now(Audit("signed", {}), None) is None
        plain.execute = runner.execute  # type: ignore[method-assign]
        assert plain.now(Audit("sent", {}), None) is LATER
    assert sink.kinds == ["signed"] and seen == []


# -- end to end: a real network, a real ledger and audit log ---------------------------------


def _kinds(audit: AuditLog) -> list[str]:
    return [e.kind for e in audit.entries()]


def test_racing_threads_on_one_auth_each_pay_once_what_was_authorized_and_audited(
    tmp_path: Any, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    server = FakeServer()
    barrier = threading.Barrier(4)

    def pay(_: int) -> int:
        with auth.client(transport=server.transport()) as http:
            barrier.wait()
            return http.get(URL).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(pay, range(4))) == [200] * 4
    auth.close()
    kinds = _kinds(audit)
    assert len(server.payments) == 4
    assert sorted(kinds) == sorted(["authorized", "signed", "committed"] * 4)
    authorized = [e.record for e in audit.entries() if e.kind == "authorized"]
    for record in authorized:
        assert record["intent"]["to"].lower() == TOKEN.lower()
    values = {p["payload"]["authorization"]["value"] for p in server.payments}
    nonces = {p["payload"]["authorization"]["nonce"] for p in server.payments}
    assert values == {"10000"} and len(nonces) == 4
    assert {p["payload"]["authorization"]["to"].lower() for p in server.payments} == {PAYEE.lower()}
    usage = ledger.usage(auth._agent, 3600)
    assert usage.count == 4 and usage.spent[TOKEN.lower()] == 40_000


def test_racing_tasks_on_one_async_auth_audit_every_payment(
    tmp_path: Any, signer: Signer, network: Any, ledger: Ledger
) -> None:
    async def main() -> tuple[list[int], list[str], int]:
        audit = AuditLog(tmp_path / "audit.jsonl")
        async with connect_async(network) as guard:
            auth = X402Auth(
                signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit
            )
            server = FakeServer(after_payment="drop")  # every outcome unknown
            async with httpx.AsyncClient(auth=auth, transport=server.async_transport()) as http:

                async def one() -> int:
                    try:
                        return (await http.get(URL)).status_code
                    except httpx.ConnectError:  # the transport's error; the outcome is unknown
                        return -1

                codes = await asyncio.gather(*(one() for _ in range(3)))
            await auth.aclose()
            return list(codes), _kinds(audit), len(server.payments)

    codes, kinds, payments = asyncio.run(main())
    assert codes == [-1, -1, -1] and payments == 3
    assert sorted(kinds) == sorted(["authorized", "signed", "outcome_unknown"] * 3)
    usage = ledger.usage(signer.address, 3600)
    assert usage.spent[TOKEN.lower()] == 30_000  # unknown outcomes stay counted


def test_a_huge_or_odd_amount_from_the_server_is_refused_before_anything_is_held(
    signer: Signer, guard: Any, ledger: Ledger
) -> None:
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    for amount in [str(UINT256_MAX + 1), "9" * 100, "\u0665", "1e3", "-5", "0", " 5"]:
        server = FakeServer(accepts=[requirement(amount=amount)])
        with auth.client(transport=server.transport()) as http, pytest.raises(Exception) as info:
            http.get(URL)
        assert isinstance(info.value, IntentError) or "Payment" in type(info.value).__name__
        assert server.payments == []
    assert ledger.usage(auth._agent, 3600).count == 0
