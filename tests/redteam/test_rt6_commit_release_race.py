"""Red team, gateway bookkeeping against the real reference network: a commit and a release
of the same task raced, and a release sent after a commit (the dedupe window forgot the id,
another guard instance, a crashed process re-sending).

The claim under attack: once a task is committed the network never gives its budget back.
Raced from 8 threads (4 commits, 4 releases): at most one commit and one release are
accepted (a release of a fresh attestation only marks it ``releasing``, still counted, and
a commit may still follow it), and whenever a commit was accepted the task ends committed;
a release that arrives after a commit is refused. So queueing off the critical path (and
forgetting ids after 4096) can add calls but never turn a landed payment into a released
one. Held.
"""

from __future__ import annotations

import threading

from agentguard import Signer
from agentguard._exceptions import AgentGuardError
from agentguard._guard import Guard
from agentguard._intent import PaymentIntent
from agentguard.network import ReferenceNetwork
from tests.x402.conftest import AGENT_KEY, connect
from tests.x402.fakes import PAYEE, TOKEN


def _task(guard: Guard) -> str:
    intent = PaymentIntent(
        payer=Signer.from_key(AGENT_KEY).address, scheme="exact", network="eip155:8453",
        asset=TOKEN, amount=1_000, pay_to=PAYEE, resource="http://shop.test/", x402_version=2,
    )  # fmt: skip
    return guard.authorize(intent).task_id


def test_a_raced_commit_and_release_settle_once(network: ReferenceNetwork) -> None:
    with connect(network) as guard:
        for _ in range(3):
            task = _task(guard)
            barrier = threading.Barrier(8)
            won: list[str] = []

            def call(
                kind: str,
                task: str = task,
                barrier: threading.Barrier = barrier,
                won: list[str] = won,
            ) -> None:
                barrier.wait()
                try:
                    if kind == "commit":
                        guard.authorizer.commit(task, "0x" + "ab" * 32)
                    else:
                        guard.authorizer.release(task)
                except AgentGuardError:
                    return
                won.append(kind)

            threads = [threading.Thread(target=call, args=(k,)) for k in ["commit", "release"] * 4]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert won.count("commit") <= 1 and won.count("release") <= 1, won
            assert won, "neither call was accepted"
            if "commit" in won:
                _assert_committed(guard, task)


def _assert_committed(guard: Guard, task: str) -> None:
    try:
        guard.authorizer.release(task)
    except AgentGuardError as exc:
        assert "is committed" in str(exc), str(exc)
    else:
        raise AssertionError("a committed task was released")


def test_a_release_after_a_commit_is_refused(network: ReferenceNetwork) -> None:
    with connect(network) as guard:
        task = _task(guard)
        guard.authorizer.commit(task, "0x" + "cd" * 32)
        for _ in range(2):
            _assert_committed(guard, task)
