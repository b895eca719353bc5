"""The ledger and the used-attestation record on Redis, for many processes and hosts.

* Every change is one Lua script (``_redis.lua``): Redis runs a script alone, so the cap check
  and the insert in ``reserve`` are one atomic step across every client.
* Rolling sums are kept, not rescanned: per agent, asset and window length a sorted set of the
  reservations still counted in that window (scored by creation time) and their exact total.
  Rolling pops what left the window and subtracts it, so a reserve costs amortised O(1).
  Amounts are decimal strings added in the script in base-10^7 limbs: exact to 2^256.
* ``bind``, ``mark_signed``, ``commit`` and ``release`` are checked here (``_transitions``) and
  applied by the script only if the reservation's version is still the one checked
  (compare-and-set; on a race the check runs again).
* Keys share one hash tag (``{namespace}:…``), so the whole ledger lives on one shard; the
  script names no keys up front, so it is for one Redis (with replicas), not Redis Cluster.
* Redis must persist every write before it acknowledges it (``appendonly yes`` with
  ``appendfsync always``): opening checks that (``CONFIG GET``) and refuses any other setup
  (``ConfigurationError``), since a Redis that restarts from an older state forgets the spends
  made after it. A server that hides ``CONFIG`` (managed services) is refused unless the URL says
  ``?durability=trusted`` (its operator vouches for the setting).
* A client notices a Redis that restarted empty (the ledger's random epoch key is gone or
  different) and refuses from then on, rather than counting from zero. Only a client opened
  with ``create=True`` makes the epoch; every other refuses a namespace without one (a new
  worker cannot tell a new ledger from one that lost its data).
* Every script call bumps the namespace's write sequence and each client remembers the highest
  it saw: a Redis whose sequence went back (restored from an older snapshot, a failover to a
  lagging replica) is caught by the first client that saw a later one, which poisons the epoch
  so every client and every later open refuses (``LedgerRolledBack``) until a person decides.
* A shared window row is rolled for good only up to the server's ``TIME``: a client whose
  clock runs ahead gets its own further-rolled view, never moves the row for everyone.
* A refused connection, a timeout, a restarting server: ``LedgerUnavailable`` (whether the call
  took effect is unknown; a reservation it may have made counts until it expires or is
  settled). redis-py reconnects on the next call.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from agentguard._exceptions import (
    AttestationReplayed,
    BudgetExceeded,
    ConfigurationError,
    LedgerRolledBack,
    LedgerUnavailable,
    ReservationError,
)
from agentguard._redact import register_secret
from agentguard.ledger._backend import ReserveRequest, Usage
from agentguard.ledger._limits import Limits, per_tx_refusal, rate_refusal, window_refusal
from agentguard.ledger._reservation import Reservation
from agentguard.ledger._transitions import (
    check_bind,
    check_commit,
    check_mark_signed,
    check_release,
    check_same_spend,
    replayed_message,
)

__all__ = ["RedisBackend", "RedisReplayGuard"]

_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SCRIPT = (Path(__file__).with_name("_redis.lua")).read_text()
_T = TypeVar("_T")
_NOT_UTF8 = "the ledger stores text as UTF-8; this call's text is not (a lone surrogate)"
_FOREVER = 10 * 365 * 86_400  # claims meant to last longer than this are kept without a TTL


def _durability(url: str) -> tuple[str, bool]:
    """The URL without ``durability=trusted`` (agentguard's, not redis-py's), and whether it
    was there."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    durability = [v for k, v in query if k == "durability"]
    if durability not in ([], ["trusted"]):
        raise ConfigurationError("durability in a Redis ledger URL can only be 'trusted'")
    rest = urlencode([(k, v) for k, v in query if k != "durability"], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), bool(durability)


def _pairs(flat: Sequence[Any]) -> zip[tuple[Any, Any]]:
    return zip(flat[::2], flat[1::2], strict=True)


def _reservation(flat: Sequence[str]) -> Reservation:
    f = dict(_pairs(flat))
    return Reservation(
        id=f["id"],
        key=f["id"],
        agent=f["agent"],
        asset=f["asset"],
        amount=int(f["amount"]),
        reserved=int(f["reserved"]),
        recipient=f.get("recipient"),
        state=f["state"],
        created_at=float(f["created_at"]),
        expires_at=float(f["expires_at"]),
        updated_at=float(f["updated_at"]),
        reference=f.get("reference"),
        outcome=f.get("outcome"),
        reason=f.get("reason"),
        action=f["actions"] == "1",
        task_id=f.get("task_id"),
    )


