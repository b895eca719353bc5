"""The local stack for offchain calls: the wallet tests' anvil (chain id 8453) and reference
network (gateway + three operators, 2-of-3), a SQLite ledger and a hash-chained ``AuditLog``.

Each ``stack.guard(...)`` registers a fresh EOA policy client (its own key signs the
registration), so the network's running totals of one test never meet another's.
"""

from __future__ import annotations

import inspect
import itertools
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentguard import AsyncGuard, Guard, Signer
from agentguard._defaults import Defaults
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger, Limits, RateCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import Policy
from tests.wallet.conftest import AGENT, chain, network, snapshot  # noqa: F401 (fixtures)

EMAIL = ["send_email"]
PARAMS: dict[str, Any] = {"offchain_calls": EMAIL}
MAIL_DOMAIN = Policy.from_dir(Path(__file__).parent / "policies" / "mail_domain")
_keys = itertools.count(1)


@dataclass
class Stack:
    network: ReferenceNetwork
    ledger: Ledger
    audit: AuditLog
    limits: Limits = field(default_factory=lambda: Limits(rate=[RateCap(3600, 100)]))
    asked: list[Any] = field(default_factory=list)

    @property
    def agent(self) -> str:
        return str(AGENT.address)

    def guard(
        self,
        params: dict[str, Any] | None = None,
        *,
        policy: str | Policy = "agent_spend",
        cls: type[Guard] | type[AsyncGuard] = Guard,
        limits: Limits | None = None,
    ) -> Any:
        """A guard on a fresh policy client; ``asked`` records every intent sent to the gateway."""
        key = f"0x{0xAC7 << 200 | next(_keys):064x}"
        client = Signer.from_key(key).address
        policy_id = self.network.register_policy_client(
            client, policy, params if params is not None else PARAMS, owner_key=key
        )
        guard = cls.connect(
            self.network.url,
            policy_client=client,
            operators=self.network.operator_addresses,
            api_key=self.network.api_key,
            policy_id=policy_id,
        )
        guard.defaults = Defaults(
            signer=Signer.from_key(AGENT.private_key),
            ledger=self.ledger,
            limits=limits or self.limits,
            audit=self.audit,
        )
        _record_asks(guard.authorizer, self.asked)
        return guard

    def kinds(self) -> list[str]:
        return [e.kind for e in self.audit.entries()]

    def last(self, kind: str) -> dict[str, Any]:
        return [e.record for e in self.audit.entries() if e.kind == kind][-1]


def dead_guard(stack: Stack) -> Guard:
    """A guard whose gateway URL answers nothing (a closed loopback port), with the stack's
    defaults: every ask fails with GatewayUnavailable after one attempt."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    guard = Guard.connect(
        url, policy_client=stack.agent, operators=[stack.agent],
        policy_id="0x" + "00" * 32, attempts=1,
    )  # fmt: skip
    guard.defaults = stack.guard().defaults
    return guard


def _record_asks(authorizer: Any, asked: list[Any]) -> None:
    original: Callable[..., Any] = authorizer.authorize
    if inspect.iscoroutinefunction(original):

        async def authorize_async(intent: Any, **kw: Any) -> Any:
            asked.append(intent)
            return await original(intent, **kw)

        authorizer.authorize = authorize_async
        return

    def authorize(intent: Any, **kw: Any) -> Any:
        asked.append(intent)
        return original(intent, **kw)

    authorizer.authorize = authorize


@pytest.fixture
def stack(network: ReferenceNetwork, tmp_path: Path) -> Iterator[Stack]:  # noqa: F811
    ledger = Ledger(tmp_path / "ledger.db")
    yield Stack(network, ledger, AuditLog(tmp_path / "audit.jsonl"))
    ledger.close()
