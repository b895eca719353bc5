"""A real ``Gateway`` on a real SQLite state with real ``Operator`` objects, for the session 9
network red team: only the HTTP hop is a function call, and each operator's reply passes
through a hook a test can make hostile (``Net.tamper``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from agentguard import TransactionIntent
from agentguard._attestation import operator_address
from agentguard.network._rpc import RPCError
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig, OperatorEntry
from agentguard.network.gateway import Gateway
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from agentguard.network.state import open_state
from tests.network.test_gateway_memory import CLIENT, REGISTRATION, SHOP, USDC

KEY = ApiKeyEntry(sha256="00" * 32, admin=True)
OTHER_KEY = ApiKeyEntry(sha256="11" * 32, admin=True)
OPERATOR_KEYS = [PrivateKey(bytes([0x40 + i]) * 32) for i in range(3)]
UNIT = 1_000_000  # agent_spend's PARAMS: 5 USDC per tx, 12 USDC per day

Tamper = Callable[[int, dict[str, Any]], Any]


class _Direct:
    def __init__(self, net: Net, index: int) -> None:
        self._net, self._index = net, index

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        request = json.loads(body)
        operator = self._net.operators[self._index]
        try:
            reply: Any = operator.evaluate_and_sign(request["params"])
        except RPCError as exc:
            error = {"code": exc.code, "message": exc.message}
            return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "error": error}).encode()
        tamper = self._net.tamper
        if tamper is not None:
            reply = tamper(self._index, reply)
        if isinstance(reply, bytes):
            return 200, reply
        return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": reply}).encode()

    def close(self) -> None:
        return None


class Net:
    """Three operators (2 of 3 by default) behind a real gateway on ``folder``'s state."""

    def __init__(
        self, folder: Path, *, threshold: int = 66, idempotency_bytes: int = 4 << 20
    ) -> None:
        self.path = str(folder / "state.sqlite3")
        token = folder / "operator.token"
        token.write_text("t" * 32)
        self.operators = [Operator(k, Registry(":memory:")) for k in OPERATOR_KEYS]
        entries = tuple(
            OperatorEntry(operator_address(k), f"http://127.0.0.1:{9 + i}/rpc", str(token))
            for i, k in enumerate(OPERATOR_KEYS)
        )
        config = NetworkConfig(
            gateway=GatewaySettings(state_db=self.path, threshold_percentage=threshold),
            operators=entries,
            api_keys=(KEY, OTHER_KEY),
        )
        self.state = open_state(self.path)
        self.gateway = Gateway(config, self.state, idempotency_bytes=idempotency_bytes)
        for i, link in enumerate(self.gateway.operators.links):
            link.http = _Direct(self, i)  # type: ignore[assignment]
        self.tamper: Tamper | None = None
        self.gateway.register({"registration": REGISTRATION.to_json(), "policy": "agent_spend"})
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def ask(self, rpc_id: str, params: dict[str, Any], key: ApiKeyEntry = KEY) -> bytes:
        answer = await self.gateway.dispatch(key, rpc_id, "newt_createTask", params)
        data: bytes = answer.data
        return data

    def create(self, rpc_id: str, params: dict[str, Any], key: ApiKeyEntry = KEY) -> bytes:
        data: bytes = self.run(self.ask(rpc_id, params, key))
        return data

    def spent(self, agent: str, window: int = 86400) -> tuple[int, int]:
        """(count, USDC spent) in the agent's ``window`` as the books say now."""
        now = int(self.gateway._clock())
        totals = self.state.totals(policy_client=CLIENT, agent=agent, windows=(window,), now=now)
        return totals[window].count, totals[window].spent.get(USDC.lower(), 0)

    def close(self) -> None:
        self.run(self.gateway.close())
        self.loop.close()
        self.state.close()


def params(agent_index: int, amount: int = UNIT) -> dict[str, Any]:
    intent = TransactionIntent.erc20_transfer(
        sender=agent(agent_index), token=USDC, recipient=SHOP, amount=amount, chain_id=8453
    )
    return {"policy_client": CLIENT, "intent": intent.wire(), "timeout": 10}


def agent(index: int) -> str:
    return "0x" + f"{0xDD0000 + index:040x}"
