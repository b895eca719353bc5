"""``ChainUsageCheck``'s memory of which addresses hold code, and what a failing node means.

Before the fix a "has code" answer was kept forever (wrong after a reorg or an anvil revert:
the task's ``taskUsed`` call failed at every sweep, for good), and any failure of the token's
``authorizationState`` call, a node timeout included, read as "not used": the released x402
payment's amount was given back although it may have been paid (then spent twice)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from agentguard.network import usage
from agentguard.network.state import PENDING, TaskRecord
from agentguard.network.usage import CODE_TTL, ChainUsageCheck

VAULT = "0x" + "7a" * 20
TOKEN = "0x" + "70" * 20
EXPIRY = 1_764_000_000


class Node:
    """The chain as the check sees it: which addresses hold code, the latest block's stamp,
    and what the vault's and the token's views answer (or raise)."""

    def __init__(self) -> None:
        self.code: set[str] = {VAULT, TOKEN}
        self.code_asked: list[str] = []
        self.stamp = EXPIRY + 1
        self.task_used: Any = False
        self.paid: Any = False

    def get_code(self, address: str, block: int | str = "latest") -> bytes:
        self.code_asked.append(address.lower())
        return b"\x60\x80" if address.lower() in self.code else b""

    def get_block(self, _: str) -> dict[str, int]:
        return {"timestamp": self.stamp, "number": 7}

    def contract(self, address: str) -> Any:
        paid = self.paid  # the token answers one 32-byte word (see ``ChainUsageCheck._used``)
        word = bytes(31) + bytes([paid]) if isinstance(paid, bool) else paid
        views = {"taskUsed": self.task_used, "authorizationState": word}
        return SimpleNamespace(
            functions=SimpleNamespace(**{name: _view(answer) for name, answer in views.items()})
        )


def _view(answer: Any) -> Any:
    def call(**_: Any) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return lambda *args: SimpleNamespace(call=call)


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


@pytest.fixture
def node() -> Node:
    return Node()


@pytest.fixture
def check(node: Node, clock: list[float]) -> ChainUsageCheck:
    check = ChainUsageCheck("http://127.0.0.1:9", clock=lambda: clock[0])
    check._w3 = SimpleNamespace(eth=node)  # type: ignore[assignment]
    check._contract = node.contract  # type: ignore[method-assign]
    return check


def task() -> TaskRecord:
    return TaskRecord("0x" + "ab" * 32, VAULT, "0x" + "aa" * 20, TOKEN, 5, 0, EXPIRY, "releasing")


def test_code_is_remembered_only_for_a_while(
    check: ChainUsageCheck, node: Node, clock: list[float]
) -> None:
    """A vault an anvil revert (or a reorg) took away: "no code" once the answer is stale."""
    assert check.has_code(VAULT)
    assert check.has_code(VAULT)
    assert node.code_asked == [VAULT]  # the second answer came from memory
    node.code.discard(VAULT)
    clock[0] += CODE_TTL - 1
    assert check.has_code(VAULT)  # still trusted: a stale "code" fails closed (see below)
    clock[0] += 1
    assert not check.has_code(VAULT)
    assert not check.has_code(VAULT)
    assert node.code_asked == [VAULT] * 3  # "no code" is never remembered


def test_a_stale_code_answer_keeps_the_task_counted(check: ChainUsageCheck, node: Node) -> None:
    """While "code" is remembered for a vault that is gone, its ``taskUsed`` call fails (no
    code answers nothing): the task stays counted; once stale, "no code" says cannot tell."""
    assert check.has_code(VAULT)
    node.code.discard(VAULT)
    node.task_used = BadFunctionCallOutput("no code at the address")
    with pytest.raises(BadFunctionCallOutput):
        check.was_used(task())


def test_the_memory_is_bounded(
    check: ChainUsageCheck, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage, "CODE_CACHE", 3)
    addresses = ["0x" + f"{i:040x}" for i in range(1, 6)]
    node.code.update(addresses)
    for address in addresses:
        assert check.has_code(address)
    assert list(check._contracts) == addresses[2:]


@pytest.mark.parametrize(
    "failure", [TimeoutError("read timed out"), ConnectionError("node down"), ValueError("rpc")]
)
def test_a_node_failing_on_the_payment_check_is_no_unused(
    check: ChainUsageCheck, node: Node, failure: Exception
) -> None:
    """An attacker pays with the vault's x402 authorization, releases the attestation, and
    hopes the node stumbles at the sweep: the payment check must fail, not say "unused"."""
    node.paid = failure
    with pytest.raises(type(failure)):
        check.was_used(task())


@pytest.mark.parametrize(
    "not_3009", [ContractLogicError("execution reverted"), BadFunctionCallOutput("0x")]
)
def test_a_token_without_eip3009_can_only_have_been_used_by_execute(
    check: ChainUsageCheck, node: Node, not_3009: Exception
) -> None:
    node.paid = not_3009
    assert check.was_used(task()) is False
    node.task_used = True
    assert check.was_used(task()) is True


def test_paid_and_pending_answers(check: ChainUsageCheck, node: Node) -> None:
    node.paid = True
    assert check.was_used(task()) is True
    node.paid, node.stamp = False, EXPIRY - 1
    assert check.was_used(task()) is PENDING
    node.stamp = EXPIRY
    assert check.was_used(task()) is False
