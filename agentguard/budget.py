"""One spend budget in human units, applied twice: as the agent's local ledger limits (checked
before the network is asked) and as the ``agent_spend`` policy's params (enforced by the
operators, whatever the agent host does).

    Budget("20 USDC per day", "5 USDC per call", "10 calls per minute")
    Budget(per_day="20 USDC", per_call="5 USDC", calls_per_minute=10)   # the same budget

Amounts are parsed exactly (``agentguard._units``) into atomic integers on one chain; windows are
rolling ("per day" is any 24 hours, not a calendar day). A rule that contradicts another, or that
could never bind, is a ``ConfigurationError`` saying what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentguard._exceptions import ConfigurationError
from agentguard._units import ETH_ADDRESS, Token, Tokens, parse_amount

if TYPE_CHECKING:
    from agentguard.ledger import Limits

__all__ = ["Budget"]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_ALIASES = {"sec": "second", "min": "minute", "hr": "hour", "h": "hour"}
_INSTEAD = {
    "fortnight": "per 14 days",
    "month": "per 30 days (months differ in length)",
    "year": "per 365 days",
}
_PER_CALL = {"call", "transaction", "tx", "action", "payment"}
_MAX_WINDOW = 31_536_000  # 365 days: the agent_spend schema's bound
_MAX_COUNT = 1_000_000_000
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes "²", which int() refuses
_RULE = re.compile(r"^\s*(?P<what>.+?)\s+per\s+(?P<per>.+?)\s*$", re.IGNORECASE)
_COUNT = re.compile(r"^\s*(?P<n>\S+)\s+(?:calls?|actions?)\s*$", re.IGNORECASE)
_WINDOW = re.compile(r"^(?:(?P<n>\S+)\s+)?(?P<unit>[a-z]+?)s?$", re.IGNORECASE)
_EXAMPLE = (
    "e.g. '20 USDC per day', '5 USDC per call', '0.01 ETH per 6 hours', '10 calls per minute'"
)


def _window(text: str, rule: str) -> int:
    """``"day"`` → 86400, ``"6 hours"`` → 21600; anything else says what to write."""
    match = _WINDOW.match(text.strip())
    unit = match.group("unit").lower() if match else ""
    unit = _ALIASES.get(unit, unit)
    if unit in _INSTEAD:
        raise ConfigurationError(f"{rule!r}: write {_INSTEAD[unit]}")
    if match is None or unit not in _UNITS:
        raise ConfigurationError(
            f"{rule!r}: the window must be call, second, minute, hour, day or week, optionally "
            f"with a whole number ('per 6 hours'); {_EXAMPLE}"
        )
    n_text = match.group("n") or "1"
    if not _DIGITS.fullmatch(n_text):
        raise ConfigurationError(
            f"{rule!r}: a window is a whole positive number of {unit}s "
            "(write 'per 90 minutes', not 'per 1.5 hours')"
        )
    seconds = int(n_text) * _UNITS[unit]
    if seconds <= 0:
        raise ConfigurationError(f"{rule!r}: a window of 0 {unit}s never holds anything")
    if seconds > _MAX_WINDOW:
        raise ConfigurationError(f"{rule!r}: windows longer than 365 days are not supported")
    return seconds


def _window_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0 and (unit != "day" or seconds > 86400):
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    raise AssertionError(seconds)  # pragma: no cover — every int is a number of seconds


def _count(text: str, rule: str) -> int:
    match = _COUNT.match(text)
    if match is None:
        raise ConfigurationError(f"{rule!r} is not a budget rule; {_EXAMPLE}")
    if not _DIGITS.fullmatch(match.group("n")):
        raise ConfigurationError(f"{rule!r}: a number of calls is a whole number >= 0")
    count = int(match.group("n"))
    if count > _MAX_COUNT:
        raise ConfigurationError(f"{rule!r}: at most {_MAX_COUNT} calls per window")
    return count


def _texts(value: object, keyword: str) -> list[str]:
    """A keyword's value: one amount text or several (one per token)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise ConfigurationError(
            f"{keyword}= takes text like '5 USDC' (or a list of them, one per token), got {value!r}"
        )
    return list(items)