class _Redis:
    """A redis-py client (it reconnects by itself, and after a fork) and the ledger script."""

    def __init__(self, url: str, namespace: str) -> None:
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "a redis:// ledger needs redis-py: pip install 'agentguard[redis]'"
            ) from None
        url, self._trusted = _durability(url)
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                "namespace must be a lowercase identifier (a-z, 0-9, _; at most 63 characters)"
            )
        self._error: type[Exception] = redis.RedisError
        self._refused: type[Exception] = redis.ResponseError
        try:
            self.client: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=10,
                socket_connect_timeout=5,
                # a dropped connection is retried on a new one (every call is idempotent); a
                # server that stays down is LedgerUnavailable within a second
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            )
            pool_kwargs = self.client.connection_pool.connection_kwargs
        except (ValueError, redis.RedisError):
            raise ConfigurationError("the Redis ledger URL is malformed") from None
        if pool_kwargs.get("password"):
            register_secret(str(pool_kwargs["password"]))
        self.where = f"{pool_kwargs.get('host', 'localhost')}:{pool_kwargs.get('port', 6379)}"
        self.prefix = "{" + namespace + "}:"
        self._script = self.client.register_script(_SCRIPT)
        self.epoch = ""
        self.seen = 0  # the highest write sequence this client has seen (rollback detection)

    def run(self, body: Callable[[], _T]) -> _T:
        try:
            return body()
        except UnicodeError:  # a lone surrogate in caller text
            raise ReservationError(_NOT_UTF8) from None
        except self._error as exc:
            raise LedgerUnavailable(
                f"the Redis ledger at {self.where} failed ({type(exc).__name__}); "
                "the call may or may not have taken effect"
            ) from None

    def script(self, op: str, *args: object) -> Any:
        argv = [self.prefix, self.epoch, str(self.seen), op, *map(str, args)]
        answer = self.run(lambda: self._script(args=argv))
        if answer[0] == "rolledback":
            raise self._rolled_back(
                f"its write sequence is {answer[1]}, this process saw {self.seen}"
            )
        if answer[0] == "lost":
            raise LedgerUnavailable(
                f"the Redis ledger at {self.where} lost its data (its epoch changed since this "
                "process opened it: a restart without persistence, a failover to an empty "
                "replica, or another client found it rolled back); every counted spend may be "
                "gone, so nothing more is reserved here. "
                "Restore the data, or restart the agents to start a new budget knowingly"
            )
        self.seen = max(self.seen, int(answer[0]))
        return answer[1]

    def _rolled_back(self, evidence: str) -> LedgerRolledBack:
        return LedgerRolledBack(
            f"the Redis ledger at {self.where} went back in time ({evidence}): it was restored "
            "from an older snapshot or failed over to a replica that lagged, so the spends made "
            "after that point are forgotten; every client of this namespace now refuses"
        )

    def check_durability(self) -> None:
        """Refuse a Redis that may acknowledge a write it then loses in a crash: without an
        append-only file fsynced on every write, a restart comes back with older totals."""
        if self._trusted:
            return
        try:
            found = self.client.config_get("append*")
        except self._refused:  # unknown command, NOPERM; a down server is LedgerUnavailable
            raise ConfigurationError(
                f"the Redis ledger at {self.where} does not let this client read its persistence "
                "settings (CONFIG GET is refused)",
                hint="Make sure it runs with appendonly yes and appendfsync always, then add "
                "durability=trusted to the ledger URL. Nothing was signed.",
            ) from None
        if found.get("appendonly") != "yes" or found.get("appendfsync") != "always":
            raise ConfigurationError(
                f"the Redis ledger at {self.where} runs with appendonly "
                f"{found.get('appendonly')!s:.8} and appendfsync {found.get('appendfsync')!s:.8}: "
                "a crash can bring it back with older totals and forget the spends made since",
                hint="Configure it with appendonly yes and appendfsync always (redis.conf or "
                "CONFIG SET + CONFIG REWRITE). Nothing was signed.",
            )

    def open_epoch(self, create: bool) -> None:
        """The ledger's epoch: made once, by the client told to ``create`` it, then read by
        every other. A missing epoch is never made silently: a Redis that lost its data looks
        exactly like a new one, and a worker started after the loss would spend it all again."""
        self.run(self.check_durability)
        key = self.prefix + "epoch"
        if create:
            self.run(lambda: self.client.set(key, uuid.uuid4().hex, nx=True))
        self.epoch, seen = self.run(lambda: self.client.mget(key, self.prefix + "wseq"))
        self.seen = int(seen or 0)
        if self.epoch is not None and self.epoch.startswith("rolled-back:"):
            raise self._rolled_back("a client found its write sequence lower than it had seen")
        if self.epoch is None:
            raise ConfigurationError(
                f"the Redis ledger at {self.where} has no epoch in namespace "
                f"{self.prefix[1:-2]!r}: it was never created, or Redis lost its data",
                hint="If this is a new ledger, open it once with open_ledger(url, create=True) "
                "in your setup step. If Redis lost its data, every counted spend is gone: "
                "restore it, or create a new budget knowingly. Nothing was signed.",
            )

    def close(self) -> None:
        self.client.close()


