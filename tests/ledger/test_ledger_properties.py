"""Stateful property test: the ledger agrees with a naive model on every grant and refusal,
and what it counts in any window never exceeds that window's cap."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from agentguard._exceptions import BudgetExceeded, ReservationError
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, Reservation, WindowCap

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
WETH = "0x4200000000000000000000000000000000000006"
AGENTS = ("0x1111111111111111111111111111111111111111", "bot-b")
PER_TX = 2**129
WINDOWS = (
    WindowCap(USDC, 60, 2**130),
    WindowCap(USDC, 200, 2**130 + 2**129),
    WindowCap(WETH, 100, 3 * 2**128),
)
RATE = RateCap(100, 6)
LIMITS = Limits(per_tx={USDC: PER_TX}, windows=WINDOWS, rate=[RATE])
LENGTHS = (60, 100, 200)


@dataclass
class Row:
    id: str
    agent: str
    asset: str
    created: float
    expires: float
    reserved: int
    amount: int
    state: str
    outcome: tuple[str, int] | None = None


class LedgerMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")
    # SQLite rolls a refused reserve back and the memory backend undoes it: the holds past
    # their expiry it gave back on the way count again. Redis's script cannot roll back: a
    # refusal by a window or rate cap (checked after the sweep) leaves them given back, which
    # any next call would do anyway (an unsigned hold past its expiry can never be signed).
    refusal_undoes_the_sweep = True

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_764_000_000.0
        self.ledger = Ledger(clock=lambda: self.now)
        self.rows: dict[str, Row] = {}
        self.keys = 0

    # -- the naive model -------------------------------------------------------------------

    def counted(self, agent: str, seconds: int) -> list[Row]:
        return [
            r
            for r in self.rows.values()
            if r.agent == agent and r.state != "released" and r.created > self.now - seconds
        ]

    def fits(self, agent: str, asset: str, amount: int) -> bool:
        if asset == USDC and amount > PER_TX:
            return False
        for w in WINDOWS:
            used = sum(r.amount for r in self.counted(agent, w.window_seconds) if r.asset == asset)
            if w.asset == asset and used + amount > w.max_amount:
                return False
        return len(self.counted(agent, RATE.window_seconds)) + 1 <= RATE.max_count

    # -- rules -----------------------------------------------------------------------------

    @rule(
        target=reservations,
        agent=st.sampled_from(AGENTS),
        asset=st.sampled_from((USDC, WETH)),
        # mostly large amounts, so the caps bind often (two of 2^129 fill the 60 s window)
        amount=st.one_of(
            st.sampled_from([0, 1, 2**128, 2**129 - 1, 2**129, 2**129 + 1]),
            st.integers(0, 2**129 + 5),
        ),
        ttl=st.integers(1, 120),
    )
    def reserve(self, agent: str, asset: str, amount: int, ttl: int) -> str:
        self.keys += 1
        swept = [r for r in self.rows.values() if r.state == "reserved" and r.expires <= self.now]
        for r in swept:
            r.state, r.amount = "released", 0
        expected = self.fits(agent, asset, amount)
        try:
            got = self.ledger.reserve(
                agent,
                Spend(asset=asset, amount=amount),
                key=f"k{self.keys}",
                expires_at=self.now + ttl,
                limits=LIMITS,
            )
        except BudgetExceeded:
            assert not expected, "ledger refused what fits"
            per_tx = asset == USDC and amount > PER_TX  # refused before any sweep
            if self.refusal_undoes_the_sweep or per_tx:
                for r in swept:  # a refusal changes nothing
                    r.state, r.amount = "reserved", r.reserved
            return "refused"
        assert expected, "ledger granted what does not fit"
        assert (got.amount, got.state, got.created_at) == (amount, "reserved", self.now)
        self.rows[got.id] = Row(
            got.id, got.agent, asset, self.now, self.now + ttl, amount, amount, "reserved"
        )
        return got.id

    @rule(rid=reservations)
    def reserve_same_key_again(self, rid: str) -> None:
        if rid not in self.rows:
            return
        first = self.ledger.get(rid)
        again = self.ledger.reserve(
            first.agent,
            Spend(asset=first.asset, amount=first.reserved),
            key=first.key,
            expires_at=self.now + 10,
            limits=LIMITS,
        )
        assert again == first

    def expect(self, rid: str, ok: bool, call: object) -> Reservation | None:
        try:
            result = call()  # type: ignore[operator]
        except ReservationError:
            assert not ok or rid not in self.rows
            return None
        assert ok
        assert isinstance(result, Reservation)
        return result

    @rule(rid=reservations)
    def mark_signed(self, rid: str) -> None:
        row = self.rows.get(rid)
        ok = row is not None and (
            row.state == "signed" or (row.state == "reserved" and self.now < row.expires)
        )
        if self.expect(rid, ok, lambda: self.ledger.mark_signed(rid, "ref-" + rid)) and row:
            row.state = "signed"

    @rule(rid=reservations, quarters=st.one_of(st.none(), st.integers(0, 4)))
    def commit(self, rid: str, quarters: int | None) -> None:
        row = self.rows.get(rid)
        amount = None if quarters is None or row is None else row.reserved * quarters // 4
        final = (row.reserved if amount is None else amount) if row else 0
        ok = row is not None and (
            row.state in ("reserved", "signed")
            or (row.state == "committed" and row.outcome == ("done", final))
        )
        got = self.expect(rid, ok, lambda: self.ledger.commit(rid, "done", amount))
        if got is not None and row is not None:
            assert got.amount == final
            row.state, row.amount, row.outcome = "committed", final, ("done", final)

    @rule(rid=reservations)
    def release(self, rid: str) -> None:
        row = self.rows.get(rid)
        ok = row is not None and row.state != "committed"
        if self.expect(rid, ok, lambda: self.ledger.release(rid, "not needed")) and row:
            row.state, row.amount = "released", 0

    @rule(seconds=st.sampled_from([0, 1, 7, 30, 59, 60, 61, 100, 150]))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def ledger_counts_what_the_model_counts(self) -> None:
        for agent in AGENTS:
            for seconds in LENGTHS:
                usage = self.ledger.usage(agent, seconds)
                rows = self.counted(agent, seconds)
                spent: dict[str, int] = {}
                for r in rows:
                    spent[r.asset] = spent.get(r.asset, 0) + r.amount
                assert (usage.count, usage.spent) == (len(rows), spent)

    @invariant()
    def no_window_ever_exceeds_its_cap(self) -> None:
        for agent in AGENTS:
            for w in WINDOWS:
                spent = self.ledger.usage(agent, w.window_seconds).spent.get(w.asset, 0)
                assert spent <= w.max_amount
            assert self.ledger.usage(agent, RATE.window_seconds).count <= RATE.max_count


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestLedgerModel = LedgerMachine.TestCase
