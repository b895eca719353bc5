"""Ledger accounting on one process: caps, windows, idempotency, lifecycle, exact big amounts."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from agentguard._exceptions import (
    BudgetExceeded,
    ConfigurationError,
    IntentError,
    LedgerError,
    ReservationError,
)
from agentguard._intent import PaymentIntent, Spend, TransactionIntent
from agentguard.ledger import AsyncLedger, Ledger, Limits, RateCap, WindowCap

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
WETH = "0x4200000000000000000000000000000000000006"
AGENT = "0x1111111111111111111111111111111111111111"
SHOP = "0x2222222222222222222222222222222222222222"
T0 = 1_764_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock, open_shared: Callable[..., Ledger]) -> Ledger:
    """On each backend in turn (SQLite, Redis, PostgreSQL: ``conftest.py``)."""
    return open_shared(clock=clock)


def spend(amount: int, asset: str = USDC) -> Spend:
    return Spend(asset=asset, amount=amount, recipient=SHOP)


def reserve(ledger: Ledger, clock: Clock, amount: int, key: str, limits: Limits, **kw: object):
    return ledger.reserve(
        kw.get("agent", AGENT),  # type: ignore[arg-type]
        spend(amount, kw.get("asset", USDC)),  # type: ignore[arg-type]
        key=key,
        expires_at=clock.now + float(kw.get("ttl", 300)),  # type: ignore[arg-type]
        limits=limits,
    )


BIG = 2**200 + 12345  # far beyond 2^64 and 2^128


def test_exact_arithmetic_beyond_2_128(ledger: Ledger, clock: Clock) -> None:
    cap = 3 * BIG
    limits = Limits(windows=[WindowCap(USDC, 3600, cap)])
    for i in range(3):
        reserve(ledger, clock, BIG, f"k{i}", limits)
    assert ledger.usage(AGENT, 3600).spent[USDC.lower()] == cap
    # one atomic unit more does not fit; the message carries the exact figures
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, clock, 1, "k3", limits)
    assert str(cap) in str(info.value) and str(cap + 1) in str(info.value)
    # giving back exactly one unit makes exactly one unit fit (float math could not do this)
    first = ledger.get(reserve(ledger, clock, BIG, "k0", limits).id)
    ledger.commit(first.id, "0xtx", BIG - 1)
    r = reserve(ledger, clock, 1, "k3", limits)
    assert r.amount == 1
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "k4", limits)
    assert ledger.usage(AGENT, 3600).spent[USDC.lower()] == cap


def test_per_tx_cap_is_per_asset_and_case_insensitive(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(per_tx={USDC.upper().replace("0X", "0x"): 1_000_000})
    assert reserve(ledger, clock, 1_000_000, "a", limits).amount == 1_000_000
    with pytest.raises(
        BudgetExceeded, match=r"per-transaction cap .* is 1000000, .* spends 1000001"
    ):
        reserve(ledger, clock, 1_000_001, "b", limits)
    # another asset has no per-tx cap here
    assert reserve(ledger, clock, 10**30, "c", limits, asset=WETH).amount == 10**30
    assert ledger.usage(AGENT, 60).count == 2


def test_window_rolls_with_the_clock(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 60, 100)])
    reserve(ledger, clock, 60, "a", limits)
    clock.now += 30
    reserve(ledger, clock, 40, "b", limits)
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, clock, 1, "c", limits)
    # "a" leaves the window 60 s after it was made, i.e. in 30 s
    assert "in 30 s" in str(info.value)
    clock.now += 29.999
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "c", limits)
    clock.now = T0 + 60  # exactly 60 s after "a": it is out of the window
    assert reserve(ledger, clock, 60, "c", limits).amount == 60
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "d", limits)
    assert ledger.usage(AGENT, 60).spent == {USDC.lower(): 100}


def test_several_windows_and_a_new_window_length_counts_history(
    ledger: Ledger, clock: Clock
) -> None:
    short = Limits(windows=[WindowCap(USDC, 60, 100)])
    for i in range(5):
        ledger.commit(reserve(ledger, clock, 50, f"k{i}", short).id, f"0xtx{i}")
        clock.now += 61
    # a daily cap first used now still sees all 250 spent in the last day
    daily = Limits(windows=[WindowCap(USDC, 60, 100), WindowCap(USDC, 86_400, 300)])
    reserve(ledger, clock, 50, "k5", daily)
    with pytest.raises(BudgetExceeded, match=r"86400 s window cap .* 300; 300 already"):
        reserve(ledger, clock, 1, "k6", daily)


def test_rate_cap_counts_every_asset(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(rate=[RateCap(10, 3)])
    reserve(ledger, clock, 1, "a", limits)
    reserve(ledger, clock, 1, "b", limits, asset=WETH)
    clock.now += 4
    reserve(ledger, clock, 0, "c", limits)  # a zero-value call still counts as an action
    with pytest.raises(BudgetExceeded, match=r"rate cap is 3 actions per 10 s .*\(in 6 s\)"):
        reserve(ledger, clock, 1, "d", limits, asset=WETH)
    clock.now += 6
    reserve(ledger, clock, 1, "d", limits)
    # other agents have their own budget
    reserve(ledger, clock, 1, "e", limits, agent="another-agent")


def test_zero_cap_never_fits(ledger: Ledger, clock: Clock) -> None:
    with pytest.raises(BudgetExceeded, match="nothing will fit"):
        reserve(ledger, clock, 1, "a", Limits(rate=[RateCap(10, 0)]))
    with pytest.raises(BudgetExceeded, match="will never fit"):
        reserve(ledger, clock, 11, "a", Limits(windows=[WindowCap(USDC, 10, 10)]))


def test_reserve_is_idempotent_per_key(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 60, 100)])
    first = reserve(ledger, clock, 70, "task-1", limits)
    again = reserve(ledger, clock, 70, "task-1", limits)
    assert again == first
    assert ledger.usage(AGENT, 60).spent == {USDC.lower(): 70}
    # checksummed and lowercase agent addresses are the same agent
    assert reserve(ledger, clock, 70, "task-1", limits, agent=AGENT.lower()).id == first.id
    with pytest.raises(ReservationError, match="already reserved 70"):
        reserve(ledger, clock, 71, "task-1", limits)
    # even after it settled, the key returns the same (settled) reservation
    ledger.release(first.id, "not needed")
    settled = reserve(ledger, clock, 70, "task-1", limits)
    assert (settled.id, settled.state) == (first.id, "released")
    with pytest.raises(ReservationError):
        ledger.mark_signed(settled.id, "0xsig")


def test_upto_commits_less_and_gives_back_the_rest(ledger: Ledger, clock: Clock) -> None:
    payment = PaymentIntent(
        payer=AGENT, scheme="upto", network="eip155:8453", asset=USDC, amount=1_000, pay_to=SHOP
    )
    limits = Limits(windows=[WindowCap(USDC, 3600, 1_500)])
    r = ledger.reserve(
        payment.payer, payment.spend, key="pay-1", expires_at=clock.now + 60, limits=limits
    )
    ledger.mark_signed(r.id, "permit2-nonce-7")
    with pytest.raises(ReservationError, match="holds 1000; it cannot commit 1001"):
        ledger.commit(r.id, "settled", 1_001)
    done = ledger.commit(r.id, "settled 0xabc", 250)
    assert (done.state, done.amount, done.reserved) == ("committed", 250, 1_000)
    assert ledger.usage(AGENT, 3600).spent == {USDC.lower(): 250}
    # 1_250 of room is back
    reserve(ledger, clock, 1_250, "pay-2", limits)
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "pay-3", limits)
    # committing again the same way is a no-op; differently is refused
    assert ledger.commit(r.id, "settled 0xabc", 250) == done
    with pytest.raises(ReservationError, match="already committed"):
        ledger.commit(r.id, "settled 0xabc", 200)
    with pytest.raises(ReservationError, match="cannot be released"):
        ledger.release(r.id, "oops")


def test_transactions_and_payments_share_one_budget(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 3600, 1_000)])
    tx = TransactionIntent.erc20_transfer(
        sender=AGENT, token=USDC, recipient=SHOP, amount=600, chain_id=8453
    )
    pay = PaymentIntent(
        payer=AGENT, scheme="exact", network="base", asset=USDC, amount=401, pay_to=SHOP
    )
    ledger.reserve(tx.from_, tx.spend, key="tx", expires_at=clock.now + 60, limits=limits)
    with pytest.raises(BudgetExceeded, match="600 already reserved or spent \\+ 401"):
        ledger.reserve(pay.payer, pay.spend, key="pay", expires_at=clock.now + 60, limits=limits)


def test_release_gives_room_back_and_is_idempotent(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 60, 100)], rate=[RateCap(60, 1)])
    r = reserve(ledger, clock, 100, "a", limits)
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "b", limits)
    released = ledger.release(r.id, "payment refused by server")
    assert (released.state, released.amount, released.reason) == (
        "released",
        0,
        "payment refused by server",
    )
    assert ledger.release(r.id, "again") == released
    assert reserve(ledger, clock, 100, "b", limits).amount == 100
    with pytest.raises(ReservationError, match="released"):
        ledger.commit(r.id, "0xtx")


def test_expired_unsigned_reservation_is_given_back(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 3600, 100)])
    r = reserve(ledger, clock, 100, "a", limits, ttl=30)
    clock.now += 30
    with pytest.raises(ReservationError, match="expired"):
        ledger.mark_signed(r.id, "0xtx")  # never sign on an expired reservation
    # the next reserve sweeps it: room is back, the old one is released
    reserve(ledger, clock, 100, "b", limits)
    assert ledger.get(r.id).state == "released"
    assert ledger.get(r.id).reason == "expired before it was signed"


def test_signed_reservation_is_never_swept(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 3600, 100)])
    r = reserve(ledger, clock, 100, "a", limits, ttl=30)
    signed = ledger.mark_signed(r.id, "0xtxhash")
    assert ledger.mark_signed(r.id, "0xtxhash") == signed  # idempotent
    with pytest.raises(ReservationError, match="is signed"):
        ledger.mark_signed(r.id, "0xother")
    clock.now += 3000
    with pytest.raises(BudgetExceeded):
        reserve(ledger, clock, 1, "b", limits)
    assert ledger.get(r.id).state == "signed"


def test_bad_ids_and_arguments(ledger: Ledger, clock: Clock) -> None:
    limits = Limits()
    for call in (
        lambda: ledger.commit("nope", "x"),
        lambda: ledger.release("nope", "x"),
        lambda: ledger.mark_signed("nope", "x"),
        lambda: ledger.get("nope"),
    ):
        with pytest.raises(ReservationError, match="no reservation with id 'nope'"):
            call()
    with pytest.raises(ReservationError, match="not in the future"):
        reserve(ledger, clock, 1, "a", limits, ttl=0)
    with pytest.raises(IntentError):
        reserve(ledger, clock, -1, "a", limits)
    with pytest.raises(IntentError):
        reserve(ledger, clock, 2**256, "a", limits)
    with pytest.raises(ReservationError):
        reserve(ledger, clock, 1, "", limits)
    r = reserve(ledger, clock, 5, "a", limits)
    with pytest.raises(ReservationError):
        ledger.commit(r.id, "x", -1)
    with pytest.raises(ConfigurationError):
        ledger.reserve(AGENT, spend(1), key="b", expires_at=clock.now + 9, limits={})  # type: ignore[arg-type]
    assert issubclass(BudgetExceeded, LedgerError) and issubclass(ReservationError, LedgerError)


def test_limits_validate() -> None:
    with pytest.raises(ConfigurationError):
        WindowCap(USDC, 0, 1)
    with pytest.raises(ConfigurationError):
        WindowCap(USDC, 60, -1)
    with pytest.raises(ConfigurationError):
        WindowCap(USDC, 60, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RateCap(60, True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="twice"):
        Limits(per_tx={USDC: 1, USDC.lower(): 2})
    limits = Limits(per_tx={USDC: 5}, windows=[WindowCap(USDC, 5, 5)])
    with pytest.raises(TypeError):
        limits.per_tx[USDC.lower()] = 9  # type: ignore[index]
    assert limits.windows_for(USDC.upper().replace("0X", "0x")) == (WindowCap(USDC, 5, 5),)


def test_survives_restart(tmp_path: object, clock: Clock) -> None:
    path = f"{tmp_path}/ledger.db"
    limits = Limits(windows=[WindowCap(USDC, 3600, 100)])
    with Ledger(path, clock=clock) as first:
        r = reserve(first, clock, 60, "a", limits)
        first.mark_signed(r.id, "0xtx")
    with Ledger(path, clock=clock) as second:
        assert second.get(r.id).reference == "0xtx"
        with pytest.raises(BudgetExceeded, match="60 already"):
            reserve(second, clock, 41, "b", limits)
        assert reserve(second, clock, 40, "b", limits).amount == 40
    with open(path, "rb") as f:
        assert f.read(16) == b"SQLite format 3\x00"


def test_amounts_are_stored_as_text(tmp_path: object, clock: Clock) -> None:
    import sqlite3

    path = f"{tmp_path}/ledger.db"
    with Ledger(path, clock=clock) as ledger:
        reserve(ledger, clock, BIG, "a", Limits(windows=[WindowCap(USDC, 60, BIG)]))
    db = sqlite3.connect(path)
    assert db.execute("SELECT amount, typeof(amount) FROM reservations").fetchone() == (
        str(BIG),
        "text",
    )
    assert db.execute("SELECT total, typeof(total) FROM windows").fetchone() == (str(BIG), "text")


def test_backend_or_path_not_both(tmp_path: object) -> None:
    from agentguard.ledger import SQLiteBackend

    with pytest.raises(ConfigurationError):
        Ledger(f"{tmp_path}/x.db", backend=SQLiteBackend())
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteBackend(synchronous="OFF")  # type: ignore[arg-type]


async def test_async_wrapper(clock: Clock) -> None:
    ledger = AsyncLedger(Ledger(clock=clock))
    limits = Limits(windows=[WindowCap(USDC, 60, 10)])
    r = await ledger.reserve(AGENT, spend(10), key="a", expires_at=clock.now + 5, limits=limits)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(AGENT, spend(1), key="b", expires_at=clock.now + 5, limits=limits)
    await ledger.mark_signed(r.id, "0xtx")

    async def resolver(reservation: object) -> str:
        return "committed"

    report = await ledger.recover(resolver)  # type: ignore[arg-type]
    assert [x.id for x in report.committed] == [r.id]
    assert (await ledger.get(r.id)).state == "committed"
    assert (await ledger.usage(AGENT, 60)).spent == {USDC.lower(): 10}


def test_refusal_messages_hold_no_secrets_only_figures(ledger: Ledger, clock: Clock) -> None:
    limits = Limits(windows=[WindowCap(USDC, 60, 5)])
    with pytest.raises(BudgetExceeded) as info:
        reserve(ledger, clock, 6, "a", limits)
    assert re.search(
        r"60 s window cap for asset 0x833589fcd6edb6e08f4c7c32d4f71b54bda02913", str(info.value)
    )


def test_refusals_carry_fields_an_agent_can_back_off_with() -> None:
    from agentguard import BudgetExceeded, Ledger, Limits, Spend, WindowCap

    now = [1_000.0]
    ledger = Ledger(clock=lambda: now[0])
    asset = "0x" + "ab" * 20
    limits = Limits(windows=[WindowCap(asset, 60, 10)])
    ledger.reserve("agent", Spend(asset=asset, amount=7), key="k1", expires_at=2_000, limits=limits)
    now[0] = 1_010.0
    try:
        ledger.reserve(
            "agent", Spend(asset=asset, amount=5), key="k2", expires_at=2_000, limits=limits
        )
    except BudgetExceeded as exc:
        assert (exc.cap, exc.used, exc.requested) == (10, 7, 5)
        assert exc.retry_at == 1_060.0
    else:
        raise AssertionError("the window cap did not refuse")