class RedisBackend:
    """``LedgerBackend`` on one Redis (or one shard), shared by every process and host."""

    def __init__(self, url: str, *, namespace: str = "agentguard", create: bool = False) -> None:
        self._redis = _Redis(url, namespace)
        self._redis.open_epoch(create)  # reachable and created now, or a clear error now

    def _hash(self, reservation_id: str) -> list[str]:
        flat = self._redis.run(
            lambda: self._redis.client.hgetall(self._redis.prefix + "r:" + reservation_id)
        )
        if not flat:
            raise ReservationError(f"no reservation with id {reservation_id!r} in this ledger")
        return ["id", reservation_id, *(x for kv in flat.items() for x in kv)]

    def _load(self, reservation_id: str) -> tuple[Reservation, str]:
        flat = self._hash(reservation_id)
        return _reservation(flat), dict(_pairs(flat))["v"]

    def _apply(
        self, reservation_id: str, decide: Callable[[Reservation], Reservation | tuple[Any, ...]]
    ) -> Reservation:
        """Check, then apply if unchanged meanwhile; ``decide`` returns the reservation to hand
        back unchanged, or the script's operation and its arguments."""
        while True:
            r, version = self._load(reservation_id)
            step = decide(r)
            if isinstance(step, Reservation):
                return step
            op, *args = step
            answer = self._redis.script(op, reservation_id, version, *args)
            if answer[0] == "ok":
                return _reservation(["id", reservation_id, *answer[1]])
            if answer[0] == "replayed":
                raise AttestationReplayed(replayed_message(args[0], answer[1]))

    # -- LedgerBackend -----------------------------------------------------------------------

    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        agent, asset, amount = request.agent, request.asset, request.amount
        windows = limits.windows_for(asset)
        rates = limits.rate
        cap = limits.per_tx.get(asset)
        answer = self._redis.script(
            "reserve",
            request.key,
            agent,
            asset,
            amount,
            "" if request.recipient is None else "=" + request.recipient,
            repr(request.expires_at),
            repr(float(now)),
            int(request.action),
            "" if cap is None else cap,
            len(windows),
            *(x for w in windows for x in (w.window_seconds, w.max_amount)),
            len(rates),
            *(x for c in rates for x in (c.window_seconds, c.max_count)),
        )
        if answer[0] == "existing":
            return check_same_spend(_reservation(["id", request.key, *answer[1]]), request)
        if answer[0] == "ok":
            return _reservation(["id", request.key, *answer[1]])
        if answer[0] == "per_tx" and cap is not None:
            raise per_tx_refusal(agent, asset, amount, cap, limits.amount_text(asset))
        raise self._refusal(request, limits, answer, now)

    def _refusal(
        self, request: ReserveRequest, limits: Limits, answer: list[Any], now: float
    ) -> BudgetExceeded:
        """The refusal, worded from the window's members read after the script (oldest first,
        a page at a time, only as far as needed to say when room frees up: advisory). A caller
        whose clock is ahead of the server's sees members its ``now`` already left behind: skip
        them, as the script did for its check."""
        agent, asset = request.agent, request.asset
        if answer[0] == "window":
            window = limits.windows_for(asset)[int(answer[1]) - 1]
            members = self._members(answer[3], after=now - window.window_seconds)
            in_window = ((at, int(f[0])) for _, at, f in members if f[0] is not None)
            return window_refusal(
                agent,
                window,
                int(answer[2]),
                request.amount,
                in_window,
                now,
                limits.amount_text(asset),
            )
        rate = limits.rate[int(answer[1]) - 1]
        members = self._members(answer[3], after=now - rate.window_seconds)
        return rate_refusal(
            agent, rate, int(answer[2]), (at for _, at, f in members if f[1] == "1"), now
        )

    def _members(
        self, window_key: str, after: float, page: int = 8
    ) -> Iterator[tuple[str, float, list[Any]]]:
        client, prefix = self._redis.client, self._redis.prefix
        start = 0
        while True:
            batch: list[Any] = self._redis.run(
                partial(client.zrange, window_key, start, start + page - 1, withscores=True)
            )
            pipe = client.pipeline(transaction=False)
            for member, _ in batch:
                pipe.hmget(prefix + "r:" + member, "amount", "actions")
            fields = self._redis.run(pipe.execute) if batch else []
            for (member, at), f in zip(batch, fields, strict=True):
                if float(at) > after:
                    yield member, float(at), f
            if len(batch) < page:
                return
            start += page
            page = min(page * 4, 1024)  # the first few usually say when room frees up

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        def decide(r: Reservation) -> Reservation | tuple[Any, ...]:
            same = check_bind(r, task_id, expires_at, now)
            return same if same is not None else ("bind", task_id, repr(expires_at), repr(now))

        return self._apply(reservation_id, decide)

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        def decide(r: Reservation) -> Reservation | tuple[Any, ...]:
            same = check_mark_signed(r, reference, now)
            return same if same is not None else ("mark_signed", reference, repr(now))

        return self._apply(reservation_id, decide)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        def decide(r: Reservation) -> Reservation | tuple[Any, ...]:
            same, final = check_commit(r, outcome, amount)
            return same if same is not None else ("commit", outcome, final, repr(now))

        return self._apply(reservation_id, decide)

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        def decide(r: Reservation) -> Reservation | tuple[Any, ...]:
            same = check_release(r)
            return same if same is not None else ("release", reason, repr(now))

        return self._apply(reservation_id, decide)

    def get(self, reservation_id: str) -> Reservation:
        return _reservation(self._hash(reservation_id))

    def expire(self, now: float) -> list[Reservation]:
        flat = self._redis.script("expire", repr(float(now)))  # id, fields, id, fields, …
        return [
            _reservation(["id", i, *fields])
            for i, fields in zip(flat[::2], flat[1::2], strict=True)
        ]

    def signed(self) -> list[Reservation]:
        ids = self._redis.run(
            lambda: self._redis.client.zrange(self._redis.prefix + "signed", 0, -1)
        )
        return [self.get(i) for i in ids]

    def usage(self, agent: str, window_seconds: int, now: float) -> Usage:
        client, prefix = self._redis.client, self._redis.prefix

        def read() -> list[Any]:
            ids: list[str] = client.zrangebyscore(
                f"{prefix}a:{len(agent.encode())}:{agent}", f"({now - window_seconds!r}", "+inf"
            )
            pipe = client.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(prefix + "r:" + i, "state", "asset", "amount", "actions")
            return list(pipe.execute())

        spent: dict[str, int] = {}
        count = 0
        for state, asset, amount, actions in self._redis.run(read):
            if state != "released":
                spent[asset] = spent.get(asset, 0) + int(amount)
                count += int(actions)
        return Usage(count=count, spent=spent)

    def close(self) -> None:
        self._redis.close()


class RedisReplayGuard:
    """``ReplayGuard`` on Redis: ``SET NX`` claims a task id once across every client; the key
    lives a day past the attestation's expiry (Redis's clock may run a little ahead). Like the
    ledger, it refuses (``LedgerUnavailable``) once Redis lost its data: a forgotten claim
    would let a used attestation verify again."""

    def __init__(
        self, url: str, *, namespace: str = "agentguard", keep: int = 86_400, create: bool = False
    ) -> None:
        self._redis = _Redis(url, namespace)
        self._keep = keep
        self._redis.open_epoch(create)

    def claim(self, task_id: bytes, expires_at: int) -> bool:
        keep_until = max(int(expires_at), int(time.time())) + self._keep
        until = "" if keep_until > time.time() + _FOREVER else keep_until
        return bool(self._redis.script("claim", bytes(task_id).hex(), until)[0] == "claimed")

    def close(self) -> None:
        self._redis.close()
