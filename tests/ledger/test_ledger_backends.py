"""Shared ledgers on Redis and PostgreSQL: URLs, outages against the real servers, the used-
attestation record across processes, and the naive model of ``test_ledger_properties`` replayed
on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentguard._exceptions import (
    AgentGuardError,
    AttestationReplayed,
    ConfigurationError,
    LedgerUnavailable,
)
from agentguard._intent import Spend
from agentguard.ledger import Limits, WindowCap, open_ledger, open_replay_guard
from tests.ledger.conftest import BACKENDS, base_url, fresh_url
from tests.ledger.servers import Server, ServerUnavailable, start_postgres, start_redis
from tests.ledger.test_ledger_properties import LedgerMachine

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
ROOT = Path(__file__).resolve().parents[2]


def test_url_forms(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with open_ledger(f"sqlite:///{path}") as ledger:  # sqlite:////abs/path (SQLAlchemy's form)
        ledger.reserve(AGENT, Spend(asset=USDC, amount=1), key="k", expires_at=time.time() + 60,
                       limits=Limits())  # fmt: skip
    with open_ledger(str(path)) as again:  # a bare path is the same SQLite file
        assert again.get("k").amount == 1
    with open_ledger("sqlite://") as memory:
        assert memory.usage(AGENT, 60).count == 0
    for bad in ("", "mysql://x/y", "sqlite:relative.db", "redis://h/0?namespace=a&namespace=b"):
        with pytest.raises(ConfigurationError):
            open_ledger(bad)
    with pytest.raises(ConfigurationError, match="namespace"):
        open_ledger("redis://127.0.0.1:1/0?namespace=Bad-Name")


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_a_down_server_is_a_typed_error_that_never_shows_the_password(scheme: str) -> None:
    """The URL's password must not reach the error (nor a log line): a ledger URL is config
    a deployment keeps secret. Nothing listens on port 1."""
    secret = "s3cret-" + uuid.uuid4().hex
    url = f"{scheme}://agent:{secret}@127.0.0.1:1/0"
    with pytest.raises(LedgerUnavailable) as info:
        open_ledger(url)
    assert secret not in str(info.value) and "127.0.0.1:1" in str(info.value)
    with pytest.raises(LedgerUnavailable) as info:
        open_replay_guard(url)
    assert secret not in str(info.value)


@pytest.fixture(params=["redis", "postgres"])
def own_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server of this test's own, to stop and restart."""
    try:
        server = {"redis": start_redis, "postgres": start_postgres}[request.param]()
    except ServerUnavailable as exc:
        base_url(request.param, request)  # records and skips, naming the reason
        pytest.skip(str(exc))
    yield server
    server.close()


def test_backend_down_fails_closed_and_back_resumes(own_server: Server) -> None:
    """Stop the real server mid-use: every call is ``LedgerUnavailable`` (an agentguard error,
    never redis-py's or psycopg's); start it again on the same data: the same handles work with
    no repair, and what was counted before the outage still counts."""
    ledger = open_ledger(own_server.url, create=True)
    guard = open_replay_guard(own_server.url)
    limits = Limits(windows=[WindowCap(USDC, 3600, 10)])

    def reserve(key: str, amount: int) -> str:
        spend = Spend(asset=USDC, amount=amount)
        return ledger.reserve(AGENT, spend, key=key, expires_at=time.time() + 300, limits=limits).id

    held = reserve("before", 6)
    ledger.mark_signed(held, "0xtx")
    assert guard.claim(b"\x01" * 32, int(time.time()) + 60)
    own_server.stop()
    calls: list[Callable[[], object]] = [
        lambda: reserve("during", 1),
        lambda: ledger.commit(held, "landed"),
        lambda: ledger.get(held),
        lambda: ledger.usage(AGENT, 3600),
        lambda: guard.claim(b"\x02" * 32, int(time.time()) + 60),
    ]
    for call in calls:
        with pytest.raises(LedgerUnavailable) as info:
            call()
        assert isinstance(info.value, AgentGuardError)
    own_server.start()
    assert ledger.commit(held, "landed").state == "committed"
    with pytest.raises(AgentGuardError, match="cap"):  # 6 still counted: 5 more do not fit
        reserve("after", 5)
    assert reserve("after-small", 4)
    assert not guard.claim(b"\x01" * 32, int(time.time()) + 60)  # still used after the restart
    assert guard.claim(b"\x02" * 32, int(time.time()) + 60)
    ledger.close()


