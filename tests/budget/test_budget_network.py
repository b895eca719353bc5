"""One ``Budget``, applied on both sides, against a real chain (anvil, chain id 8453) and the
real reference network: the local limits refuse before the gateway is asked, and the operators
enforce the registered copy even when the agent's local budget is looser."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard import AsyncGuard, Budget, BudgetExceeded, Guard, PolicyDenied, Signer, Token
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from tests.keys import numbered_key

OWNER, AGENT = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
USDC = 1_000_000
_owners = itertools.count(0xB0D6E7)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract

    @property
    def usdc(self) -> Token:
        """The local USD Coin under the symbol USDC (``tokens=`` wins over Base's USDC)."""
        return Token("USDC", self.token.address, 6, 8453)


class Counting(httpx.HTTPTransport):
    """Counts every request the agent's gateway client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        transact(w3, token.functions.mint(AGENT.address, 1_000 * USDC), sender=OWNER.address)
        yield Chain(anvil, w3, token)


@pytest.fixture(scope="module")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def register(network: ReferenceNetwork, budget: Budget) -> tuple[str, str]:
    """A fresh EOA policy client whose own key registers ``budget`` as its params."""
    owner_key = numbered_key(next(_owners), "budget owner")
    client = Signer.from_key(owner_key).address
    pid = network.register_policy_client(client, "agent_spend", budget, owner_key=owner_key)
    return client, pid


def guard_for(
    chain: Chain, network: ReferenceNetwork, client: str, budget: Budget, **pin: str
) -> tuple[Guard, Counting]:
    counting = Counting()
    guard = Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        signer=Signer.from_key(AGENT.private_key),
        web3=chain.w3,
        ledger=Ledger(),
        budget=budget,
        transport=counting,
        **(pin or {"policy": "agent_spend"}),
    )
    return guard, counting


def balance(chain: Chain, who: str) -> int:
    return int(chain.token.functions.balanceOf(who).call())


def test_one_budget_is_the_local_limits_and_the_networks_params(chain, network):
    budget = Budget("5 USDC per call", "12 USDC per day", tokens=chain.usdc)
    client, pid = register(network, budget)
    guard, gateway = guard_for(chain, network, client, budget)
    assert guard.verifier.policy_id == bytes.fromhex(pid[2:])  # pinned from budget.params()
    wallet = guard.wallet()  # signer, web3, ledger and limits from the defaults
    before = balance(chain, PAYEE)
    wallet.transfer(PAYEE, 5 * USDC, asset=chain.token.address)
    guard.flush()  # the gateway commit runs in the background: count it before reading
    asked = gateway.requests
    assert asked >= 1
    with SigningSpy() as spy:
        with pytest.raises(BudgetExceeded, match="per-transaction cap"):
            wallet.transfer(PAYEE, 5 * USDC + 1, asset=chain.token.address)
        wallet.transfer(PAYEE, 5 * USDC, asset=chain.token.address)
        guard.flush()
        asked = gateway.requests
        with pytest.raises(BudgetExceeded, match="window cap"):  # 10 + 3 > 12 per day
            wallet.transfer(PAYEE, 3 * USDC, asset=chain.token.address)
    assert gateway.requests == asked  # refused locally: the gateway never heard of them
    assert len(spy.calls) == 1
    assert balance(chain, PAYEE) - before == 10 * USDC


def test_the_network_enforces_its_own_copy_of_the_budget(chain, network):
    """An agent host that loosens its local budget (a bug, or an attacker editing the config)
    still cannot spend above the budget the owner registered: the operators refuse."""
    registered = Budget("5 USDC per call", "12 USDC per day", tokens=chain.usdc)
    client, pid = register(network, registered)
    loose = Budget("100 USDC per call", "1000 USDC per day", tokens=chain.usdc)
    guard, gateway = guard_for(chain, network, client, loose, policy_id=pid)
    wallet = guard.wallet()
    before = balance(chain, PAYEE)
    with SigningSpy() as spy, pytest.raises(PolicyDenied) as info:
        wallet.transfer(PAYEE, 6 * USDC, asset=chain.token.address)
    assert spy.calls == [] and gateway.requests >= 1
    assert any(
        "above the per-transaction cap max_per_tx = 5000000" in r for r in info.value.reasons
    )
    assert guard.defaults.ledger is not None
    assert guard.defaults.ledger.usage(wallet.account, 86400).count == 0  # the hold was given back
    for _ in range(2):
        wallet.transfer(PAYEE, 5 * USDC, asset=chain.token.address)
    with pytest.raises(PolicyDenied) as info:  # 10 + 3 > the registered 12 per day
        wallet.transfer(PAYEE, 3 * USDC, asset=chain.token.address)
    assert any("above the window cap" in r for r in info.value.reasons)
    assert balance(chain, PAYEE) - before == 10 * USDC


def test_a_usdc_budget_lets_no_eth_and_no_unvalued_call_leave(chain, network):
    """The budget names USDC only: ETH has no ``max_per_tx`` entry, so ``tx_cap`` denies it
    (before, a params with window caps on USDC alone let a vault's ETH leave without limit),
    and a call agentguard cannot value is denied too. Locally nothing caps ETH, so the
    operators are the ones refusing."""
    budget = Budget("5 USDC per call", tokens=chain.usdc)
    client, _ = register(network, budget)
    guard, _ = guard_for(chain, network, client, budget)
    wallet = guard.wallet()
    with SigningSpy() as spy:
        with pytest.raises(PolicyDenied) as info:
            wallet.transfer(PAYEE, 1, asset=None)  # one wei
        assert any("has no entry in max_per_tx" in r for r in info.value.reasons)
        with pytest.raises(PolicyDenied) as info:
            wallet.call(chain.token.address, "mint(address,uint256)", [AGENT.address, 1])
        assert any("not one agentguard can value" in r for r in info.value.reasons)
    assert spy.calls == []
    wallet.transfer(PAYEE, 1 * USDC, asset=chain.token.address)  # USDC still flows


def test_a_budget_of_call_counts_alone_moves_no_value(chain, network):
    budget = Budget("10 calls per minute")
    client, _ = register(network, budget)
    guard, _ = guard_for(chain, network, client, budget)
    with pytest.raises(PolicyDenied) as info:
        guard.wallet().transfer(PAYEE, 1, asset=chain.token.address)
    assert any("has no entry in max_per_tx" in r for r in info.value.reasons)


def test_the_registered_call_count_binds_even_when_the_local_one_is_looser(chain, network):
    registered = Budget("5 USDC per call", "2 calls per hour", tokens=chain.usdc)
    client, pid = register(network, registered)
    loose = Budget("5 USDC per call", "100 calls per hour", tokens=chain.usdc)
    guard, _ = guard_for(chain, network, client, loose, policy_id=pid)
    wallet = guard.wallet()
    for _ in range(2):
        wallet.transfer(PAYEE, 1, asset=chain.token.address)
    with SigningSpy() as spy, pytest.raises(PolicyDenied) as info:
        wallet.transfer(PAYEE, 1, asset=chain.token.address)
    assert spy.calls == [] and any("rate limit max_count = 2" in r for r in info.value.reasons)


async def test_an_async_guard_from_the_environment(chain, network, tmp_path):
    """Everything from ``AGENTGUARD_*``: the policy id computed from AGENTGUARD_BUDGET (the same
    text the owner registered), the wallet from the defaults; an over-cap transfer is refused
    locally in human units, one within the budget lands and is audited. (ETH: the one budgeted
    symbol whose Base address is also anvil's.)"""
    budget_text = "0.01 ETH per call; 0.05 ETH per day"
    owner_key = numbered_key(next(_owners), "budget owner")
    client = Signer.from_key(owner_key).address
    network.register_policy_client(client, "agent_spend", Budget(budget_text), owner_key=owner_key)
    key_file = tmp_path / "agent.key"
    key_file.write_text(str(AGENT.private_key))
    key_file.chmod(0o600)
    environ = {
        "AGENTGUARD_GATEWAY_URL": network.url,
        "AGENTGUARD_API_KEY": network.api_key,
        "AGENTGUARD_POLICY_CLIENT": client,
        "AGENTGUARD_OPERATORS": " , ".join(network.operator_addresses),
        "AGENTGUARD_POLICY": "agent_spend",
        "AGENTGUARD_BUDGET": budget_text,
        "AGENTGUARD_PRIVATE_KEY_FILE": str(key_file),
        "AGENTGUARD_RPC_URL": chain.anvil.url,
        "AGENTGUARD_LEDGER": str(tmp_path / "spend.db"),
        "AGENTGUARD_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    }
    guard = AsyncGuard.from_env(environ)
    assert guard.verifier.policy_id == bytes.fromhex(network.policy_clients[client][2:])
    wallet = guard.wallet()
    before = chain.w3.eth.get_balance(PAYEE)
    with pytest.raises(BudgetExceeded, match=r"is 0\.01 ETH, this action spends 0\.011 ETH"):
        await wallet.transfer(PAYEE, 11 * 10**15)
    receipt = await wallet.transfer(PAYEE, 10**16)
    assert receipt.block_number > 0
    assert chain.w3.eth.get_balance(PAYEE) - before == 10**16
    audit = guard.defaults.audit
    assert audit is not None
    kinds = [entry.kind for entry in audit.entries()]  # type: ignore[attr-defined]
    assert "refused" in kinds and "committed" in kinds
    await guard.aclose()


def test_x402_pays_within_the_budget_from_the_defaults(network):
    """``guard.x402()`` with nothing but the defaults: signer and ledger from ``connect``, the
    allowances from the budget's per-call cap. A server asking more than one call may spend is
    refused before anything is asked; the third payment in a minute is refused by the local
    count without reaching the gateway."""
    from agentguard import PaymentRequiredError
    from tests.x402.fakes import FakeServer, requirement

    budget = Budget("0.01 USDC per call", "2 calls per minute")  # Base's USDC, as the fake asks
    client, _ = register(network, budget)
    counting = Counting()
    guard = Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy="agent_spend",
        signer=Signer.from_key("0x" + "a7" * 32),
        ledger=Ledger(),
        budget=budget,
        transport=counting,
    )
    auth = guard.x402()
    url = "http://shop.test/paid"
    with SigningSpy() as spy:
        with auth.client(transport=FakeServer().transport()) as http:
            assert http.get(url).status_code == 200
            guard.flush()  # the gateway commit runs in the background: count it first
            asked = counting.requests
        greedy = FakeServer(accepts=[requirement(amount="10001")])  # 0.010001 USDC
        with auth.client(transport=greedy.transport()) as http, pytest.raises(PaymentRequiredError):
            http.get(url)
        assert counting.requests == asked
        with auth.client(transport=FakeServer().transport()) as http:
            assert http.get(url).status_code == 200
            guard.flush()
            asked = counting.requests
            with pytest.raises(BudgetExceeded, match="rate cap is 2 actions per 60 s"):
                http.get(url)
    assert counting.requests == asked
    assert len(spy.calls) == 2
