"""``GuardedWallet``: an agent's Base wallet that signs nothing it was not allowed to.

The wallet only builds intents (``transfer``, ``call``, ``send``) and hands them, with its
chain port (``_chain.py``), to the one guarded pipeline (``agentguard.pipeline``)::

    reserve → authorize + verify → bind → estimate (fees within FeeCap) → [reserve fee]
            → sign → mark_signed → send → receipt → commit | release | stays counted

Two modes. EOA mode: the key sends the attested transaction itself; the SDK is the gate, so a
thief who copies the key is not stopped. Vault mode: funds sit in an ``AgentVault`` and the key
can only call ``vault.execute`` with the attestation, which the contract re-checks; a stolen
key can do nothing the operators do not attest. A Newton-mode vault (``newton=True``, the
default when the guard verifies Newton attestations) is called with ``executeNewton`` and the
gateway's task, response and BLS certificate; its intents are sent by the agent's key (Newton's
``intent.from == msg.sender``) and attested for the vault as policy client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from web3 import Web3

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError, IntentError
from agentguard._intent import (
    NATIVE_ASSET,
    TransactionIntent,
    argument_types,
    canonical_signature,
)
from agentguard._signer import Signer
from agentguard.ledger import Ledger, Limits, RecoveryReport
from agentguard.pipeline import Action, AsyncRunner, AuditSink, Runner, Settled
from agentguard.wallet._chain import AsyncChainPort, ChainPort

if TYPE_CHECKING:
    from agentguard._guard import AsyncGuard, Guard

__all__ = ["AsyncGuardedWallet", "AuditSink", "GuardedWallet", "Receipt"]


@dataclass(frozen=True)
class Receipt:
    """A landed action and the proof trail behind it."""

    tx_hash: str
    block_number: int
    gas_used: int
    task_id: str
    reservation_id: str
    intent: TransactionIntent


class _Account:
    """Whose funds move, and the intents that move them (no I/O beyond the chain id)."""

    def __init__(
        self,
        *,
        signer: Signer,
        web3: Web3,
        ledger: Ledger,
        limits: Limits,
        vault: str | None,
        audit: AuditSink | None,
        receipt_timeout: float,
        gas_headroom: float,
        newton: bool = False,
    ) -> None:
        self.signer, self.w3, self.ledger, self.limits, self.audit = (
            signer,
            web3,
            ledger,
            limits,
            audit,
        )
        self.vault = to_checksum_address(vault) if vault else None
        if newton and self.vault is None:
            raise ConfigurationError("newton=True names a Newton-mode vault: pass vault=")
        self.newton = newton
        self.port = ChainPort(
            w3=web3,
            signer=signer,
            vault=self.vault,
            gas_headroom=gas_headroom,
            receipt_timeout=receipt_timeout,
        )
        self.async_port = AsyncChainPort(self.port)
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        """Who sends the intents: the vault, or the agent's key (EOA mode and Newton vaults)."""
        return self.signer.address if self.newton or not self.vault else self.vault

    @property
    def funds(self) -> str:
        """Whose funds move: the vault in vault mode, the agent's own address otherwise."""
        return self.vault or self.signer.address

    @property
    def mode(self) -> Literal["eoa", "vault"]:
        return "vault" if self.vault else "eoa"

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def transfer(self, to: str, amount: int, asset: str | None) -> TransactionIntent:
        if asset is None or asset.lower() == NATIVE_ASSET:
            return TransactionIntent(
                from_=self.address, to=to, value=amount, chain_id=self.chain_id
            )
        return TransactionIntent.erc20_transfer(
            sender=self.address, token=asset, recipient=to, amount=amount, chain_id=self.chain_id
        )

    def call(
        self, contract: str, function: str, args: Sequence[Any], value: int
    ) -> TransactionIntent:
        signature = canonical_signature(function)
        types = argument_types(signature)
        try:
            data = keccak(signature.encode())[:4] + abi_encode(types, list(args))
        except Exception as exc:
            raise IntentError(f"arguments do not encode as {signature}: {exc}") from None
        return TransactionIntent(
            from_=self.address,
            to=contract,
            value=value,
            data=data,
            chain_id=self.chain_id,
            function_signature=signature,
        )

    def action(self, intent: TransactionIntent, approval_timeout: float | None = None) -> Action:
        if not isinstance(intent, TransactionIntent):
            raise IntentError("a wallet sends TransactionIntents")
        if intent.from_ != self.address:
            raise IntentError(f"intent is from {intent.from_}, this wallet acts as {self.address}")
        if intent.chain_id != self.chain_id:
            raise IntentError(f"intent is for chain {intent.chain_id}, the node is {self.chain_id}")
        return Action(
            agent=self.address,
            intent=intent,
            limits=self.limits,
            rail="transaction",
            approval_timeout=approval_timeout,
        )

    def recover(self) -> RecoveryReport:
        return self.ledger.recover(self.port.resolve)


