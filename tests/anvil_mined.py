"""Anvil answers ``eth_sendTransaction`` before it mines the transaction; tests wait for it.

Automine runs as its own task in anvil: the RPC answer (the hash) can come before the block,
so a test that reads state right after ``w3.eth.send_transaction(...)`` or
``contract.functions.f(...).transact(...)`` (or sends a dependent transaction, or reverts a
snapshot) reads the state before the send on a loaded machine. ``MinedSends`` makes every
successful ``eth_sendTransaction`` against an automining anvil return only once its receipt
exists, so each such call site behaves as the test reads it.

Only ``eth_sendTransaction`` (a node-signed send, which only tests and the dev-account
``agentguard.chain.transact`` use; the latter waits for the receipt anyway): raw sends are the
wallet's own path, which confirms by itself, and its tests must see what the node really
answers. Nothing changes when automine is off (``evm_setAutomine(false)``), on a node that is
not anvil, or when the send failed; a reverting call still raises from gas estimation,
before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from web3.manager import RequestManager
from web3.middleware.base import Web3Middleware
from web3.types import MakeRequestFn, RPCEndpoint, RPCResponse

__all__ = ["MinedSends", "default_middleware_with_mined_sends"]

RECEIPT_TIMEOUT = 60.0
"""Seconds to wait for a receipt; then the hash is returned as anvil gave it (a transaction
anvil keeps pending, e.g. under a future nonce, behaves as without this middleware)."""


class MinedSends(Web3Middleware):
    """After a successful ``eth_sendTransaction`` to an automining anvil, waits for the receipt."""

    def wrap_make_request(self, make_request: MakeRequestFn) -> MakeRequestFn:
        def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
            response = make_request(method, params)
            result = response.get("result")
            if method == "eth_sendTransaction" and isinstance(result, str):
                self._wait_mined(result)
            return response

        return middleware

    def _ask(self, method: str, *params: Any) -> Any:
        """The node's answer straight from the provider (no middleware), ``None`` if it fails."""
        try:
            return self._w3.provider.make_request(RPCEndpoint(method), list(params)).get("result")
        except Exception:
            return None

    def _wait_mined(self, tx_hash: str) -> None:
        if self._ask("anvil_getAutomine") is not True:
            return  # not anvil, or blocks are mined by hand: the test decides when
        deadline = time.monotonic() + RECEIPT_TIMEOUT
        while self._ask("eth_getTransactionReceipt", tx_hash) is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


_DEFAULT: Callable[[], list[tuple[Any, str]]] = RequestManager.get_default_middleware


def default_middleware_with_mined_sends() -> list[tuple[Any, str]]:
    """web3's default middleware, plus ``MinedSends`` (for ``RequestManager``'s default)."""
    return [*_DEFAULT(), (MinedSends, "anvil_mined_sends")]
