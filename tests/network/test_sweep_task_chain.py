"""Red team: the sweep judged a released task on the chain its client is registered on NOW.

An owner has one vault address on two chains (CREATE2) and re-registers its policy client
from chain A to chain B (the chain the gateway's RPC serves). The tasks its host released and
executed on chain A were then checked on chain B, where the address has no code, or a vault
that never saw them ("unused"): their amounts were given back, spent twice. A vault accepts
an intent for its own chain only (``IntentMismatch("chainId")``), so each task is judged on
its own recorded intent's chain; a task on a chain the RPC does not serve stays counted.

A real anvil (chain id 8453, Base) and the gateway's ``ChainUsageCheck``; every test runs on
SQLite and on a real PostgreSQL (the ``spec`` fixture of ``test_state``).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from coincurve import PrivateKey
from eth_abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import TransactionIntent
from agentguard import _intent as intent_module
from agentguard._eip712 import keccak
from agentguard._exceptions import AgentGuardError, StateUnavailable
from agentguard._intent import wire_chain_id
from agentguard.chain import BASE_CHAIN_ID, DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.network.config import GatewaySettings, NetworkConfig
from agentguard.network.gateway import Gateway
from agentguard.network.registration import Registration
from agentguard.network.state import State, TaskRecord, open_state
from agentguard.network.usage import ChainUsageCheck
from agentguard.policies import load
from tests.ledger.conftest import base_url

OWNER, AGENT = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1]
OTHER_CHAIN = 84532  # Base Sepolia: served by the gateway, not by its RPC
TOKEN = "0x" + "70" * 20  # no code: only the vault's ``taskUsed`` can say a task was used
SHOP = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
AMOUNT = 5_000_000
NOW = 1_764_000_000
POLICY = load("agent_spend")
PARAMS = {
    "max_per_tx": {TOKEN: str(AMOUNT)},
    "allowed_recipients": [SHOP],
    "window_caps": [{"asset": TOKEN, "window_seconds": 86400, "max_amount": "100000000"}],
}


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    factory: Contract


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        assert w3.eth.chain_id == BASE_CHAIN_ID
        yield Chain(anvil, w3, deploy(w3, "AgentVaultFactory", sender=OWNER.address))


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """A fresh state on each backend in turn: a file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        opened = open_state(str(tmp_path / "state.sqlite3"))
    else:
        opened = open_state(f"{base_url('postgres', request)}?namespace=c{uuid.uuid4().hex[:16]}")
    yield opened
    opened.close()


def vault_address(chain: Chain, *, deployed: bool) -> str:
    """OWNER's vault for a fresh salt: deployed on this chain (it never saw the tasks), or
    only predicted (no code here)."""
    salt = uuid.uuid4().bytes * 2
    if not deployed:
        return str(chain.factory.functions.predictVault(OWNER.address, salt).call())
    receipt = transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, [DEV_ACCOUNTS[2].address], 1, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = chain.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    return str(event["args"]["vault"])


def register(gateway: Gateway, vault: str, chain_id: int, version: int) -> None:
    registration = Registration.sign(
        PrivateKey(bytes.fromhex(OWNER.private_key.removeprefix("0x"))),
        policy_client=vault,
        policy=POLICY,
        params=PARAMS,
        expire_after=300,
        chain_id=chain_id,
        version=version,
    )
    gateway.register({"registration": registration.to_json(), "policy": "agent_spend"})


def released_task(state: State, vault: str, chain_id: int, now: int, expires_at: int) -> str:
    """A task recorded as the gateway records one (its intent in the stored answer), then
    released by its host."""
    task_id = "0x" + uuid.uuid4().hex * 2
    intent = TransactionIntent.erc20_transfer(
        sender=vault, token=TOKEN, recipient=SHOP, amount=AMOUNT, chain_id=chain_id
    )
    reservation = state.reserve(
        policy_client=vault.lower(),
        agent=AGENT.address.lower(),
        windows=(86400,),
        task_id=task_id,
        asset=TOKEN,
        amount=AMOUNT,
        now=now,
    )
    result = {"task_id": task_id, "task": {"taskId": task_id, "intent": intent.wire()}}
    state.record(reservation, expires_at=expires_at, result=result)
    assert state.release(task_id, now, trusted=False) == "releasing"
    return task_id


def counted(state: State, vault: str, now: int) -> int:
    totals = state.totals(
        policy_client=vault.lower(), agent=AGENT.address.lower(), windows=(86400,), now=now
    )
    return totals[86400].spent.get(TOKEN, 0)


