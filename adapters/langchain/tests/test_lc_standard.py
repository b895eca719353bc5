"""LangChain's standard tool tests (``langchain-tests``) for ``GuardedTool`` and each toolkit
tool: unit tests on tools built offline; integration tests (invoke and ainvoke, with and without
a tool call) on the real chain and the real reference network, overriding only the ``tool``
fixture.
"""

# ruff: noqa: F811 - the fixtures imported from lc_stack are parameters here

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from langchain_agentguard import (
    ContractCallTool,
    PaidFetchTool,
    TransferTool,
    WalletBalanceTool,
    guard_tool,
)
from langchain_core.tools import BaseTool, tool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests
from lc_paywall import paywall
from lc_stack import (  # noqa: F401 - fixtures are parameters here
    AGENT,
    PAYEE,
    Chain,
    asked,
    calls_guard,
    chain,
    network,
    snapshot,
    wallet,
    wallet_guard,
)
from web3 import Web3

from agentguard import Guard, Signer
from agentguard.ledger import Ledger, Limits
from agentguard.wallet import GuardedWallet
from agentguard.x402 import Allowances, X402Auth

OFFLINE = "http://127.0.0.1:9"  # nothing is contacted while building a tool


@tool
def lookup(query: str, limit: int = 3) -> str:
    """Look something up."""
    return f"{limit} results for {query}"


def offline_guard() -> Guard:
    guard = Guard.connect(
        OFFLINE,
        policy_client=AGENT.address,
        operators=[AGENT.address],
        policy_id="0x" + "11" * 32,
    )
    guard.defaults = replace(
        guard.defaults, signer=Signer.from_key(AGENT.private_key), ledger=Ledger(), limits=Limits()
    )
    return guard


def offline_wallet() -> dict[str, Any]:
    w3 = Web3(Web3.HTTPProvider(OFFLINE))
    wallet = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=offline_guard(),
        web3=w3,
        ledger=Ledger(),
        limits=Limits(),
    )
    return {"wallet": wallet, "web3": w3}


TRANSFER = {"to": PAYEE, "amount": "1 USDC"}


def approve(chain: Chain) -> dict[str, Any]:
    return {
        "contract": chain.token.address,
        "function": "approve(address,uint256)",
        "args": f'["{PAYEE}", 1000]',
        "value": "0 ETH",
    }


# -- unit ---------------------------------------------------------------------------------------


class TestGuardedToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> BaseTool:
        return guard_tool(lookup, offline_guard())

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "cats", "limit": 2}


class TestBalanceUnit(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return WalletBalanceTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return offline_wallet()

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"symbol": "USDC"}


class TestTransferUnit(TestBalanceUnit):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return TransferTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return TRANSFER


class TestContractCallUnit(TestBalanceUnit):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return ContractCallTool

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"contract": PAYEE, "function": "approve(address,uint256)", "args": "[]"}


class TestPaidFetchUnit(TestBalanceUnit):
    @property
    def tool_constructor(self) -> type[BaseTool]:
        return PaidFetchTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        parts = offline_wallet()
        auth = X402Auth(
            signer=Signer.from_key(AGENT.private_key),
            guard=offline_guard(),
            ledger=Ledger(),
            allowances=Allowances({PAYEE: 1}),
        )
        return {**parts, "x402": auth}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"url": "https://example.com/"}


# -- integration (the real stack) ---------------------------------------------------------------


class TestGuardedToolIntegration(ToolsIntegrationTests):
    tool_constructor = BaseTool  # the fixture below builds the tool

    @pytest.fixture
    def tool(self, calls_guard: Guard) -> BaseTool:
        return guard_tool(lookup, calls_guard)

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"query": "cats", "limit": 2}


class TestTransferIntegration(ToolsIntegrationTests):
    tool_constructor = TransferTool

    @pytest.fixture
    def tool(self, wallet: GuardedWallet, snapshot: Chain) -> BaseTool:
        return TransferTool(wallet=wallet, web3=snapshot.w3, tokens=snapshot.usdc)

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return TRANSFER


class TestBalanceIntegration(ToolsIntegrationTests):
    tool_constructor = WalletBalanceTool

    @pytest.fixture
    def tool(self, wallet: GuardedWallet, snapshot: Chain) -> BaseTool:
        return WalletBalanceTool(wallet=wallet, web3=snapshot.w3, tokens=snapshot.usdc)

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"symbol": "USDC"}


class TestContractCallIntegration(ToolsIntegrationTests):
    tool_constructor = ContractCallTool
    example: dict[str, Any] = {}

    @pytest.fixture
    def tool(self, wallet: GuardedWallet, snapshot: Chain) -> BaseTool:
        type(self).example = approve(snapshot)
        return ContractCallTool(wallet=wallet, web3=snapshot.w3, tokens=snapshot.usdc)

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return self.example


class TestPaidFetchIntegration(ToolsIntegrationTests):
    tool_constructor = PaidFetchTool
    url = ""

    @pytest.fixture
    def tool(self, wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain) -> Any:
        signer = wallet_guard.defaults.signer
        assert signer is not None
        auth = X402Auth(
            signer=signer,
            guard=wallet_guard,
            ledger=Ledger(),
            allowances=Allowances({snapshot.token.address: 50_000}),
        )
        with paywall(snapshot.token.address, PAYEE) as (url, _):
            type(self).url = url
            yield PaidFetchTool(
                wallet=wallet,
                web3=snapshot.w3,
                tokens=snapshot.usdc,
                x402=auth,
                fetch_hosts=("127.0.0.1",),
            )

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"url": self.url}