def _newton_vault(guard: object, vault: str | None, newton: bool | None) -> bool:
    """Whether ``vault`` is a Newton-mode vault: as told, else whether ``guard`` verifies
    Newton attestations (a Newton network's attestations pass no other vault)."""
    if newton is not None:
        if not isinstance(newton, bool):
            raise ConfigurationError(f"newton must be True, False or None, got {newton!r:.40}")
        return newton
    if vault is None:
        return False
    from agentguard._verifier import NewtonBindingVerifier
    from agentguard.newton import NewtonVerifier

    return isinstance(getattr(guard, "verifier", None), NewtonBindingVerifier | NewtonVerifier)


def _receipt(settled: Settled) -> Receipt:
    receipt = settled.outcome.result
    intent = settled.verified.intent
    assert isinstance(intent, TransactionIntent)  # the pipeline returns what it was given
    return Receipt(
        tx_hash=str(settled.signed.record["tx_hash"]),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        task_id=settled.verified.task_id,
        reservation_id=settled.reservation.id,
        intent=intent,
    )


class GuardedWallet:
    """``transfer``, ``call`` and ``send`` — each through the guarded pipeline.

    Gas and fees stay within the signer's ``FeeCap`` whatever the RPC node quotes; in EOA mode
    the worst-case fee is held in the budget as ETH until the receipt is in.
    """

    def __init__(
        self,
        *,
        signer: Signer,
        guard: Guard,
        web3: Web3,
        ledger: Ledger,
        limits: Limits,
        vault: str | None = None,
        audit: AuditSink | None = None,
        receipt_timeout: float = 60.0,
        gas_headroom: float = 1.25,
        newton: bool | None = None,
    ) -> None:
        self._guard = guard
        self._account = _Account(
            signer=signer,
            web3=web3,
            ledger=ledger,
            limits=limits,
            vault=vault,
            audit=audit,
            receipt_timeout=receipt_timeout,
            gas_headroom=gas_headroom,
            newton=_newton_vault(guard, vault, newton),
        )
        self._runner = Runner(guard, ledger, audit)

    def __repr__(self) -> str:
        return f"GuardedWallet(account={self.account}, mode={self.mode})"

    @property
    def mode(self) -> Literal["eoa", "vault"]:
        """``"vault"`` when an ``AgentVault`` holds the funds, else ``"eoa"``."""
        return self._account.mode

    @property
    def account(self) -> str:
        """Whose funds move: the vault in vault mode, the agent's own address otherwise."""
        return self._account.funds

    @property
    def chain_id(self) -> int:
        """The chain this wallet acts on (read from the node once)."""
        return self._account.chain_id

    def transfer(
        self,
        to: str,
        amount: int,
        *,
        asset: str | None = None,
        approval_timeout: float | None = None,
    ) -> Receipt:
        """Send ``amount`` atomic units of ETH (``asset=None``) or of an ERC-20 token.
        ``approval_timeout``: seconds to wait for a human approval the policy asks for."""
        return self.send(
            self._account.transfer(to, amount, asset), approval_timeout=approval_timeout
        )

    def call(
        self,
        contract: str,
        function: str,
        args: Sequence[Any] = (),
        *,
        value: int = 0,
        approval_timeout: float | None = None,
    ) -> Receipt:
        """Call any contract function, named by its signature: ``"approve(address,uint256)"``."""
        return self.send(
            self._account.call(contract, function, args, value), approval_timeout=approval_timeout
        )

    def send(self, intent: TransactionIntent, *, approval_timeout: float | None = None) -> Receipt:
        """Authorize, sign, send and confirm ``intent``; the ``Receipt`` once it landed."""
        action = self._account.action(intent, approval_timeout)
        return _receipt(self._runner.run(action, self._account.port))

    def recover(self) -> RecoveryReport:
        """At startup: settle what a crashed process left signed but uncommitted, from the chain."""
        return self._account.recover()


