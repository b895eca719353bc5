"""A lying or broken RPC node answering the watcher's chain reads with data of the wrong shape
(short log data, logs without fields, calldata that carries ``execute``'s selector but does
not decode) is ``NodeUnavailable`` or "not an execute call", never eth_abi's ``DecodingError``
or a ``KeyError``. Before the fix each of these escaped untyped from ``agentguard challenge
watch``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agentguard._exceptions import NodeUnavailable
from agentguard.challenge._chain import (
    _EXECUTE_SELECTOR,
    ChainFact,
    authorization_used,
    decode_execute,
    executed_events,
    recheck_fact,
)

VAULT = "0x" + "11" * 20
TOKEN = "0x" + "22" * 20
TASK = "0x" + "33" * 32


class _Eth:
    chain_id = 8453
    block_number = 10

    def __init__(self, logs: list[Any], receipt: Any) -> None:
        self._logs, self._receipt = logs, receipt

    def get_logs(self, _: Any) -> list[Any]:
        return self._logs

    def get_transaction_receipt(self, _: Any) -> Any:
        return self._receipt

    def get_transaction(self, _: Any) -> Any:
        return {"input": _EXECUTE_SELECTOR + b"\x01\x02"}


def _w3(logs: list[Any], receipt: Any = None) -> Any:
    return SimpleNamespace(eth=_Eth(logs, receipt))


SHORT_LOG = {
    "topics": [b"\x00" * 32, bytes.fromhex(TASK[2:])],
    "data": b"\x01\x02",
    "transactionHash": b"\x44" * 32,
    "blockNumber": 3,
    "blockHash": b"\x55" * 32,
    "logIndex": 0,
    "address": VAULT,
}


def test_execute_selector_with_garbage_arguments_is_not_an_execute_call() -> None:
    assert decode_execute(_EXECUTE_SELECTOR + b"\x01\x02", VAULT, 8453) == (None, None)


@pytest.mark.parametrize("log", [SHORT_LOG, {"data": b""}])
def test_a_malformed_executed_log_is_node_unavailable(log: dict[str, Any]) -> None:
    with pytest.raises(NodeUnavailable):
        executed_events(_w3([log]), VAULT, from_block=0, to_block=5)


def test_a_malformed_payment_receipt_is_node_unavailable() -> None:
    with pytest.raises(NodeUnavailable):
        authorization_used(_w3([SHORT_LOG], receipt={"no": "logs"}), TOKEN, VAULT, TASK)


def test_rechecking_against_a_malformed_receipt_is_node_unavailable() -> None:
    fact = ChainFact(
        kind="executed",
        chain_id=8453,
        tx_hash="0x" + "44" * 32,
        block_number=3,
        block_hash="0x" + "55" * 32,
        log_index=0,
        address=VAULT,
        task_id=TASK,
        data={},
    )
    with pytest.raises(NodeUnavailable):
        recheck_fact(_w3([], receipt={"blockHash": b"\x55" * 32}), fact)
