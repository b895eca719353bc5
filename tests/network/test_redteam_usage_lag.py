"""Red team: a load-balanced chain RPC whose backends are not equally far along.

A public or hosted RPC (one URL, many nodes behind it) may answer ``eth_getBlockByNumber
("latest")`` from a node at block N and the next ``eth_call``/``eth_getCode`` at "latest" from
a node a few blocks behind. The usage check read "settled" (the latest block is past the
expiry) from the first, then ``taskUsed`` (or the vault's code) from the second: a vault that
executed the attestation in a block the lagging node had not seen read "unused" (or "no
code"), and the released amount was given back although it was spent (spent twice). Every
answer must come from the block whose stamp said "settled"; a node without that block fails
(the task stays counted, asked again at a later pass).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from web3 import Web3

from agentguard.chain import DEV_ACCOUNTS, Anvil
from agentguard.network.state import PENDING, TaskRecord
from agentguard.network.usage import ChainUsageCheck

# Runtime code of a stand-in vault: any call with calldata answers storage slot 0 as a bool
# (``taskUsed(id)``); a plain transaction stores 1 there (the vault executed the task).
STAND_IN = "0x361560105760005460005260206000f35b600160005500"
VAULT = "0x" + "7a" * 20
NO_TOKEN = "0x" + "70" * 20  # no code: only ``taskUsed`` can say the task was used
EXPIRY = 2_000_000_000
TASK_ID = "0x" + "ab" * 32


class LaggingBalancer:
    """One URL, two backends: ``eth_getBlockByNumber`` reaches the node at the head, every
    other call a node stuck at block ``lag`` ("latest" is its head; a later block number is
    "header not found", as geth says)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lag: int | None = None
        balancer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = balancer.answer(body)
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        method, params = body["method"], list(body.get("params", []))
        if self.lag is not None and method in ("eth_call", "eth_getCode"):
            block = params[-1]
            if block in ("latest", "pending", "safe", "finalized"):
                params[-1] = hex(self.lag)
            elif isinstance(block, str) and int(block, 16) > self.lag:
                return {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "error": {"code": -32000, "message": "header not found"},
                }
        forwarded = {**body, "params": params}
        answer: dict[str, Any] = httpx.post(self.upstream, json=forwarded, timeout=5).json()
        return answer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture
def balancer(anvil: Anvil) -> Iterator[LaggingBalancer]:
    balancer = LaggingBalancer(anvil.url)
    yield balancer
    balancer.close()


def _mine(w3: Web3, stamp: int | None = None) -> int:
    w3.provider.make_request("evm_mine", [] if stamp is None else [stamp])  # type: ignore[arg-type]
    return int(w3.eth.block_number)


def _deploy_stand_in(w3: Web3) -> None:
    w3.provider.make_request("anvil_setCode", [VAULT, STAND_IN])  # type: ignore[arg-type]
    _mine(w3)


def _execute(w3: Web3) -> int:
    """The vault executes the task before its expiry; returns the block it landed in."""
    tx = w3.eth.send_transaction(
        {"from": DEV_ACCOUNTS[1].address, "to": Web3.to_checksum_address(VAULT), "gas": 100_000}
    )
    return int(w3.eth.wait_for_transaction_receipt(tx)["blockNumber"])


def _task() -> TaskRecord:
    return TaskRecord(TASK_ID, VAULT, "0x" + "aa" * 20, NO_TOKEN, 5, 0, EXPIRY, "releasing")


def _judged(check: ChainUsageCheck) -> object:
    try:
        return check.was_used(_task())
    except Exception as exc:  # fails closed: the task stays counted
        return type(exc)


def test_a_task_used_in_a_block_the_lagging_node_has_not_seen_is_never_read_unused(
    anvil: Anvil, balancer: LaggingBalancer
) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    _mine(w3, EXPIRY - 100)
    _deploy_stand_in(w3)
    used_at = _execute(w3)
    assert w3.eth.get_block(used_at)["timestamp"] < EXPIRY  # the vault accepted it
    _mine(w3, EXPIRY + 1)  # the head is past the expiry: "settled"
    assert ChainUsageCheck(anvil.url).was_used(_task()) is True  # one node: it was used
    balancer.lag = used_at - 1  # the call backend has not seen the execution yet
    assert _judged(ChainUsageCheck(balancer.url)) is not False


def test_a_vault_deployed_in_a_block_the_lagging_node_has_not_seen_is_never_read_codeless(
    anvil: Anvil, balancer: LaggingBalancer
) -> None:
    """A node that says "no code" where the vault is: "cannot tell", a trusted release back."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    before = _mine(w3, EXPIRY - 100)
    _mine(w3)  # anvil_setCode changes the head's state: the lagging node stays before it
    _deploy_stand_in(w3)
    _execute(w3)
    _mine(w3, EXPIRY + 1)
    balancer.lag = before  # neither the vault nor its execution reached this node
    assert _judged(ChainUsageCheck(balancer.url)) not in (None, False)


def test_with_every_backend_at_the_head_the_answers_stand(
    anvil: Anvil, balancer: LaggingBalancer
) -> None:
    """The pinned block changes nothing on a node that has it: used, unused, pending."""
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    _mine(w3, EXPIRY - 100)
    _deploy_stand_in(w3)
    check = ChainUsageCheck(balancer.url)
    assert check.was_used(_task()) is PENDING  # the head is before the expiry
    _mine(w3, EXPIRY + 1)
    assert check.was_used(_task()) is False  # settled, unused
    _execute(w3)  # a late execution the vault would refuse; here it only marks the slot
    assert check.was_used(_task()) is True
