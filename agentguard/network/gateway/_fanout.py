"""Hedged fan-out: ask a quorum's worth of operators, widen when needed, count valid votes.

A vote counts only if the operator's signature recovers to its registered key over the digest
the gateway computes itself for this task (decision and trust tier included); the first
(decision, tier) a quorum agrees on wins. Operators are asked in rotation (so load and fault
reports spread); the rest are asked too when one fails, when they disagree, or when the
answers are slower than usual. "Usual" is a moving average of how long the answers of each
quorum took, each answer timed from when its operator was asked: an operator asked after the
hedge is not charged the hedge's wait, else one operator that never answers (accepting the
connection) would feed every task's hedge into the average, raising the next hedge, until its
tasks wait out their timeout and fail (a quorum that should tolerate it, denied by it). On a
small host every extra evaluation competes for the same cores; a healthy quorum never needs
it. The operators of one operator host asked at the same moment are asked in one call
(``call_host``): one evaluation, one vote per key, each counted and checked as its own; a slow
or failing host delays or fails all of them. Every call goes through its operator's or its
host's queue (``_batching``): at once when nothing is in flight to it, else with the other
tasks waiting for it, in one message.

An allow at a trust tier above standard (``agentguard._tiers``) never returns at the standard
quorum: every operator is asked at once and the gateway waits for all of them (until the
task's timeout), so the attestation carries as many signatures as the tier can get. Tiers
``all`` and ``human`` need every operator: short of that the task fails
(``quorum_not_reached``, with the tier), and nothing is attested. Tier ``high``'s threshold is
the client's and the vault's to judge (they are configured with it, the gateway is not); it
needs at least the standard quorum here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentguard._attestation import attestation_digest, recover_signer
from agentguard._exceptions import MalformedSignature
from agentguard._tiers import ALL, STANDARD, known, level, tier_name
from agentguard.network._rpc import MAX_HOST_KEYS, POLICY_EVALUATION_ERROR, RPCError
from agentguard.network.gateway._batching import LinkQueue
from agentguard.network.gateway._operators import (
    Bodies,
    OperatorFailure,
    OperatorLink,
    operator_error,
    task_members,
)
from agentguard.network.gateway._params import HEX
from agentguard.network.gateway._validation import TaskInput

__all__ = ["HEDGE_MIN", "FanOut", "Outcome", "Vote", "vote"]

HEDGE_MIN = 0.05  # seconds before a slow quorum is widened to every operator
# The hedge never waits past this share of a task's timeout: an operator that answers each
# task just before its hedge (valid, so counted) raises the average about 1.2x a task, and
# once the hedge outlasted the timeout it could go silent and deny quorums the others form.
HEDGE_SHARE = 0.25
_DECISIONS = ("allow", "deny", "approval_required")


@dataclass
class Vote:
    link: OperatorLink
    reasons: list[str]
    signature: str


@dataclass
class Outcome:
    """A quorum's ``decision`` and its votes, or ``failure`` (why no quorum); the operator
    errors seen on the way, in Newton's shape."""

    decision: str | None
    votes: list[Vote]
    errors: list[dict[str, Any]]
    failure: str | None
    tier: int | None = 0
    """The signed trust tier of ``decision``; on a failure, the elevated tier whose threshold
    was not reached (``None`` when no tier was involved)."""


def vote(
    link: OperatorLink,
    reply: Any,
    *,
    intent_hash_hex: str,
    policy_id_hex: str,
    digests: Mapping[tuple[bool, int], bytes],
) -> tuple[tuple[str, int], Vote]:
    """Accept an operator's answer only if its signature verifies against our digest."""
    if not isinstance(reply, dict):
        raise OperatorFailure("invalid_response", "result is not an object", retryable=False)
    decision = reply.get("decision")
    if decision not in _DECISIONS:
        raise OperatorFailure(
            "invalid_response", f"unknown decision {decision!r:.40}", retryable=False
        )
    if str(reply.get("intent_hash", "")).lower() != intent_hash_hex:
        raise OperatorFailure("mismatch", "operator evaluated a different intent", retryable=False)
    if str(reply.get("policy_id", "")).lower() != policy_id_hex:
        raise OperatorFailure(
            "mismatch",
            "operator computed a different policy id (different policy code or params)",
            retryable=False,
        )
    tier = reply.get("tier", 0)
    if not known(tier):
        raise OperatorFailure(
            "invalid_response", f"unknown trust tier {tier!r:.40}", retryable=False
        )
    reasons = reply.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise OperatorFailure(
            "invalid_response", "reasons must be a list of strings", retryable=False
        )
    signature = reply.get("signature")
    try:
        raw = _signature_bytes(signature)
        signer = recover_signer(digests[decision == "allow", tier], raw)
    except MalformedSignature as exc:
        raise OperatorFailure("bad_signature", exc.message, retryable=False) from None
    if signer != link.address_bytes:
        raise OperatorFailure(
            "bad_signature",
            f"signature recovers to 0x{signer.hex()}, not to the operator's registered key",
            retryable=False,
        )
    return (decision, tier), Vote(link, [r[:500] for r in reasons[:32]], "0x" + raw.hex())


