"""Shared pieces of the LangChain adapter tests: the real reference network (gateway +
operators), a real anvil chain (Base's chain id 8453) with a USDC token, and guards on them.

This folder has no ``__init__.py`` and no ``conftest.py``: a second top-level ``conftest``
module beside the OpenGradient adapter's would replace it in ``sys.modules``. Test modules
import the fixtures they use from here (``test_lc_*``, ``lc_*``: unique top-level names). The
network and the chain start once per session (shared across modules) and stop at its end.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard import AsyncGuard, Guard, Signer, Token, TransactionIntent
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.ledger import Ledger, Limits
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
STRANGER = DEV_ACCOUNTS[5].address
CAP = 5_000_000  # 5 USDC per transfer, at the network
AGENT_USDC = 1_000_000_000
ALLOWED_CALLS = ["send_email", "lookup"]
_clients = itertools.count(0x1C00)
G = TypeVar("G", Guard, AsyncGuard)
T = TypeVar("T")


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract

    @property
    def usdc(self) -> Token:
        return Token("USDC", self.token.address, 6, 8453)

    def balance(self, who: str) -> int:
        return int(self.token.functions.balanceOf(who).call())


_SHARED: dict[str, Any] = {}


def _once(config: pytest.Config, key: str, start: Callable[[], AbstractContextManager[T]]) -> T:
    """One ``start()`` per session whichever module asks first; exited when pytest ends."""
    if key not in _SHARED:
        context = start()
        _SHARED[key] = context.__enter__()

        def stop() -> None:
            _SHARED.pop(key, None)
            context.__exit__(None, None, None)

        config.add_cleanup(stop)
    return cast(T, _SHARED[key])


@pytest.fixture(scope="session")
def network(request: pytest.FixtureRequest) -> ReferenceNetwork:
    return _once(
        request.config,
        "network",
        lambda: ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0),
    )


@contextmanager
def _chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        transact(w3, token.functions.mint(AGENT.address, AGENT_USDC), sender=OWNER.address)
        yield Chain(anvil, w3, token)


@pytest.fixture(scope="session")
def chain(request: pytest.FixtureRequest) -> Chain:
    return _once(request.config, "chain", _chain)


@pytest.fixture
def snapshot(chain: Chain) -> Iterator[Chain]:
    snap = chain.anvil.snapshot()
    try:
        yield chain
    finally:
        chain.anvil.revert(snap)


def new_client(network: ReferenceNetwork, params: dict[str, Any]) -> tuple[str, str]:
    """A fresh EOA policy client (its own key signs its registration): no shared totals."""
    key = f"0x{next(_clients):064x}"
    client = Signer.from_key(key).address
    return client, network.register_policy_client(client, "agent_spend", params, owner_key=key)


def connect(
    network: ReferenceNetwork,
    params: dict[str, Any],
    cls: type[G] = Guard,
    **defaults: Any,  # type: ignore[assignment]
) -> G:
    """A guard (``cls``: Guard or AsyncGuard) on a new policy client with ``params``; the
    agent's signer, a fresh ledger and no local caps as its defaults (plus ``defaults``)."""
    client, policy_id = new_client(network, params)
    guard = cls.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=policy_id,
    )
    guard.defaults = dataclasses.replace(
        guard.defaults,
        **{"signer": Signer.from_key(AGENT.private_key), "ledger": Ledger(), "limits": Limits()}
        | defaults,
    )
    return guard


def wallet_params(token: str) -> dict[str, Any]:
    return {"max_per_tx": {token.lower(): str(CAP)}, "allowed_recipients": [PAYEE]}


@pytest.fixture
def calls_guard(network: ReferenceNetwork) -> Iterator[Guard]:
    """A guard whose policy allows only ``send_email`` and ``lookup`` calls."""
    with connect(network, {"offchain_calls": ALLOWED_CALLS}) as guard:
        yield guard


@pytest.fixture
def wallet_guard(network: ReferenceNetwork, snapshot: Chain) -> Iterator[Guard]:
    """A guard for the agent's wallet: at most 5 USDC per transfer, only to PAYEE."""
    with connect(network, wallet_params(snapshot.token.address), web3=snapshot.w3) as guard:
        yield guard


@pytest.fixture
def wallet(wallet_guard: Guard, snapshot: Chain) -> GuardedWallet:
    defaults = wallet_guard.defaults
    assert defaults.signer is not None and defaults.ledger is not None
    return GuardedWallet(
        signer=defaults.signer,
        guard=wallet_guard,
        web3=snapshot.w3,
        ledger=defaults.ledger,
        limits=Limits(),
    )


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Callable[[Guard], list[TransactionIntent]]:
    """``asked(guard)``: the intents the guard is asked to authorize from now on, in order
    (every entry point reaches the gateway only through ``Guard.authorize``)."""

    def spy(guard: Guard) -> list[TransactionIntent]:
        seen: list[TransactionIntent] = []
        real = guard.authorize

        def authorize(intent: Any, **kw: Any) -> Any:
            seen.append(intent)
            return real(intent, **kw)

        monkeypatch.setattr(guard, "authorize", authorize)
        return seen

    return spy