_VERIFY = """
import json, sys
from agentguard import Attestation, TransactionIntent, Verifier
from agentguard._exceptions import AttestationReplayed
from agentguard.ledger import open_replay_guard
job = json.loads(sys.stdin.readline())
verifier = Verifier(job["operators"], policy_client=job["client"],
                    replay_guard=open_replay_guard(job["url"]))
intent = TransactionIntent.erc20_transfer(**job["intent"])
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"  # all four start verifying together
won = []
for text in job["attestations"]:
    try:
        verifier.verify(Attestation.from_json(text), intent)
        won.append(True)
    except AttestationReplayed:
        won.append(False)
print(json.dumps(won), flush=True)
"""


@pytest.mark.parametrize("kind", BACKENDS)
def test_two_verifiers_in_two_processes_never_accept_one_attestation(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Before: each ``Verifier`` kept used task ids in its own process's memory, so a copy of
    an attestation handed to a second agent process verified there too. With a shared record,
    four processes verifying the same 30 attestations at the same moment accept each once."""
    from coincurve import PrivateKey

    from agentguard import TransactionIntent
    from tests.unit.conftest import POLICY_CLIENT, Operators

    url = fresh_url(kind, base_url(kind, request), tmp_path)
    open_replay_guard(url, create=True)  # the namespace once; the verifiers race on the rest
    operators = Operators([PrivateKey() for _ in range(3)])
    fields = {
        "sender": AGENT,
        "token": USDC,
        "recipient": "0x3333333333333333333333333333333333333333",
        "amount": 1_000_000,
        "chain_id": 8453,
    }
    intent = TransactionIntent.erc20_transfer(**fields)  # type: ignore[arg-type]
    attestations = [operators.attest(intent).to_json() for _ in range(30)]
    job = {
        "operators": operators.addresses,
        "client": POLICY_CLIENT,
        "url": url,
        "intent": fields,
        "attestations": attestations,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _VERIFY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.flush()
    for proc in procs:  # every verifier is ready before any starts
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    results = []
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, out
        results.append(json.loads(out.splitlines()[-1]))
    for i in range(len(attestations)):
        assert sum(r[i] for r in results) == 1, (
            f"attestation {i} accepted {sum(r[i] for r in results)}x"
        )
    with pytest.raises(AttestationReplayed):  # and a fifth verifier, here, refuses them all
        from agentguard import Attestation, Verifier

        Verifier(
            operators.addresses, policy_client=POLICY_CLIENT, replay_guard=open_replay_guard(url)
        ).verify(Attestation.from_json(attestations[0]), intent)


class _SharedLedgerMachine(LedgerMachine):
    """The naive-model state machine of ``test_ledger_properties`` on a server backend."""

    kind = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.ledger.close()
        self.ledger = open_ledger(_urls[self.kind](), clock=lambda: self.now, create=True)

    def teardown(self) -> None:
        self.ledger.close()


_urls: dict[str, Callable[[], str]] = {}


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_the_naive_model_holds_on_server_backends(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Random sequences of reserve / bind / sign / commit (in part) / release / clock jumps:
    the Redis script's kept rolling sums and PostgreSQL's recomputed ones agree with a model
    that recounts from scratch, and no window ever passes its cap."""
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    base = base_url(kind, request)
    _urls[kind] = lambda: fresh_url(kind, base, tmp_path)
    machine = type(
        f"Machine_{kind}",
        (_SharedLedgerMachine,),
        {"kind": kind, "refusal_undoes_the_sweep": kind != "redis"},
    )
    run_state_machine_as_test(
        machine, settings=settings(max_examples=25, stateful_step_count=30, deadline=None)
    )


def test_a_redis_that_lost_its_data_is_refused_not_counted_from_zero(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Before: a Redis restarted without persistence (or failed over to an empty replica) came
    back empty, and every agent process went on counting from zero: the whole budget again,
    and every used attestation usable again. Now each client remembers the ledger's epoch and
    refuses once it is gone."""
    import redis

    url = fresh_url("redis", base_url("redis", request), tmp_path)
    ledger, guard = open_ledger(url, create=True), open_replay_guard(url)
    limits = Limits(windows=[WindowCap(USDC, 3600, 10)])
    spend = Spend(asset=USDC, amount=10)
    ledger.reserve(AGENT, spend, key="a", expires_at=time.time() + 60, limits=limits)
    assert guard.claim(b"\x07" * 32, int(time.time()) + 60)
    client = redis.Redis.from_url(url.split("?")[0])
    prefix = "{" + url.split("namespace=")[1] + "}:"
    client.delete(*client.keys(prefix.replace("{", "\\{").replace("}", "\\}") + "*"))
    with pytest.raises(LedgerUnavailable, match="lost its data"):
        ledger.reserve(AGENT, spend, key="b", expires_at=time.time() + 60, limits=limits)
    with pytest.raises(LedgerUnavailable, match="lost its data"):
        guard.claim(b"\x07" * 32, int(time.time()) + 60)
    ledger.close()


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("x", "y:z"), ("x:y", "z")),  # where a naive key would join agent and asset
        (("x#1", "a"), ("x", "1#a")),
        (("2:ab", "c"), ("ab", "c")),
    ],
)
def test_look_alike_agents_and_assets_never_share_a_budget(
    one: tuple[str, str], other: tuple[str, str], open_shared: Callable[..., object]
) -> None:
    """Agent and asset are caller text: no spelling may land in another agent's counters."""
    ledger = open_shared()
    for i, (agent, asset) in enumerate((one, other)):
        limits = Limits(windows=[WindowCap(asset, 3600, 5)], per_tx={asset: 5})
        ledger.reserve(  # type: ignore[attr-defined]
            agent, Spend(asset=asset, amount=5), key=f"k{i}", expires_at=time.time() + 60,
            limits=limits,
        )  # fmt: skip
    for agent, asset in (one, other):
        assert ledger.usage(agent, 3600).spent == {asset: 5}  # type: ignore[attr-defined]


def test_text_a_server_cannot_store_is_a_typed_refusal(open_shared: Callable[..., object]) -> None:
    """A NUL in an agent name: PostgreSQL's text cannot hold it. A typed agentguard error (or,
    where the backend can store it, a normal reservation), never psycopg's DataError."""
    ledger = open_shared()
    try:
        r = ledger.reserve(  # type: ignore[attr-defined]
            "agent\x00x", Spend(asset=USDC, amount=1), key="k", expires_at=time.time() + 60,
            limits=Limits(),
        )  # fmt: skip
    except AgentGuardError:
        return
    assert r.agent == "agent\x00x"


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_claim_whose_expiry_is_a_block_number_still_holds(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Newton attestations expire at a block number (about 3e7 on Base), which read as a unix
    time lies in 1970. Before: the record kept such a claim until that "time", so Redis let the
    key expire at once and the others pruned it on the next sweep: another verifier could
    then accept the same attestation again. Now a claim is kept a day past the claim itself."""
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    task = uuid.uuid4().bytes * 2
    assert open_replay_guard(url, create=True).claim(task, 30_000_000)
    time.sleep(0.01)
    assert not open_replay_guard(url).claim(task, 30_000_000)  # a fresh guard prunes first


@pytest.mark.parametrize("field", ["agent", "key", "recipient"])
def test_text_that_is_not_utf8_is_a_typed_refusal(
    field: str,
    backend_kind: str,
    open_shared: Callable[..., object],
    request: pytest.FixtureRequest,
) -> None:
    """A lone surrogate (valid in a Python str, not encodable as UTF-8) in caller text reached
    the driver, which raised UnicodeEncodeError: not an agentguard error."""
    ledger = open_shared()
    text = {"agent": "agent", "key": "k", "recipient": None} | {field: "x\ud800"}
    with pytest.raises(AgentGuardError):
        ledger.reserve(  # type: ignore[attr-defined]
            text["agent"], Spend(asset=USDC, amount=1, recipient=text["recipient"]),
            key=text["key"], expires_at=time.time() + 60, limits=Limits(),
        )  # fmt: skip


def test_only_create_makes_a_redis_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A namespace without its epoch looks the same whether it is new or Redis lost its data:
    a plain open (a worker) is refused; the setup step's ``create=True`` makes it, once, and
    then every plain open works on the same epoch."""
    url = fresh_url("redis", base_url("redis", request), tmp_path)
    with pytest.raises(ConfigurationError, match="create=True"):
        open_ledger(url)
    with pytest.raises(ConfigurationError, match="no epoch"):
        open_replay_guard(url)
    open_ledger(url, create=True).close()
    with open_ledger(url) as ledger:
        assert ledger.usage(AGENT, 60).count == 0
    open_replay_guard(url).close()  # type: ignore[attr-defined]