def _signature_bytes(signature: Any) -> bytes:
    """The bytes of a hex signature (``HEX``: ``0x`` optional; its ``$`` lets one trailing
    newline through, which ``fromhex`` skips). The usual 65 bytes as ``0x`` + 130 letters or
    digits are read at once: ``fromhex`` takes exactly the hex ones among them."""
    if (
        type(signature) is str
        and len(signature) == 132
        and signature.isalnum()
        and signature.startswith("0x")
    ):
        try:
            return bytes.fromhex(signature[2:])
        except ValueError:
            raise MalformedSignature("signature is not hex") from None
    if not isinstance(signature, str) or not HEX.match(signature):
        raise MalformedSignature("signature is not hex")
    return bytes.fromhex(signature.removeprefix("0x"))


class _Digests(dict[tuple[bool, int], bytes]):
    """The attestation digest for (``allow``, tier), computed when a vote needs it: a quorum
    that agrees needs only one."""

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        self._fields = fields

    def __missing__(self, key: tuple[bool, int]) -> bytes:
        allow, tier = key
        digest = self[key] = attestation_digest(allow=allow, tier=tier, **self._fields)
        return digest


def _elevated(key: tuple[str, int]) -> bool:
    """An allow at a tier above standard: it never returns at the standard quorum."""
    return key[0] == "allow" and level(key[1]) != STANDARD


def _minimum(key: tuple[str, int], total: int, needed: int) -> int:
    """Signatures the gateway requires before it attests ``key``: every operator for tiers
    ``all`` and ``human``, else the standard quorum (a higher ``high`` threshold is checked by
    the verifier and the vault, which are configured with it)."""
    return total if _elevated(key) and level(key[1]) >= ALL else needed


def _replies(call: asyncio.Future[Any], asked: list[OperatorLink]) -> list[Any]:
    """The reply of each operator ``call`` asked, or its failure (of the whole call if the
    call failed): an operator's own call answers one result, a host's call one per key."""
    try:
        result = call.result()
    except OperatorFailure as exc:
        return [exc] * len(asked)
    except Exception as exc:  # never let one operator break the task
        return [OperatorFailure("internal", type(exc).__name__, retryable=True)] * len(asked)
    replies: list[Any] = result if asked[0].hosted else [result]
    return replies