class AsyncGuardedWallet:
    """The same wallet for asyncio code, on the pipeline's async runner.

    ``AsyncGuardedWallet(wallet)`` wraps a ``GuardedWallet`` (its blocking guard runs in a
    worker thread); ``AsyncGuard.wallet(...)`` builds one on an ``AsyncGuard``. Chain calls run
    in worker threads; nonces stay serialized by the port's lock.
    """

    def __init__(self, wallet: GuardedWallet) -> None:
        self._account = wallet._account
        self._runner = AsyncRunner(wallet._guard, self._account.ledger, self._account.audit)

    @classmethod
    def on(
        cls,
        guard: AsyncGuard,
        *,
        signer: Signer,
        web3: Web3,
        ledger: Ledger,
        limits: Limits,
        vault: str | None = None,
        audit: AuditSink | None = None,
        receipt_timeout: float = 60.0,
        gas_headroom: float = 1.25,
        newton: bool | None = None,
    ) -> AsyncGuardedWallet:
        """A wallet on an ``AsyncGuard`` (what ``AsyncGuard.wallet`` returns)."""
        wallet = cls.__new__(cls)
        wallet._account = _Account(
            signer=signer,
            web3=web3,
            ledger=ledger,
            limits=limits,
            vault=vault,
            audit=audit,
            receipt_timeout=receipt_timeout,
            gas_headroom=gas_headroom,
            newton=_newton_vault(guard, vault, newton),
        )
        wallet._runner = AsyncRunner(guard, ledger, audit)
        return wallet

    def __repr__(self) -> str:
        return f"AsyncGuardedWallet(account={self.account}, mode={self._account.mode})"

    @property
    def account(self) -> str:
        return self._account.funds

    @property
    def chain_id(self) -> int:
        return self._account.chain_id

    async def transfer(
        self,
        to: str,
        amount: int,
        *,
        asset: str | None = None,
        approval_timeout: float | None = None,
    ) -> Receipt:
        intent = await asyncio.to_thread(self._account.transfer, to, amount, asset)
        return await self.send(intent, approval_timeout=approval_timeout)

    async def call(
        self,
        contract: str,
        function: str,
        args: Sequence[Any] = (),
        *,
        value: int = 0,
        approval_timeout: float | None = None,
    ) -> Receipt:
        intent = await asyncio.to_thread(self._account.call, contract, function, args, value)
        return await self.send(intent, approval_timeout=approval_timeout)

    async def send(
        self, intent: TransactionIntent, *, approval_timeout: float | None = None
    ) -> Receipt:
        action = await asyncio.to_thread(self._account.action, intent, approval_timeout)
        return _receipt(await self._runner.run(action, self._account.async_port))

    async def recover(self) -> RecoveryReport:
        return await asyncio.to_thread(self._account.recover)