def sweep(chain: Chain, state: State, steps: list[tuple[int, int]], deployed: bool) -> list[str]:
    """Registers a vault on each (chain id, version) of ``steps`` in turn, one released task
    per registration on that chain; after the last, one sweep pass past every expiry (and
    the chain's clock). Returns each task's status after it."""
    head = int(chain.w3.eth.get_block("latest")["timestamp"])
    now = head - 100
    gateway = Gateway(
        NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=()),
        state,
        chain=ChainUsageCheck(chain.anvil.url),
        clock=lambda: float(now),
    )
    vault = vault_address(chain, deployed=deployed)
    tasks = []
    try:
        for chain_id, version in steps:
            register(gateway, vault, chain_id, version)
            tasks.append(released_task(state, vault, chain_id, now, expires_at=head - 10))
        before = counted(state, vault, now)
        released = asyncio.run(gateway.sweep_once(head + 1))
    finally:
        asyncio.run(gateway.close())
    statuses = []
    for task_id in tasks:
        record = state.task(task_id)
        assert record is not None
        statuses.append(record.status)
    assert released == statuses.count("released")
    assert counted(state, vault, now) == before - released * AMOUNT
    return statuses


@pytest.mark.parametrize("deployed", [True, False], ids=["unused-there", "no-code-there"])
def test_tasks_of_a_chain_the_rpc_does_not_serve_stay_counted_after_a_move_to_it(
    chain: Chain, state: State, deployed: bool
) -> None:
    """Before the fix the task of chain 84532 was asked about on 8453 after the move: "unused"
    (or "no code", then trusted) there, so given back although its vault on 84532 executed
    it. The task made after the move, on 8453, is judged as ever: unused, given back."""
    steps = [(OTHER_CHAIN, 1), (BASE_CHAIN_ID, 2)]
    assert sweep(chain, state, steps, deployed) == ["committed", "released"]


def test_tasks_of_the_served_chain_are_still_judged_there_after_a_move_away(
    chain: Chain, state: State
) -> None:
    """The other way round: the task of 8453 is asked about on 8453 (its vault there says
    unused: given back), the task of 84532 stays counted."""
    steps = [(BASE_CHAIN_ID, 1), (OTHER_CHAIN, 2)]
    assert sweep(chain, state, steps, deployed=True) == ["released", "committed"]


def test_a_task_whose_record_does_not_say_its_chain_stays_counted(
    chain: Chain, state: State
) -> None:
    """Fail closed: no intent in the record (or one whose chain cannot be read), counted."""
    head = int(chain.w3.eth.get_block("latest")["timestamp"])
    vault = vault_address(chain, deployed=True)
    task_ids = []
    for result in ({}, {"task": {"intent": {"chain_id": "0x"}}}, {"task": "0x"}):
        task_id = "0x" + uuid.uuid4().hex * 2
        reservation = state.reserve(
            policy_client=vault.lower(),
            agent=AGENT.address.lower(),
            windows=(86400,),
            task_id=task_id,
            asset=TOKEN,
            amount=AMOUNT,
            now=head - 100,
        )
        state.record(reservation, expires_at=head - 10, result=result)
        assert state.task_chain(task_id) is None
        task_ids.append(task_id)
    assert state.task_chain("0x" + "00" * 32) is None  # no such task
    gateway = Gateway(
        NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=()),
        state,
        chain=ChainUsageCheck(chain.anvil.url),
    )
    try:
        register(gateway, vault, BASE_CHAIN_ID, 1)
        for task_id in task_ids:
            assert state.release(task_id, head - 100, trusted=False) == "releasing"
        assert asyncio.run(gateway.sweep_once(head + 1)) == 0
    finally:
        asyncio.run(gateway.close())
    assert [getattr(state.task(t), "status", None) for t in task_ids] == ["committed"] * 3


class _Executed(ChainUsageCheck):
    """The chain as it is after the vault executed every task: asked, it says "used"."""

    asked = 0

    def was_used(self, task: TaskRecord) -> bool:
        self.asked += 1
        return True