@dataclass(frozen=True, init=False, repr=False)
class Budget:
    """Caps per call and per rolling window for each token, and on the number of calls.

    ``chain_id`` says which chain the symbols name (Base by default); ``tokens=`` adds tokens
    (a local test token, another chain's). Frozen, hashable and equal by value, whatever the
    order or form (rules or keywords) it was written in.
    """

    chain_id: int
    call_caps: tuple[tuple[Token, int], ...]
    """(token, atomic cap) per call, sorted."""
    window_caps: tuple[tuple[Token, int, int], ...]
    """(token, window seconds, atomic cap), sorted."""
    rate_caps: tuple[tuple[int, int], ...]
    """(window seconds, number of calls), sorted."""

    def __init__(
        self,
        *rules: str,
        chain_id: int = 8453,
        tokens: Tokens = None,
        per_call: str | Sequence[str] | None = None,
        per_hour: str | Sequence[str] | None = None,
        per_day: str | Sequence[str] | None = None,
        per_week: str | Sequence[str] | None = None,
        calls_per_minute: int | None = None,
        calls_per_hour: int | None = None,
        calls_per_day: int | None = None,
    ) -> None:
        if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
            raise ConfigurationError(f"chain_id must be a positive int, got {chain_id!r}")
        caps: list[tuple[str, Token, int | None, int]] = []  # (rule, token, window|None, atomic)
        rates: list[tuple[str, int, int]] = []

        def amount(text: str, rule: str) -> tuple[Token, int]:
            if text.lstrip().startswith("-"):
                raise ConfigurationError(f"{rule!r}: a cap is never negative; write e.g. '5 USDC'")
            parsed = parse_amount(text, chain_id, tokens)
            return parsed.token, parsed.atomic

        for rule in self._split(rules):
            match = _RULE.match(rule)
            if match is None:
                raise ConfigurationError(f"{rule!r} is not a budget rule; {_EXAMPLE}")
            what, per = match.group("what"), match.group("per").strip()
            if _COUNT.match(what):
                if per.lower() in _PER_CALL:
                    raise ConfigurationError(f"{rule!r}: count calls per window, e.g. per minute")
                rates.append((rule, _window(per, rule), _count(what, rule)))
                continue
            window = None if per.lower() in _PER_CALL else _window(per, rule)
            token, atomic = amount(what, rule)
            caps.append((rule, token, window, atomic))
        for keyword, value, window in (
            ("per_call", per_call, None),
            ("per_hour", per_hour, 3600),
            ("per_day", per_day, 86400),
            ("per_week", per_week, 604800),
        ):
            for text in _texts(value, keyword):
                rule = f"{keyword}={text!r}"
                token, atomic = amount(text, rule)
                caps.append((rule, token, window, atomic))
        for keyword, count, seconds in (
            ("calls_per_minute", calls_per_minute, 60),
            ("calls_per_hour", calls_per_hour, 3600),
            ("calls_per_day", calls_per_day, 86400),
        ):
            if count is None:
                continue
            if type(count) is not int or not 0 <= count <= _MAX_COUNT:
                raise ConfigurationError(
                    f"{keyword}= takes a whole number of calls (0..{_MAX_COUNT}), got {count!r}"
                )
            rates.append((f"{keyword}={count}", seconds, count))
        if not caps and not rates:
            raise ConfigurationError(f"a Budget needs at least one rule; {_EXAMPLE}")
        object.__setattr__(self, "chain_id", chain_id)
        object.__setattr__(self, "call_caps", _per_call(caps))
        object.__setattr__(self, "window_caps", _windows(caps))
        object.__setattr__(self, "rate_caps", _rates(rates))
        self._check_reachable()

    @staticmethod
    def _split(rules: Iterable[object]) -> list[str]:
        out: list[str] = []
        for rule in rules:
            if not isinstance(rule, str):
                raise ConfigurationError(f"a budget rule is text; {_EXAMPLE}; got {rule!r}")
            out.extend(part.strip() for part in re.split(r"[;\n]", rule) if part.strip())
        return out

    def _check_reachable(self) -> None:
        """A cap that a tighter one always pre-empts is a mistake in the budget, not a rule."""
        for token, per_call in self.call_caps:
            for t, seconds, cap in self.window_caps:
                if t == token and per_call > cap:
                    raise ConfigurationError(
                        f"{token.human(per_call)} per call is more than "
                        f"{token.human(cap)} per {_window_text(seconds)} allows in total; "
                        f"write at most {token.human(cap)} per call, or drop the per-call cap"
                    )
        for (t1, s1, c1), (t2, s2, c2) in zip(self.window_caps, self.window_caps[1:], strict=False):
            if t1 == t2 and s1 < s2 and c1 >= c2:
                raise ConfigurationError(
                    f"{t1.human(c1)} per {_window_text(s1)} can never bind under "
                    f"{t2.human(c2)} per {_window_text(s2)}; a shorter window needs a smaller "
                    f"cap (or drop it)"
                )
        for (s1, c1), (s2, c2) in zip(self.rate_caps, self.rate_caps[1:], strict=False):
            if c1 >= c2:
                raise ConfigurationError(
                    f"{c1} calls per {_window_text(s1)} can never bind under {c2} calls per "
                    f"{_window_text(s2)}; a shorter window needs a smaller count (or drop it)"
                )

    # -- what the budget is, three ways ------------------------------------------------------

    def rules(self) -> list[str]:
        """The budget as canonical rule texts: ``Budget(*b.rules(), chain_id=...)`` == ``b``
        (for a token outside the known ones, pass the same ``tokens=``)."""
        return [
            *(f"{t.human(a)} per call" for t, a in self.call_caps),
            *(f"{t.human(a)} per {_window_text(s)}" for t, s, a in self.window_caps),
            *(f"{n} calls per {_window_text(s)}" for s, n in self.rate_caps),
        ]

    def describe(self) -> list[str]:
        """One line per rule, for people and for models reading a refusal."""
        return [f"at most {rule}" for rule in self.rules()]

    @property
    def tokens(self) -> tuple[Token, ...]:
        """The tokens this budget caps; every other asset is refused by ``params()``."""
        seen = dict.fromkeys([t for t, _ in self.call_caps] + [t for t, _, _ in self.window_caps])
        return tuple(sorted(seen, key=lambda t: (t.symbol, t.address)))

    def limits(self) -> Limits:
        """The caps for the local ledger, in atomic units (checked before the network is asked)."""
        from agentguard.ledger import Limits, RateCap, WindowCap

        return Limits(
            per_tx={t.address: a for t, a in self.call_caps},
            windows=[WindowCap(t.address, s, a) for t, s, a in self.window_caps],
            rate=[RateCap(s, n) for s, n in self.rate_caps],
            units={t.address: t for t in self.tokens},
        )

    def params(self) -> dict[str, Any]:
        """Params for the bundled ``agent_spend`` policy enforcing the same budget.

        ``max_per_tx`` names every budgeted token (its per-call cap, else its smallest window
        cap: no one call can spend more anyway), so ``tx_cap`` refuses any other asset that
        moves; a budget naming no token caps ETH at 0 (it allows calls that move nothing).
        Merge further keys (``allowed_recipients``, ``allowed_functions``, ``offchain_calls``
        for the agent's offchain tools…) into the result: a budget knows no tool names.
        """
        per_tx = {t.address: a for t, a in self.call_caps}
        for t, _, a in self.window_caps:
            per_tx[t.address] = min(a, per_tx.get(t.address, a))
        if not per_tx:
            per_tx[ETH_ADDRESS] = 0
        params: dict[str, Any] = {"max_per_tx": {k: str(v) for k, v in sorted(per_tx.items())}}
        if self.window_caps:
            params["window_caps"] = [
                {"asset": t.address, "window_seconds": s, "max_amount": str(a)}
                for t, s, a in self.window_caps
            ]
        if self.rate_caps:
            params["rate_limits"] = [
                {"window_seconds": s, "max_count": n} for s, n in self.rate_caps
            ]
        return params

    def __repr__(self) -> str:
        rules = ", ".join(repr(r) for r in self.rules())
        return f"Budget({rules}, chain_id={self.chain_id})"


