"""kill -9 of agent processes at random points of the pipeline (reserve, authorize, bind, sign,
mark_signed, send, confirm, commit), on real parts: anvil (chain id 8453), the reference
network, and a shared ledger on SQLite, Redis and PostgreSQL.

Two agents pay concurrently through one shared ledger and one audit log. Each round every agent
process is killed: at a random instant (seeded), or around one chosen step of the pipeline (a
test-only patch of ``Runner.execute`` in the child). Every restart runs ``recover()`` first, as
an agent must. Between rounds the ledger must never count less than the chain shows (an unknown
outcome stays counted); at the end, once every hold could have expired and every agent has
recovered, the ledger, the audit log and the chain agree exactly: every transfer onchain is
counted once, nothing else is, no transfer was sent twice, every transfer onchain was audited
as signed before it was sent, and the audit log's hash chain is intact.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from web3 import Web3

from agentguard.chain import DEV_ACCOUNTS, DevAccount
from agentguard.ledger import open_ledger
from agentguard.network.launcher import ReferenceNetwork
from tests.ledger.conftest import base_url, fresh_url

from .conftest import (
    HOUR,
    Chain,
    Worker,
    Zygote,
    ledger_usage,
    new_client,
    settle_and_check_agreement,
    transfers,
    wallet_for,
    worker_config,
)

# Sized for a loaded 2-core CI box: a stuck worker fails first, at WORKER_TIMEOUT, with its stack.
pytestmark = pytest.mark.timeout(360)

# (step, before/after): the points between which a crash is most interesting
STEPS = [
    ("Reserve", "after"),
    ("Authorize", "after"),
    ("Bind", "after"),
    ("Sign", "after"),
    ("MarkSigned", "after"),
    ("Send", "before"),
    ("Send", "after"),
    ("Confirm", "after"),
    ("Commit", "after"),
    ("GatewayCommit", "before"),
]


@pytest.mark.parametrize(("kind", "rounds"), [("sqlite", 10), ("redis", 5), ("postgres", 4)])
def test_kill9_at_random_points_leaves_ledger_audit_and_chain_agreeing(
    kind: str,
    rounds: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    chain: Chain,
    network: ReferenceNetwork,
    zygote: Zygote,
) -> None:
    rng = random.Random(f"agentguard-crash-{kind}")
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    open_ledger(url, create=True).close()
    audit = tmp_path / "audit.jsonl"
    client = new_client(network, chain.token.address)
    agents: list[DevAccount] = [DEV_ACCOUNTS[1], DEV_ACCOUNTS[2]]
    token = chain.token.address
    start = chain.w3.eth.block_number + 1
    kills = 0
    for r in range(rounds):
        for agent in agents:  # never too loose: whatever landed is counted, known or not
            landed = sum(a for _, a in transfers(chain, agent.address, start))
            assert ledger_usage(url, agent.address, token) >= landed
        plans = []
        for n, agent in enumerate(agents):
            die = None
            if r == 0 and n == 0:  # at least one signed, sent action the next round recovers
                die = ["Send", "after", 1]
            elif rng.random() < 0.5:
                step, when = rng.choice(STEPS)
                die = [step, when, rng.randint(1, 3)]
            cfg = worker_config(
                chain, network, client, agent, url, audit, 1_000_000 + r * 1_000, die=die
            )
            plans.append((Worker(zygote, cfg, tmp_path / f"r{r}-a{n}.out"), die))
        for worker, die in plans:
            if die is None:  # a random instant once it is paying
                worker.wait_for("ready")
                time.sleep(rng.uniform(0.0, 0.8))
                worker.kill()
            assert worker.wait() == -signal.SIGKILL, worker.tail()
            kills += 1
    assert kills == 2 * rounds
    recovered = [
        int(line.split()[1])
        for out in tmp_path.glob("r*-a*.out")
        for line in out.read_text().splitlines()
        if line.startswith("recovered ")
    ]
    # the crashes did leave signed actions behind that a restart's recover() had to settle
    assert sum(recovered) > 0, recovered

    moved = settle_and_check_agreement(
        chain, network, zygote, client, agents, url, audit, start, tmp_path
    )
    assert moved, "no transfer ever landed: the test proves nothing"


def test_one_agents_recovery_does_not_release_another_agents_unknown_spend(
    tmp_path: Path, chain: Chain, network: ReferenceNetwork, zygote: Zygote
) -> None:
    """Two agents share a ledger (the point of a shared ledger). Agent A is killed after its
    transaction is signed and marked, before it is sent: its outcome is unknown until A's nonce
    is used. Agent B, whose own nonce is far ahead, runs ``recover()``. Before the fix B's
    chain resolver judged A's reservation by *B's* nonce: "nonce used, the transaction at it is
    another one" -> released, and A's possibly-pending spend stopped counting (too loose). A
    resolver now settles only its own account's reservations; A's stays counted."""
    url = fresh_url("sqlite", "", tmp_path)
    open_ledger(url, create=True).close()
    audit = tmp_path / "audit.jsonl"
    client = new_client(network, chain.token.address)
    a, b = DEV_ACCOUNTS[3], DEV_ACCOUNTS[4]
    token = chain.token.address
    busy = Worker(
        zygote,
        worker_config(chain, network, client, b, url, audit, 2_000_000, count=3),
        tmp_path / "b.out",
    )
    assert busy.wait() == 0, busy.tail()
    killed = Worker(
        zygote,
        worker_config(chain, network, client, a, url, audit, 3_000_000, die=["Send", "before", 1]),
        tmp_path / "a.out",
    )
    assert killed.wait() == -signal.SIGKILL, killed.tail()
    nonces = [
        chain.w3.eth.get_transaction_count(Web3.to_checksum_address(x.address)) for x in (a, b)
    ]
    assert nonces[0] < nonces[1]  # B's nonce has passed the one A's transaction holds
    assert ledger_usage(url, a.address, token) == 3_000_000
    with open_ledger(url, clock=lambda: time.time() + HOUR) as ledger:
        report = wallet_for(chain, network, client, b, ledger).recover()
        assert report.released == ()
        assert {r.agent for r in report.unknown} == {a.address.lower()}
    assert ledger_usage(url, a.address, token, HOUR) == 3_000_000  # still counted: never too loose
    with open_ledger(url) as ledger:  # A itself, once its nonce moved on, settles it
        Worker(
            zygote,
            worker_config(chain, network, client, a, url, audit, 4_000_000, count=1),
            tmp_path / "a2.out",
        ).wait()
        report = wallet_for(chain, network, client, a, ledger).recover()
        assert report.unknown == ()
    assert ledger_usage(url, a.address, token) == 4_000_000
