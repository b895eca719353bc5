"""The in-flight rule across a policy switch, each branch with real parts: a guarded wallet in
vault mode, the reference network reading the chain, anvil (8453).

An attestation under the old policy id is refused by the vault from the transaction that
applies the switch on. Where the switch lands decides who notices, never whether the amount
stays counted: before the wallet signs (its gas estimate reverts: nothing signed, the hold
given back), between its estimate and its transaction (the transaction reverts onchain: the
hold given back, the gas counted), or before the attestation is issued (a Guard pinned to the
old id refuses the new one with ``PolicyIdMismatch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.types import RPCEndpoint, RPCResponse

from agentguard import Guard, PolicyIdMismatch, Signer
from agentguard._exceptions import TransactionReverted
from agentguard.chain.owner import apply_policy_switch, roll_out_policy
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet
from tests.network.test_tasks import task_status
from tests.wallet.conftest import AuditList

from .conftest import (
    AGENT,
    LOOSE,
    NETCHECK,
    OWNER,
    SHOP,
    TIGHT,
    UNIT,
    Chain,
    new_vault,
    pin_read_again,
)

HOUR = 3600


class _HookBeforeSend(HTTPProvider):
    """The agent's node connection; runs ``hook`` once, just before the first signed
    transaction goes out (after the wallet's gas estimate)."""

    def __init__(self, url: str, hook: Callable[[], object]) -> None:
        super().__init__(url)
        self._hook: Callable[[], object] | None = hook

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_sendRawTransaction" and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return super().make_request(method, params)


def pinned_guard(network: ReferenceNetwork, vault: Contract, policy_id: bytes) -> Guard:
    return Guard.connect(
        network.url,
        policy_client=vault.address,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id="0x" + policy_id.hex(),
    )


def wallet(
    chain: Chain, guard: Guard, vault: Contract, *, w3: Web3 | None = None
) -> tuple[GuardedWallet, Ledger, AuditList]:
    ledger, audit = Ledger(), AuditList()
    guarded = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard,
        web3=w3 or chain.w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 86400, 10**15)]),
        vault=vault.address,
        audit=audit,
    )
    return guarded, ledger, audit


def scheduled(chain: Chain, network: ReferenceNetwork) -> tuple[Contract, bytes, bytes]:
    """A vault on LOOSE with TIGHT registered and due (the delay has passed, not applied)."""
    vault = new_vault(chain, network, LOOSE, delay=HOUR)
    old_id = bytes(vault.functions.policyId().call())
    rollout = roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    chain.anvil.rpc("evm_increaseTime", HOUR)
    chain.anvil.rpc("evm_mine")
    return vault, old_id, rollout.policy_id


def spent(guarded: GuardedWallet, ledger: Ledger, chain: Chain) -> int:
    """What the wallet's ledger counts in the token (held or spent)."""
    return int(ledger.usage(guarded.account, HOUR).spent.get(chain.token.address.lower(), 0))


def task_of(audit: AuditList) -> str:
    (authorized,) = [r for kind, r in audit.records if kind == "authorized"]
    return str(authorized["attestation"]["task_id"])


def test_a_switch_before_the_wallet_signs_releases_the_hold_and_nothing_is_signed(
    chain: Chain, network: ReferenceNetwork
) -> None:
    vault, old_id, _ = scheduled(chain, network)
    guard = pinned_guard(network, vault, old_id)
    authorize = guard.authorize

    def authorize_then_switch(*args: Any, **kwargs: Any) -> Any:
        verified = authorize(*args, **kwargs)
        apply_policy_switch(chain.w3, vault, sender=OWNER.address)
        return verified

    guard.authorize = authorize_then_switch  # type: ignore[method-assign]
    guarded, ledger, audit = wallet(chain, guard, vault)
    balance = chain.token.functions.balanceOf(SHOP).call()
    with pytest.raises(TransactionReverted, match="PolicyMismatch") as refused:
        guarded.transfer(SHOP, 3 * UNIT, asset=chain.token.address)
    assert "nothing was signed" in str(refused.value)
    assert spent(guarded, ledger, chain) == 0
    assert audit.kinds[-1] == "released" and "signed" not in audit.kinds
    assert task_status(network, task_of(audit), until="releasing")[0] == "releasing"
    assert chain.token.functions.balanceOf(SHOP).call() == balance


def test_a_switch_between_the_estimate_and_the_transaction_reverts_onchain_and_releases(
    chain: Chain, network: ReferenceNetwork
) -> None:
    vault, old_id, _ = scheduled(chain, network)
    agent_w3 = Web3(
        _HookBeforeSend(
            chain.anvil.url, lambda: apply_policy_switch(chain.w3, vault, sender=OWNER.address)
        )
    )
    guarded, ledger, audit = wallet(chain, pinned_guard(network, vault, old_id), vault, w3=agent_w3)
    balance = chain.token.functions.balanceOf(SHOP).call()
    with pytest.raises(TransactionReverted, match="PolicyMismatch"):
        guarded.transfer(SHOP, 3 * UNIT, asset=chain.token.address)
    assert "signed" in audit.kinds  # it left the process, and the chain refused it
    assert spent(guarded, ledger, chain) == 0
    assert task_status(network, task_of(audit), until="releasing")[0] == "releasing"
    assert chain.token.functions.balanceOf(SHOP).call() == balance


def test_a_guard_pinned_to_the_old_id_refuses_the_new_one_and_says_what_to_do(
    chain: Chain, network: ReferenceNetwork
) -> None:
    vault, old_id, new_id = scheduled(chain, network)
    apply_policy_switch(chain.w3, vault, sender=OWNER.address)
    pin_read_again()
    guarded, ledger, audit = wallet(chain, pinned_guard(network, vault, old_id), vault)
    with pytest.raises(PolicyIdMismatch) as refused:
        guarded.transfer(SHOP, UNIT // 2, asset=chain.token.address)
    assert refused.value.attested == "0x" + new_id.hex()
    assert refused.value.pinned == "0x" + old_id.hex()
    assert "pin the new id" in str(refused.value)
    assert spent(guarded, ledger, chain) == 0 and audit.kinds[-1] == "denied"

    guarded, ledger, _ = wallet(chain, pinned_guard(network, vault, new_id), vault)
    guarded.transfer(SHOP, UNIT // 2, asset=chain.token.address)
    assert spent(guarded, ledger, chain) == UNIT // 2
