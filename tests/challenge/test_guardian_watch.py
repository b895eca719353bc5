"""The watch's guardian key on real vaults (anvil, chain id 8453): it pauses a vault the
owner granted it on, once, and can do nothing else: no withdrawal, no execution, no unpause,
no owner function. A key the owner never granted (or revoked) sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from agentguard.chain import DEV_ACCOUNTS, load_artifact, transact
from agentguard.chain.owner import grant_guardian, revoke_guardian
from agentguard.challenge._chain import pause_vaults
from tests.chain.helpers import decode_revert
from tests.chain.test_vault_guardian import owner_functions

from .watch_support import AGENT, GUARDIAN, OWNER, SHOP, Chain, chain

pytestmark = pytest.mark.integration

KEY = Account.from_key(GUARDIAN.private_key)
OPERATORS = [a.address for a in DEV_ACCOUNTS[6:9]]


@pytest.fixture(scope="module")
def parts() -> Iterator[Chain]:
    with chain() as c:
        yield c


def vault(c: Chain, salt: bytes, *, granted: bool = True) -> Contract:
    receipt = transact(
        c.w3,
        c.factory.functions.createVault(
            OWNER.address, AGENT.address, OPERATORS, 2, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = c.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    v = c.w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)
    transact(c.w3, c.token.functions.mint(v.address, 50_000_000), sender=OWNER.address)
    c.w3.eth.send_transaction({"from": OWNER.address, "to": v.address, "value": 10**18})
    if granted:
        grant_guardian(c.w3, v, KEY.address, sender=OWNER.address)
    return v


def nonce(c: Chain) -> int:
    return c.w3.eth.get_transaction_count(KEY.address)


def test_the_guardian_key_pauses_once(parts: Chain) -> None:
    c = parts
    v = vault(c, b"\x31" * 32)
    (result,) = pause_vaults(c.w3, [v.address], KEY)
    assert result.paused and result.tx_hash is not None and result.error is None
    assert v.functions.paused().call() is True
    receipt = c.w3.eth.get_transaction_receipt(result.tx_hash)
    (paused,) = v.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["by"] == KEY.address
    sent = nonce(c)
    (again,) = pause_vaults(c.w3, [v.address], KEY)  # a re-run after a crash
    assert again.paused and again.tx_hash is None and nonce(c) == sent


def test_a_key_never_granted_or_revoked_sends_nothing(parts: Chain) -> None:
    c = parts
    never = vault(c, b"\x32" * 32, granted=False)
    revoked = vault(c, b"\x33" * 32)
    revoke_guardian(c.w3, revoked, KEY.address, sender=OWNER.address)
    sent = nonce(c)
    results = pause_vaults(c.w3, [never.address, revoked.address, c.token.address], KEY)
    assert [r.paused for r in results] == [False, False, False]
    assert "not a guardian" in str(results[0].error) and "not a guardian" in str(results[1].error)
    assert results[2].error is not None  # not a vault at all: reported, not raised
    assert nonce(c) == sent
    assert never.functions.paused().call() is False
    assert revoked.functions.paused().call() is False


def test_one_failing_vault_does_not_keep_the_others_running(parts: Chain) -> None:
    c = parts
    good = vault(c, b"\x34" * 32)
    results = pause_vaults(c.w3, [c.token.address, good.address], KEY)
    assert [r.paused for r in results] == [False, True]
    assert good.functions.paused().call() is True


def _refusal(c: Chain, v: Contract, name: str, args: list[Any]) -> str:
    """The vault's error for the guardian's own signed transaction of ``name(args)``."""
    call = getattr(v.functions, name)(*args)
    try:
        transact(c.w3, call, sender=KEY)
    except ContractCustomError as exc:
        return decode_revert(exc.data)[0]
    return "accepted"


def test_the_guardian_can_do_nothing_but_pause(parts: Chain) -> None:
    """Every state-changing owner function of the vault's ABI (enumerated, so one added
    later is covered), the agent's execute, and unpause: all refused to the guardian key;
    the vault's funds and state stay as they were."""
    c = parts
    v = vault(c, b"\x35" * 32)
    pause_vaults(c.w3, [v.address], KEY)
    tokens = c.token.functions.balanceOf(v.address).call()
    eth = c.w3.eth.get_balance(v.address)
    attempts = [
        ("withdraw", [c.token.address, KEY.address, 1]),
        ("withdraw", ["0x" + "00" * 20, KEY.address, 1]),
        ("unpause", []),
        ("execute", [c.token.address, 0, b"", b"", b"\x01" * 32, b"\x01" * 32, 1, [], 0]),
        ("setAgent", [KEY.address]),
        ("setOperators", [[KEY.address], 1]),
        ("grantGuardian", [SHOP]),
        ("transferOwnership", [KEY.address]),
        *owner_functions(v),
    ]
    refusals = {name: _refusal(c, v, name, args) for name, args in attempts}
    assert set(refusals.values()) <= {"NotOwner", "NotAgent"}, refusals
    assert refusals["execute"] == "NotAgent" and refusals["unpause"] == "NotOwner"
    assert c.token.functions.balanceOf(v.address).call() == tokens
    assert c.w3.eth.get_balance(v.address) == eth
    assert v.functions.paused().call() is True
    assert v.functions.owner().call() == OWNER.address
    assert v.functions.agent().call() == AGENT.address