class _Arrivals:
    """The calls of one task as they finish (their done callback), and the one wake-up the
    task waits on: a future per wait, not ``asyncio.wait``'s callbacks on every call still
    pending each time one answers."""

    __slots__ = ("_waker", "done")

    def __init__(self) -> None:
        self.done: list[asyncio.Future[Any]] = []
        self._waker: asyncio.Future[None] | None = None

    def add(self, call: asyncio.Future[Any]) -> None:
        self.done.append(call)
        if self._waker is not None:
            _wake(self._waker)

    async def wait(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Until a call has finished or the loop's clock reaches ``until``."""
        if self.done:
            return
        waker = self._waker = loop.create_future()
        timer = loop.call_at(until, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


class FanOut:
    """The operators of this gateway, asked for one task at a time."""

    def __init__(self, links: Sequence[OperatorLink], clock: Callable[[], float]) -> None:
        self.links = list(links)
        self._clock = clock
        self._rotation = 0
        self._latency = 0.0  # moving average of a quorum's answer time, seconds (``ask``)
        self._background: set[asyncio.Future[Any]] = set()
        self.tasks = 0  # tasks fanned out
        # why tasks were widened past the operators asked first, by reason
        self.widened = {"failure": 0, "disagreement": 0, "tier": 0, "slow": 0}
        # each link's queue, one per connection (an operator's own, or a host's, shared by
        # its keys): the tasks waiting for it go together (``_batching``)
        self._queues: dict[int, LinkQueue] = {}
        shared: dict[int, LinkQueue] = {}
        for link in self.links:
            queue = shared.get(id(link.http))
            if queue is None:
                queue = shared[id(link.http)] = LinkQueue(link, hosted=link.hosted)
            self._queues[id(link)] = queue

    def hedge_delay(self) -> float:
        """How long a quorum may take before the remaining operators are asked too."""
        return max(HEDGE_MIN, 3 * self._latency) if self._latency else HEDGE_MIN

    def stats(self) -> dict[str, Any]:
        """Counts since start, for an operator of the network (admin only): tasks, the
        evaluations asked of operators for them (a host's call for several keys is one), and
        how often a task was widened past the operators asked first, by reason."""
        return {
            "tasks": self.tasks,
            "evaluations": sum(queue.sent for queue in set(self._queues.values())),
            "messages": sum(queue.messages for queue in set(self._queues.values())),
            "widened": dict(self.widened),
        }

    def _observe_latency(self, seconds: float) -> None:
        self._latency = seconds if not self._latency else 0.9 * self._latency + 0.1 * seconds

    def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for queue in set(self._queues.values()):
            queue.close()
        for link in self.links:
            link.http.close()

    async def ask(
        self,
        task: TaskInput,
        task_id: bytes,
        request_id: str,
        wasm_json: bytes,
        expires_at: int,
        intent_hash: bytes,
        approval: dict[str, Any] | None = None,
        intent_json: str | None = None,
    ) -> Outcome:
        """``intent_json`` is ``encode(task.intent.wire())`` when the caller has it already."""
        client = task.client
        bodies = Bodies(
            client,
            task_members(task, task_id, request_id, expires_at, approval, intent_json)
            + b',"wasm":'
            + wasm_json,
            task_id,
        )
        digests = _Digests(
            chain_id=task.intent.chain_id,
            policy_client=bytes.fromhex(client.address[2:]),
            task_id=task_id,
            policy_id=client.policy_id,
            intent_hash=intent_hash,
            expires_at=expires_at,
        )
        expected = {
            "intent_hash_hex": "0x" + intent_hash.hex(),
            "policy_id_hex": "0x" + client.policy_id.hex(),
        }
        total = len(self.links)
        needed = -(-total * task.percentage // 100)
        start = self._rotation % total
        self._rotation += 1
        self.tasks += 1
        waiting = self.links[start:] + self.links[:start]
        # each call and the operators it asks: one, or several keys of one host
        calls: dict[asyncio.Future[Any], list[OperatorLink]] = {}
        asked_at: dict[asyncio.Future[Any], float] = {}  # when each call was made

        def launch(count: int) -> None:
            now = loop.time()
            hosts: dict[int, list[OperatorLink]] = {}
            for _ in range(min(count, len(waiting))):
                link = waiting.pop(0)
                if link.hosted:
                    hosts.setdefault(id(link.http), []).append(link)
                    continue
                call = self._queues[id(link)].submit(client.code_hash, bodies, task.timeout)
                calls[call] = [link]
                asked_at[call] = now
                pending.add(call)
                call.add_done_callback(arrivals.add)
            for keys in hosts.values():
                queue = self._queues[id(keys[0])]
                for i in range(0, len(keys), MAX_HOST_KEYS):  # the most one call may name
                    asked = keys[i : i + MAX_HOST_KEYS]
                    call = queue.submit(client.code_hash, bodies, task.timeout, asked)
                    calls[call] = asked
                    asked_at[call] = now
                    pending.add(call)
                    call.add_done_callback(arrivals.add)

        def error(link: OperatorLink, failure: OperatorFailure) -> None:
            failures.append(failure)
            errors.append(operator_error(link, failure, int(self._clock())))

        loop = asyncio.get_running_loop()
        arrivals = _Arrivals()
        pending: set[asyncio.Future[Any]] = set()
        launch(needed)
        votes: dict[tuple[str, int], list[Vote]] = {}
        # per decision, the longest any of its votes took from its operator being asked
        took: dict[tuple[str, int], float] = {}
        errors: list[dict[str, Any]] = []
        failures: list[OperatorFailure] = []
        winner: tuple[str, int] | None = None
        started = loop.time()
        deadline = started + task.timeout
        hedge_at = started + min(self.hedge_delay(), task.timeout * HEDGE_SHARE)
        while pending and winner is None:
            if loop.time() >= deadline:
                break
            try:
                await arrivals.wait(loop, deadline if not waiting else min(deadline, hedge_at))
            except BaseException:  # the request was cancelled: nobody reads these answers
                for call in pending:
                    call.cancel()  # not sent if still queued, given up if in flight
                    self._finish_unread(call)
                raise
            done, arrivals.done = arrivals.done, []
            widen = 0
            now = loop.time()
            for call in done:
                pending.discard(call)
                asked = calls[call]
                answered_in = now - asked_at[call]
                for link, reply in zip(asked, _replies(call, asked), strict=True):
                    try:
                        if isinstance(reply, OperatorFailure):
                            raise reply
                        decision, cast = vote(link, reply, digests=digests, **expected)
                    except OperatorFailure as exc:
                        error(link, exc)
                        widen += 1
                        continue
                    except Exception as exc:  # never let one operator break the task
                        failure = OperatorFailure("internal", type(exc).__name__, retryable=True)
                        error(link, failure)
                        widen += 1
                        continue
                    votes.setdefault(decision, []).append(cast)
                    took[decision] = max(took.get(decision, 0.0), answered_in)
                    count = len(votes[decision])
                    if winner is None and (
                        count == total
                        if _elevated(decision)
                        else count * 100 >= total * task.percentage
                    ):
                        winner = decision
                        self._observe_latency(took[decision])
            if winner is None and waiting:
                reason = "failure" if widen else None
                if len(votes) > 1:
                    reason = "disagreement"
                elif any(map(_elevated, votes)):
                    reason = "tier"
                elif loop.time() >= hedge_at:
                    reason = "slow"
                if reason is not None:
                    if reason != "failure":  # disagreement, a higher tier, slowness: everyone
                        widen = len(waiting)
                    self.widened[reason] += 1
                    launch(widen)
        for call in pending:
            if winner is None:
                call.cancel()
                for link in calls[call]:
                    error(
                        link,
                        OperatorFailure(
                            "timeout", f"no answer within {task.timeout:g}s", retryable=True
                        ),
                    )
            else:  # not wanted any more: dropped if still queued for its operator or host
                self._queues[id(calls[call][0])].forget(bodies)
            self._finish_unread(call)
        if winner is None:  # everyone answered or the time is up: an elevated allow may stand
            winner = next(
                (
                    k
                    for k, v in votes.items()
                    if _elevated(k) and len(v) >= _minimum(k, total, needed)
                ),
                None,
            )
        if winner is not None:
            return Outcome(winner[0], votes[winner], errors, None, winner[1])
        if (
            failures
            and len(failures) == total
            and all(f.rpc_code == POLICY_EVALUATION_ERROR for f in failures)
        ):
            raise RPCError(POLICY_EVALUATION_ERROR, failures[0].message)
        tally = (
            ", ".join(f"{d}/{tier_name(t)}: {len(v)}" for (d, t), v in sorted(votes.items()))
            or "no valid answers"
        )
        tier = max((t for k in votes if _elevated(k) for t in [k[1]]), default=None)
        if tier is not None:
            required = _minimum(("allow", tier), total, needed)
            rule = f"trust tier {tier_name(tier)} needs {required} of {total} operators"
        else:
            rule = f"{needed} of {total} operators must agree ({task.percentage}%)"
        message = f"quorum_not_reached: {rule}; got {tally}; {len(errors)} operator error(s)"
        if errors:
            message += ": " + "; ".join(f"{e['operator_address']}: {e['message']}" for e in errors)
        return Outcome(None, [], errors, message, tier)

    def _finish_unread(self, call: asyncio.Future[Any]) -> None:
        """``call`` finishes in the background (keeping its connection), read by nobody:
        held till then, and its failure marked retrieved."""
        self._background.add(call)
        call.add_done_callback(self._forget)

    def _forget(self, call: asyncio.Future[Any]) -> None:
        self._background.discard(call)
        if not call.cancelled():
            call.exception()  # mark retrieved; late answers are not needed