def _per_call(caps: list[tuple[str, Token, int | None, int]]) -> tuple[tuple[Token, int], ...]:
    seen: dict[Token, tuple[str, int]] = {}
    for rule, token, window, atomic in caps:
        if window is not None:
            continue
        if token in seen:
            raise ConfigurationError(
                f"two per-call caps for {token.symbol} ({seen[token][0]!r} and {rule!r}); "
                f"keep one, e.g. '{token.human(min(atomic, seen[token][1]))} per call'"
            )
        seen[token] = (rule, atomic)
    return tuple(sorted(((t, a) for t, (_, a) in seen.items()), key=lambda x: _order(x[0])))


def _windows(
    caps: list[tuple[str, Token, int | None, int]],
) -> tuple[tuple[Token, int, int], ...]:
    seen: dict[tuple[Token, int], tuple[str, int]] = {}
    for rule, token, window, atomic in caps:
        if window is None:
            continue
        if (token, window) in seen:
            raise ConfigurationError(
                f"two caps for {token.symbol} per {_window_text(window)} "
                f"({seen[token, window][0]!r} and {rule!r}); keep one"
            )
        seen[token, window] = (rule, atomic)
    return tuple(
        sorted(((t, s, a) for (t, s), (_, a) in seen.items()), key=lambda x: (*_order(x[0]), x[1]))
    )


def _rates(rates: list[tuple[str, int, int]]) -> tuple[tuple[int, int], ...]:
    seen: dict[int, tuple[str, int]] = {}
    for rule, seconds, count in rates:
        if seconds in seen:
            raise ConfigurationError(
                f"two call counts per {_window_text(seconds)} ({seen[seconds][0]!r} and "
                f"{rule!r}); keep one"
            )
        seen[seconds] = (rule, count)
    return tuple(sorted((s, n) for s, (_, n) in seen.items()))


def _order(token: Token) -> tuple[str, str]:
    return token.symbol, token.address
