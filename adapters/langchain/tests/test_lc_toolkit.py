"""``AgentGuardToolkit`` on a real chain (anvil, chain id 8453, a USDC token) and the real
reference network: amounts typed by the model land exactly, refusals are the result text.
"""

# ruff: noqa: F811 - the fixtures imported from lc_stack are parameters here

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_agentguard import AgentGuardToolkit, PaidFetchTool
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from lc_paywall import TX, paywall
from lc_stack import (  # noqa: F401 - fixtures are parameters here
    AGENT,
    AGENT_USDC,
    PAYEE,
    STRANGER,
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

from agentguard import Guard
from agentguard.ledger import Ledger
from agentguard.wallet import AsyncGuardedWallet, GuardedWallet
from agentguard.x402 import Allowances, Receipt
from agentguard.x402._receipt import RECEIPT_EXTENSION


def tools(guard: Guard, wallet: Any, chain: Chain, **kw: Any) -> dict[str, BaseTool]:
    kit = AgentGuardToolkit(guard=guard, wallet=wallet, tokens=chain.usdc, **kw)
    return {t.name: t for t in kit.get_tools()}


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "tool_call", "name": name, "args": args, "id": f"call-{name}"}


def test_the_tools_and_their_schemas(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    kit = tools(wallet_guard, wallet, snapshot)
    assert sorted(kit) == ["contract_call", "transfer", "wallet_balance"]  # no x402: no paid_fetch
    schema = kit["transfer"].tool_call_schema.model_json_schema()
    assert set(schema["properties"]) == {"to", "amount"}
    assert "5 USDC" in schema["properties"]["amount"]["description"]


def test_balance_in_whole_tokens(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    kit = tools(wallet_guard, wallet, snapshot)
    assert (
        kit["wallet_balance"].invoke({"symbol": "USDC"})
        == f"The wallet {AGENT.address} holds 1000 USDC."
    )
    assert " ETH." in kit["wallet_balance"].invoke({"symbol": "ETH"})
    unknown = kit["wallet_balance"].invoke(call("wallet_balance", symbol="DOGE"))
    assert unknown.status == "error" and "DOGE" in unknown.content


def test_a_dead_rpc_node_is_a_refusal_the_model_reads_not_a_crash(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    """The balance read's node is down (or answers garbage): before, web3's own exception
    escaped the tool and ended the agent loop, its message naming the RPC URL. Now it is a
    typed refusal whose text names neither."""
    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9/secret-api-key"))
    kit = {
        t.name: t
        for t in AgentGuardToolkit(
            guard=wallet_guard, wallet=wallet, tokens=snapshot.usdc, web3=dead
        ).get_tools()
    }
    out = kit["wallet_balance"].invoke(call("wallet_balance", symbol="USDC"))
    assert out.status == "error" and "RPC node" in out.content
    assert "secret-api-key" not in out.content and "127.0.0.1:9" not in out.content


def test_transfer_within_the_cap_lands(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    out = tools(wallet_guard, wallet, snapshot)["transfer"].invoke(
        call("transfer", to=PAYEE, amount="2.5 USDC")
    )
    assert isinstance(out, ToolMessage) and out.status == "success"
    assert out.content.startswith(f"Sent 2.5 USDC to {PAYEE}: transaction 0x")
    assert snapshot.balance(PAYEE) == 2_500_000
    assert snapshot.balance(AGENT.address) == AGENT_USDC - 2_500_000


@pytest.mark.parametrize(
    ("to", "amount", "says"),
    [
        (PAYEE, "6 USDC", "5000000"),  # over the policy's per-transfer cap (5 USDC)
        (STRANGER, "1 USDC", STRANGER[2:].lower()),  # not an allowed recipient
        (PAYEE, "1.0000001 USDC", "decimals"),  # more precision than the token has: refused
        (PAYEE, "1e3 USDC", "not an amount"),  # no exponents, no guessing
        (PAYEE, "-1 USDC", "not an amount"),
    ],
)
def test_refused_transfers_send_nothing_and_say_why(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain, to: str, amount: str, says: str
) -> None:
    out = tools(wallet_guard, wallet, snapshot)["transfer"].invoke(
        call("transfer", to=to, amount=amount)
    )
    assert out.status == "error"
    assert says in out.content.lower() or says in out.content
    assert snapshot.balance(AGENT.address) == AGENT_USDC


async def test_async_transfer_with_both_wallets(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    sync_kit = tools(wallet_guard, wallet, snapshot)
    out = await sync_kit["transfer"].ainvoke(call("transfer", to=PAYEE, amount="1 USDC"))
    assert out.status == "success"
    async_kit = tools(wallet_guard, AsyncGuardedWallet(wallet), snapshot)
    out = await async_kit["transfer"].ainvoke(call("transfer", to=PAYEE, amount="2 USDC"))
    assert out.status == "success" and snapshot.balance(PAYEE) == 3_000_000
    refused = await async_kit["transfer"].ainvoke(call("transfer", to=PAYEE, amount="9 USDC"))
    assert refused.status == "error" and snapshot.balance(PAYEE) == 3_000_000
    # a blocking invoke cannot drive an async wallet: said, not crashed
    blocked = async_kit["transfer"].invoke(call("transfer", to=PAYEE, amount="1 USDC"))
    assert blocked.status == "error" and "ainvoke" in blocked.content


def test_contract_call(wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain) -> None:
    contract_call = tools(wallet_guard, wallet, snapshot)["contract_call"]
    token = snapshot.token
    out = contract_call.invoke(
        call(
            "contract_call",
            contract=token.address,
            function="approve(address,uint256)",
            args=f'["{PAYEE}", 1000000]',
        )
    )
    assert out.status == "success", out.content
    assert token.functions.allowance(AGENT.address, PAYEE).call() == 1_000_000
    # an allowance to a stranger is valued from the calldata and refused
    refused = contract_call.invoke(
        call(
            "contract_call",
            contract=token.address,
            function="approve(address,uint256)",
            args=f'["{STRANGER}", 1]',
        )
    )
    assert refused.status == "error"
    assert token.functions.allowance(AGENT.address, STRANGER).call() == 0
    for bad_args, value in (("not json", "0 ETH"), ('{"a": 1}', "0 ETH"), ("[]", "1 USDC")):
        out = contract_call.invoke(
            call(
                "contract_call",
                contract=token.address,
                function="approve(address,uint256)",
                args=bad_args,
                value=value,
            )
        )
        assert out.status == "error"


def test_paid_fetch(wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain) -> None:
    auth = wallet_guard.x402(
        ledger=Ledger(), allowances=Allowances({snapshot.token.address: 50_000})
    )
    kit = tools(wallet_guard, wallet, snapshot, x402=auth, fetch_hosts=("127.0.0.1",))
    with paywall(snapshot.token.address, PAYEE) as (url, payments):
        out = kit["paid_fetch"].invoke(call("paid_fetch", url=url))
        assert out.status == "success"
        lines = out.content.splitlines()
        assert lines[0] == f"HTTP 200. Paid 0.01 USDC to {PAYEE} (x402 exact, transaction {TX})."
        assert lines[2].startswith("the weather is sunny") and lines[2].endswith("... [more]")
        assert len(lines) == 3 and len(lines[2]) < 4100
        assert len(payments) == 1
    with paywall(snapshot.token.address, PAYEE, amount=60_000) as (url, payments):
        refused = kit["paid_fetch"].invoke(call("paid_fetch", url=url))
        assert refused.status == "error" and payments == []
    assert kit["paid_fetch"].invoke(call("paid_fetch", url="file:///etc/passwd")).status == "error"


def test_paid_fetch_shows_the_counted_upto_maximum_not_the_servers_charge(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    """Attack: an ``upto`` server (or a relay) reports a tiny charge. Before the fix the line
    read "Paid 0.000018 USDC", so the model and the user saw a cheap call while the signed
    maximum (0.1 USDC) stayed counted. Now the maximum is what was paid, the charge is named as
    the server's report, and an unreported charge is said to be unreported."""
    auth = wallet_guard.x402(ledger=Ledger(), allowances=Allowances({snapshot.token.address: 1}))
    fetch = tools(wallet_guard, wallet, snapshot, x402=auth)["paid_fetch"]
    assert isinstance(fetch, PaidFetchTool)

    def line(scheme: str, reported: int | None, pending: bool = False) -> str:
        paid = Receipt(
            scheme=scheme,
            network="eip155:8453",
            asset=snapshot.token.address,
            pay_to=PAYEE,
            payer=AGENT.address,
            authorized=100_000,
            reported_charge=reported,
            transaction="" if pending else TX,
            pending=pending,
            x402_version=2,
            reservation_id="r1",
            reference="permit2:8453:x:1:2",
        )
        response = httpx.Response(200, content=b"ok", extensions={RECEIPT_EXTENSION: paid})
        return fetch._answer(response, b"ok").splitlines()[0]

    assert line("upto", 18) == (
        f"HTTP 200. Paid up to 0.1 USDC to {PAYEE} (x402 upto, transaction {TX}; the server "
        "reports a charge of 0.000018 USDC; the maximum stays counted until the chain shows "
        "the settlement)."
    )
    assert line("upto", None, pending=True) == (
        f"HTTP 200. Paid up to 0.1 USDC to {PAYEE} (x402 upto, pending settlement; the server "
        "reports no charge; the maximum stays counted until the chain shows the settlement)."
    )
    # exact: the signed amount, whatever the server says (it cannot move a different one)
    assert line("exact", 1) == f"HTTP 200. Paid 0.1 USDC to {PAYEE} (x402 exact, transaction {TX})."


def test_toolkit_needs_a_chain_to_read(wallet_guard: Guard, wallet: GuardedWallet) -> None:
    from dataclasses import replace

    from agentguard import ConfigurationError

    wallet_guard.defaults = replace(wallet_guard.defaults, web3=None)
    with pytest.raises(ConfigurationError, match="web3"):
        AgentGuardToolkit(guard=wallet_guard, wallet=wallet).get_tools()
    assert AgentGuardToolkit(guard=wallet_guard, wallet=wallet, web3=Web3()).get_tools()


def test_local_budget_refusal_in_this_chains_units(
    wallet_guard: Guard, snapshot: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local cap (checked before the network is asked) refuses; ``explain`` is given this
    chain's id and the local USDC so it can write the cap in USDC, not atomic units of an
    address it does not know."""
    import agentguard
    from agentguard import Signer
    from agentguard.ledger import Limits, WindowCap

    defaults = wallet_guard.defaults
    assert defaults.signer is not None
    capped = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=wallet_guard,
        web3=snapshot.w3,
        ledger=Ledger(),
        limits=Limits(windows=[WindowCap(snapshot.token.address, 86400, 4_000_000)]),
    )
    real = agentguard.explain
    given: list[dict[str, Any]] = []

    def spy(exc: BaseException, **units: Any) -> str:
        given.append(units)
        return str(real(exc, **units))

    monkeypatch.setattr(agentguard, "explain", spy)
    transfer = tools(wallet_guard, capped, snapshot)["transfer"]
    assert transfer.invoke(call("transfer", to=PAYEE, amount="3 USDC")).status == "success"
    out = transfer.invoke(call("transfer", to=PAYEE, amount="3 USDC"))
    assert out.status == "error"
    assert "4 USDC" in out.content or "4000000" in out.content
    assert given == [{"tokens": snapshot.usdc, "chain_id": 8453}]
    assert snapshot.balance(PAYEE) == 3_000_000


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/admin",
        "http://localhost/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.7/internal",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata endpoint
        "http://0.0.0.0/",
        "http://intranet.internal/",
    ],
)
def test_paid_fetch_never_reaches_this_machine_or_a_private_network_by_default(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain, url: str
) -> None:
    """A prompt-injected model asks the agent to fetch an internal endpoint (an admin page on
    loopback, cloud metadata): before, paid_fetch fetched any http(s) URL from the agent's
    network position and handed the body to the model. Refused now, nothing requested."""
    auth = wallet_guard.x402(ledger=Ledger(), allowances=Allowances({snapshot.token.address: 1}))
    out = tools(wallet_guard, wallet, snapshot, x402=auth)["paid_fetch"].invoke(
        call("paid_fetch", url=url)
    )
    assert out.status == "error" and "private network" in out.content


def test_fetch_hosts_allows_exactly_the_listed_hosts(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    auth = wallet_guard.x402(ledger=Ledger(), allowances=Allowances({snapshot.token.address: 1}))
    kit = tools(wallet_guard, wallet, snapshot, x402=auth, fetch_hosts=("api.example.com",))
    out = kit["paid_fetch"].invoke(call("paid_fetch", url="https://evil.example.net/x"))
    assert out.status == "error" and "may fetch only from" in out.content
