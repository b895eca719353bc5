"""The reference network's real gateway and operator code in one process, for runs of
thousands of tasks: the gateway (``Gateway._create_task``: validation, reservation, policy
data, fan-out, quorum, record) and real ``Operator`` objects (checks, regopy, signing); only
the HTTP hop between them is a function call."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard.network._rpc import RPCError
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig, OperatorEntry
from agentguard.network.gateway import Gateway
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import open_state, policy_material
from agentguard.policies import Policy

KEY = ApiKeyEntry(sha256="00" * 32, admin=True)


class _Direct:
    """Stands in for an operator link's HTTP client: the body goes to the operator object."""

    def __init__(self, operator: Operator) -> None:
        self._operator = operator

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        request = json.loads(body)
        try:
            answer: dict[str, Any] = {"result": self._operator.evaluate_and_sign(request["params"])}
        except RPCError as exc:
            answer = {"error": {"code": exc.code, "message": exc.message}}
        return 200, json.dumps({"jsonrpc": "2.0", "id": 1, **answer}).encode()

    async def close(self) -> None:
        return None


class InProcessNetwork:
    """``operators`` in-process operators behind a real ``Gateway`` on a SQLite state."""

    def __init__(
        self, folder: Path, operators: int = 3, threshold: int = 66, liars: int = 0
    ) -> None:
        """The first ``liars`` operators sign allow for every deny (``LyingEngine``)."""
        from tests.challenge.lying_operator import LyingEngine

        self.state_path = str(folder / "state.sqlite3")
        token = folder / "operator.token"
        token.write_text("t" * 32)
        keys = [PrivateKey() for _ in range(operators)]
        self.operators = [
            Operator(k, Registry(":memory:"), LyingEngine() if i < liars else None)
            for i, k in enumerate(keys)
        ]
        entries = tuple(
            OperatorEntry(operator_address(k), f"http://127.0.0.1:{9 + i}/rpc", str(token))
            for i, k in enumerate(keys)
        )
        config = NetworkConfig(
            gateway=GatewaySettings(state_db=self.state_path, threshold_percentage=threshold),
            operators=entries,
            api_keys=(KEY,),
        )
        self.gateway = Gateway(config, open_state(self.state_path))
        for link, operator in zip(self.gateway.operators.links, self.operators, strict=True):
            link.http = _Direct(operator)  # type: ignore[assignment]
        self.owner = PrivateKey()
        self.loop = asyncio.new_event_loop()

    @property
    def operator_addresses(self) -> list[str]:
        return [o.address for o in self.operators]

    def register(self, policy_client: str, policy: Policy, params: Mapping[str, Any]) -> str:
        registration = Registration.sign(
            self.owner, policy_client=policy_client, policy=policy, params=dict(params),
            expire_after=300, chain_id=8453, version=1,
        )  # fmt: skip
        self.gateway.register(
            {"registration": registration.to_json(), "policy": policy_material(policy)}
        )
        return "0x" + registration.policy_id.hex()

    def create(self, policy_client: str, intent: Any, **extra: Any) -> dict[str, Any]:
        params = {"policy_client": policy_client, "intent": intent.wire(), **extra}
        task = self.gateway._create_task(KEY, str(uuid.uuid4()), params)
        result: dict[str, Any] = self.loop.run_until_complete(task)
        return result

    def close(self) -> None:
        self.loop.close()
        self.gateway.state.close()
