"""GuardedWallet on a real chain (anvil, Base chain id) behind the real reference network."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from web3.exceptions import ContractCustomError

from agentguard import (
    AsyncGuardedWallet,
    Attestation,
    AttestationReplayed,
    BudgetExceeded,
    PolicyDenied,
    TransactionIntent,
    TransactionReverted,
)
from agentguard.chain import transact
from agentguard.chain.vault import execute_calldata
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.testing import SigningSpy

from .conftest import (
    AGENT,
    DAILY_CAP,
    OWNER,
    PAYEE,
    PER_TX_CAP,
    STRANGER,
    AuditList,
    create_vault,
    make_wallet,
    new_policy_client,
)


@pytest.fixture
def sign_spy():
    with SigningSpy() as spy:
        yield spy.calls


def usdc(chain, account: str) -> int:
    return int(chain.token.functions.balanceOf(account).call())


def test_transfer_within_policy_lands(snapshot, network, sign_spy):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    audit = AuditList()
    ledger = Ledger()
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger, audit=audit)
    before = usdc(chain, PAYEE)
    receipt = wallet.transfer(PAYEE, 1_234_567, asset=chain.token.address)
    assert usdc(chain, PAYEE) - before == 1_234_567
    assert sign_spy == ["sign_transaction"]
    assert ledger.get(receipt.reservation_id).state == "committed"
    assert audit.kinds == ["authorized", "signed", "sent", "committed"]
    assert audit.records[-1][1]["tx_hash"] == receipt.tx_hash


def test_native_eth_transfer_and_contract_call(snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = make_wallet(chain, network, policy_client=client)
    before = chain.w3.eth.get_balance(PAYEE)
    wallet.transfer(PAYEE, 10**15)
    assert chain.w3.eth.get_balance(PAYEE) - before == 10**15
    wallet.call(chain.token.address, "function transfer(address to, uint256 amount)", [PAYEE, 7])
    # a function outside the ERC-20 transfer family is still attested; the policy saw it
    receipt = wallet.call(chain.token.address, "approve(address,uint256)", [PAYEE, 1])
    assert receipt.intent.function_signature == "approve(address,uint256)"


@pytest.mark.parametrize(
    ("to", "amount", "reason"),
    [
        (PAYEE, PER_TX_CAP + 1, str(PER_TX_CAP)),
        (STRANGER, 1, STRANGER.lower()),
    ],
)
def test_refused_before_signing_with_a_readable_reason(
    snapshot, network, sign_spy, to, amount, reason
):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    audit = AuditList()
    wallet = make_wallet(chain, network, policy_client=client, audit=audit)
    before = usdc(chain, AGENT.address)
    with pytest.raises(PolicyDenied) as info:
        wallet.transfer(to, amount, asset=chain.token.address)
    assert reason in str(info.value).lower()
    assert sign_spy == []
    assert usdc(chain, AGENT.address) == before
    assert audit.kinds == ["denied"]


def test_daily_cap_at_the_network_holds(snapshot, network, sign_spy):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = make_wallet(chain, network, policy_client=client)
    for _ in range(2):
        wallet.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)
    with pytest.raises(PolicyDenied) as info:
        wallet.transfer(PAYEE, DAILY_CAP - 2 * PER_TX_CAP + 1, asset=chain.token.address)
    assert "86400" in str(info.value) or "window" in str(info.value).lower()
    wallet.transfer(PAYEE, DAILY_CAP - 2 * PER_TX_CAP, asset=chain.token.address)  # exactly the cap
    assert sign_spy == ["sign_transaction"] * 3


def test_ledger_cap_refuses_before_signing_and_releases_at_the_gateway(snapshot, network, sign_spy):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address, expire_after=2)
    limits = Limits(windows=[WindowCap(chain.token.address, 3600, 3_000_000)])
    wallet = make_wallet(chain, network, policy_client=client, limits=limits)
    wallet.transfer(PAYEE, 2_000_000, asset=chain.token.address)
    with pytest.raises(BudgetExceeded):
        wallet.transfer(PAYEE, 1_000_001, asset=chain.token.address)
    assert sign_spy == ["sign_transaction"]
    # the refused attestation was released at the network: once it expires (it can no longer
    # be used) the network's daily total no longer counts it, so the full cap is usable again
    wallet2 = make_wallet(chain, network, policy_client=client)
    wallet2.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)
    deadline = time.time() + 15
    while True:
        try:
            wallet2.transfer(PAYEE, DAILY_CAP - 2_000_000 - PER_TX_CAP, asset=chain.token.address)
            break
        except PolicyDenied:
            assert time.time() < deadline, "the released attestation was never given back"
            time.sleep(0.5)


def test_gas_estimation_revert_is_decoded_and_nothing_is_signed(snapshot, network, sign_spy):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger)
    # allowed by the policy (recipient and amount are fine) but the token refuses: no allowance
    with pytest.raises(TransactionReverted) as info:
        wallet.call(
            chain.token.address, "transferFrom(address,address,uint256)", [OWNER.address, PAYEE, 1]
        )
    assert "allowance" in str(info.value).lower()
    assert sign_spy == []
    assert ledger.usage(wallet.account, 3600).spent.get(chain.token.address.lower(), 0) == 0


def test_vault_mode_executes_only_the_attested_call(snapshot, network, sign_spy):
    chain = snapshot
    vault, policy_id = create_vault(chain, network, salt=b"\x10" * 32)
    audit = AuditList()
    wallet = make_wallet(
        chain, network, policy_client=vault.address, vault=vault.address, audit=audit
    )
    assert wallet.mode == "vault" and wallet.account == vault.address
    before = usdc(chain, PAYEE)
    receipt = wallet.transfer(PAYEE, 2_500_000, asset=chain.token.address)
    assert usdc(chain, PAYEE) - before == 2_500_000
    assert usdc(chain, vault.address) == 100_000_000 - 2_500_000
    tx = chain.w3.eth.get_transaction(receipt.tx_hash)
    assert tx["to"] == vault.address  # the agent only ever talks to its vault

    # replaying the same execute call onchain reverts: single use is enforced by the vault
    data = tx["input"]
    with pytest.raises(ContractCustomError):
        chain.w3.eth.call({"from": AGENT.address, "to": vault.address, "data": data})
    # the agent key calling the vault with a made-up attestation (no operator signatures) reverts
    drain = TransactionIntent.erc20_transfer(
        sender=vault.address,
        token=chain.token.address,
        recipient=AGENT.address,
        amount=10**6,
        chain_id=8453,
    )
    forged = Attestation(
        decision="allow",
        task_id=b"\x05" * 32,
        policy_id=bytes.fromhex(policy_id[2:]),
        policy_client=vault.address,
        intent_hash=drain.intent_hash,
        expires_at=int(time.time()) + 60,
    )
    with pytest.raises(ContractCustomError):
        chain.w3.eth.call(
            {
                "from": AGENT.address,
                "to": vault.address,
                "data": "0x" + execute_calldata(drain, forged).hex(),
            }
        )
    # the owner's kill switch stops the agent
    transact(chain.w3, vault.functions.pause(), sender=OWNER.address)
    with pytest.raises(TransactionReverted, match="VaultPaused"):
        wallet.transfer(PAYEE, 1, asset=chain.token.address)
    assert sign_spy == ["sign_transaction"]


def test_vault_refuses_expired_attestation(snapshot, network):
    chain = snapshot
    vault, _ = create_vault(chain, network, salt=b"\x11" * 32, expire_after=2)
    wallet = make_wallet(chain, network, policy_client=vault.address, vault=vault.address)
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address, token=chain.token.address, recipient=PAYEE, amount=1, chain_id=8453
    )
    verified = wallet._guard.authorize(intent)
    latest = int(chain.w3.eth.get_block("latest")["timestamp"])
    chain.anvil.rpc("evm_mine", max(latest + 1, verified.expires_at + 1))
    with pytest.raises(ContractCustomError):
        chain.w3.eth.call(
            {
                "from": AGENT.address,
                "to": vault.address,
                "data": "0x" + execute_calldata(intent, verified.attestation).hex(),
            }
        )


def test_64_concurrent_sends_never_overspend(snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    cap = 10_000_000
    ledger = Ledger()
    wallet = make_wallet(
        chain,
        network,
        policy_client=client,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 3600, cap)]),
    )
    before = usdc(chain, PAYEE)
    amount = 1_000_003  # not a divisor of the cap: the last fitting send leaves a remainder

    def send(_: int) -> int:
        try:
            wallet.transfer(PAYEE, amount, asset=chain.token.address)
            return 1
        except (BudgetExceeded, PolicyDenied, AttestationReplayed):
            return 0

    with ThreadPoolExecutor(max_workers=64) as pool:
        landed = sum(pool.map(send, range(64)))
    moved = usdc(chain, PAYEE) - before
    assert landed == cap // amount == 9
    assert moved == landed * amount <= cap
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == moved


async def test_async_wallet_has_the_same_surface(snapshot, network):
    from agentguard import AsyncGuardedWallet

    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = AsyncGuardedWallet(make_wallet(chain, network, policy_client=client))
    before = usdc(chain, PAYEE)
    receipt = await wallet.transfer(PAYEE, 42, asset=chain.token.address)
    assert usdc(chain, PAYEE) - before == 42 and receipt.block_number > 0
    with pytest.raises(PolicyDenied):
        await wallet.transfer(STRANGER, 1, asset=chain.token.address)


def test_audit_trail_proves_each_decision_and_holds_no_secret(tmp_path, snapshot, network):
    import subprocess
    import sys

    from agentguard.audit import AuditLog

    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    wallet = make_wallet(chain, network, policy_client=client, audit=audit)
    receipt = wallet.transfer(PAYEE, 1_000, asset=chain.token.address)
    with pytest.raises(PolicyDenied):
        wallet.transfer(STRANGER, 1_000, asset=chain.token.address)
    kinds = [e.kind for e in audit.entries()]
    assert kinds == ["authorized", "signed", "sent", "committed", "denied"]
    authorized = next(audit.entries()).record
    assert authorized["attestation"]["task_id"] == receipt.task_id
    assert len(authorized["attestation"]["signatures"]) >= 2  # enough to re-verify offline
    text = path.read_text()
    assert AGENT.private_key[2:].lower() not in text.lower() and network.api_key not in text
    ok = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "audit", "verify", str(path)], capture_output=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"signed"', '"sent"', 1)
    path.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "audit", "verify", str(path)], capture_output=True
    )
    assert bad.returncode == 1


async def test_24_concurrent_async_sends_never_overspend(snapshot, network):
    """Many async sends at once: nonce waiters must not park the worker threads the lease
    holder needs for its own steps (the default executor has a handful), or all stall."""
    import asyncio

    from agentguard import AsyncGuard, Signer

    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    cap, amount = 10_000_000, 1_000_003
    ledger = Ledger()
    guard = AsyncGuard.connect(
        network.url, policy_client=client, operators=network.operator_addresses,
        api_key=network.api_key, policy_id=network.policy_clients[client],
    )  # fmt: skip
    wallet = guard.wallet(
        signer=Signer.from_key(AGENT.private_key), web3=chain.w3, ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 3600, cap)]),
    )  # fmt: skip
    before = usdc(chain, PAYEE)

    async def send() -> int:
        try:
            await wallet.transfer(PAYEE, amount, asset=chain.token.address)
            return 1
        except (BudgetExceeded, PolicyDenied):
            return 0

    landed = sum(await asyncio.wait_for(asyncio.gather(*(send() for _ in range(24))), 90))
    moved = usdc(chain, PAYEE) - before
    assert landed == cap // amount == 9 and moved == landed * amount
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == moved


async def test_a_cancelled_async_send_leaves_no_nonce_lock_behind(snapshot, network, monkeypatch):
    """A task cancelled between preparing (nonce locked) and sending must give the nonce lock
    back; otherwise every later send of this wallet waits forever."""
    import asyncio

    from agentguard.wallet._chain import AsyncChainPort

    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    wallet = AsyncGuardedWallet(make_wallet(chain, network, policy_client=client, ledger=ledger))
    signing, never = asyncio.Event(), asyncio.Event()
    original = AsyncChainPort.sign

    async def stuck(self, verified, prepared):  # type: ignore[no-untyped-def]
        signing.set()
        await never.wait()

    monkeypatch.setattr(AsyncChainPort, "sign", stuck)
    task = asyncio.create_task(wallet.transfer(PAYEE, 1, asset=chain.token.address))
    await signing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(AsyncChainPort, "sign", original)
    receipt = await asyncio.wait_for(wallet.transfer(PAYEE, 2, asset=chain.token.address), 60)
    assert receipt.block_number > 0
    # the cancelled one was never signed: its hold is reserved (not signed) and expires unused
    assert [r.state for r in ledger._backend.signed()] == []