def test_a_state_that_does_not_answer_once_never_skips_the_chain_check(
    chain: Chain, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Red team (r8): the sweep reads a task's chain twice, once to decide whether to ask the
    chain and once in ``trusts_release``. ``task_chain`` took a state that did not answer
    (``StateUnavailable``: PostgreSQL restarting, a statement timeout) for "the record cannot
    tell": the first read failed, the chain was not asked, the second read succeeded and saw
    the RPC's chain, so "no code there" was assumed and the release given back although the
    vault had executed the task (spent twice). Now the failure is the check's: the task
    stays as it is, counted, and the next pass asks the chain."""
    head = int(chain.w3.eth.get_block("latest")["timestamp"])
    vault = vault_address(chain, deployed=True)
    config = NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=())
    check = _Executed(chain.anvil.url)
    gateway = Gateway(config, state, chain=check)
    try:
        register(gateway, vault, BASE_CHAIN_ID, 1)
        task_id = released_task(state, vault, BASE_CHAIN_ID, head - 100, expires_at=head - 10)
        stored, failures = state._stored, [StateUnavailable("the gateway state did not answer")]

        def flaky(task_id: str) -> tuple[str, str | None] | None:
            if failures:
                raise failures.pop()
            return stored(task_id)

        monkeypatch.setattr(state, "_stored", flaky)
        assert asyncio.run(gateway.sweep_once(head + 1)) == 0
    finally:
        asyncio.run(gateway.close())
    record = state.task(task_id)
    assert record is not None and record.status == "releasing"
    again = Gateway(config, state, chain=check)  # a later pass, past the task's backoff
    try:
        assert asyncio.run(again.sweep_once(head + 1)) == 0
    finally:
        asyncio.run(again.close())
    record = state.task(task_id)
    assert record is not None and record.status == "committed"
    assert check.asked == 1


def _intent(rng: random.Random) -> TransactionIntent:
    """A random intent of the kinds a gateway records: a transfer, a native send, a call."""
    sender, to = "0x" + rng.randbytes(20).hex(), "0x" + rng.randbytes(20).hex()
    chain_id = rng.choice([1, 8453, 84532, 2**64 - 1, 2**256 - 1, rng.randrange(1, 2**40)])
    kind = rng.randrange(3)
    if kind == 0:
        return TransactionIntent.erc20_transfer(
            sender=sender, token=to, recipient=SHOP, amount=rng.randrange(2**64), chain_id=chain_id
        )
    signature = "" if kind == 1 else "multicall(bytes[])"
    data = b"" if kind == 1 else _MULTICALL + abi_encode(["bytes[]"], [[rng.randbytes(40)] * 3])
    return TransactionIntent.from_wire(
        {
            "from": sender,
            "to": to,
            "value": hex(rng.randrange(2**70)),
            "data": "0x" + data.hex(),
            "chain_id": hex(chain_id) if rng.random() < 0.5 else str(chain_id),
            "function_signature": signature,
        }
    )


_MULTICALL = keccak(b"multicall(bytes[])")[:4]


def _slow_chain(wire: object) -> int | None:
    """What ``task_chain`` answered before: the whole intent validated again."""
    try:
        return TransactionIntent.from_wire(wire).chain_id  # type: ignore[arg-type]
    except (AgentGuardError, KeyError, TypeError, ValueError):
        return None


def _fast_chain(wire: object) -> int | None:
    try:
        return wire_chain_id(wire)
    except (AgentGuardError, KeyError, TypeError, ValueError):
        return None


def test_a_records_chain_is_read_without_validating_its_calldata_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Red team (r8): ``task_chain`` validated the whole recorded intent again, its calldata
    ABI-decoded, on the event loop, for every expired task of every pass. Tasks the chain
    cannot settle (an EOA's never reported, a chain the RPC does not serve) stay ``attested``
    and head every pass, up to 1,000 a second for good: a host whose policy allows a call
    with a big ``bytes`` argument (a 190 KB multicall: 32 ms to decode) made its tasks cost
    the loop that much again each second, forever. The chain field is read alone now,
    exactly as ``from_wire`` reads it (differential below): the record holds the intent the
    gateway validated when it made the task."""
    state = open_state(str(tmp_path / "state.sqlite3"))
    rng = random.Random(8)
    task_ids = {}
    for n in range(40):
        intent = _intent(rng)
        task_id = "0x" + rng.randbytes(32).hex()
        reservation = state.reserve(
            policy_client=intent.from_.lower(),
            agent=AGENT.address.lower(),
            windows=(86400,),
            task_id=task_id,
            asset=TOKEN,
            amount=n,
            now=NOW,
        )
        state.record(reservation, expires_at=NOW + 1, result={"task": {"intent": intent.wire()}})
        task_ids[task_id] = intent.chain_id

    def decoded(*args: object) -> tuple[object, ...]:
        raise AssertionError("the sweep decoded a recorded intent's calldata again")

    monkeypatch.setattr(intent_module, "_decode", decoded)
    assert {task_id: state.task_chain(task_id) for task_id in task_ids} == task_ids
    state.close()


@pytest.mark.parametrize(
    "wire",
    [
        {"chain_id": "0x2105"},
        {"chainId": 8453},
        {"chain_id": "8453", "chainId": "0x2105"},  # one value, two spellings: refused
        {"chain_id": 8453, "chainId": 8453},
        {"chain_id": " 0x2105 "},
        {"chain_id": 0},
        {"chain_id": "0x0"},
        {"chain_id": -1},
        {"chain_id": 2**256},
        {"chain_id": hex(2**256 - 1)},
        {"chain_id": True},
        {"chain_id": 8453.0},
        {"chain_id": None},
        {"chain_id": "base"},
        {"chain_id": "eip155:8453"},
        {"chain_id": ["0x2105"]},
        {},
        [],
        "0x2105",
        None,
    ],
)
def test_the_chain_field_reads_as_from_wire_reads_it(wire: object) -> None:
    """Hostile chain fields: the same chain, or ``None`` where ``from_wire`` refuses it
    (the rest of each intent made valid, so only the chain can differ)."""
    if isinstance(wire, dict):
        base = _intent(random.Random(1)).wire()
        del base["chain_id"]
        wire = {**base, **wire}
    assert _fast_chain(wire) == _slow_chain(wire)
