"""``GuardedWallet``: an agent's Base wallet that signs nothing it was not allowed to.

Each action walks the data path once, in order::

    intent → authorize (gateway) → verify (quorum, binding, expiry, single use)
           → reserve (ledger) → estimate → sign → mark_signed → send → receipt
           → commit | release                               (audit record at every step)

Two modes. EOA mode: the key sends the attested transaction itself; the SDK is the gate, so a
thief who copies the key is not stopped. Vault mode: funds sit in an ``AgentVault`` and the key
can only call ``vault.execute`` with the attestation, which the contract re-checks; a stolen
key can do nothing the operators do not attest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from agentguard._eip712 import keccak
from agentguard._exceptions import (
    AgentGuardError,
    IntentError,
    OutcomeUnknown,
    TransactionReverted,
)
from agentguard._guard import Guard
from agentguard._intent import (
    NATIVE_ASSET,
    TransactionIntent,
    argument_types,
    canonical_signature,
)
from agentguard._logging import get_logger
from agentguard._signer import SignedTransaction, Signer
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Limits, RecoveryReport, Reservation, Verdict
from agentguard.wallet._nonce import NonceManager
from agentguard.wallet._revert import decode_revert, revert_data

__all__ = ["AsyncGuardedWallet", "AuditSink", "GuardedWallet", "Receipt"]

log = get_logger("agentguard.wallet")


class AuditSink(Protocol):
    def append(self, kind: str, record: Mapping[str, Any]) -> object: ...


@dataclass(frozen=True)
class Receipt:
    """A landed action and the proof trail behind it."""

    tx_hash: str
    block_number: int
    gas_used: int
    task_id: str
    reservation_id: str
    intent: TransactionIntent


def _reference(signed: SignedTransaction) -> str:
    return f"{signed.hash}:{signed.nonce}"


class GuardedWallet:
    """``transfer``, ``call`` and ``send`` — each authorized, reserved, signed, then settled."""

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
    ) -> None:
        self._signer = signer
        self._guard = guard
        self._w3 = web3
        self._ledger = ledger
        self._limits = limits
        self._vault = to_checksum_address(vault) if vault else None
        self._audit = audit
        self._receipt_timeout = receipt_timeout
        self._gas_headroom = gas_headroom
        self._chain_id: int | None = None
        self._nonces = NonceManager(self._pending_nonce)

    def _pending_nonce(self) -> int:
        return int(self._w3.eth.get_transaction_count(self._signer.checksum_address, "pending"))

    def __repr__(self) -> str:
        return f"GuardedWallet(account={self.account}, mode={self.mode})"

    @property
    def mode(self) -> Literal["eoa", "vault"]:
        return "vault" if self._vault else "eoa"

    @property
    def account(self) -> str:
        """Whose funds move: the vault in vault mode, the agent's own address otherwise."""
        return self._vault or self._signer.address

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._w3.eth.chain_id)
        return self._chain_id

    # -- building intents ------------------------------------------------------------------

    def transfer(self, to: str, amount: int, *, asset: str | None = None) -> Receipt:
        """Send ``amount`` atomic units of ETH (``asset=None``) or of an ERC-20 token."""
        if asset is None or asset.lower() == NATIVE_ASSET:
            intent = TransactionIntent(
                from_=self.account, to=to, value=amount, chain_id=self.chain_id
            )
        else:
            intent = TransactionIntent.erc20_transfer(
                sender=self.account,
                token=asset,
                recipient=to,
                amount=amount,
                chain_id=self.chain_id,
            )
        return self.send(intent)

    def call(
        self, contract: str, function: str, args: Sequence[Any] = (), *, value: int = 0
    ) -> Receipt:
        """Call any contract function, named by its signature: ``"approve(address,uint256)"``."""
        signature = canonical_signature(function)
        types = argument_types(signature)
        try:
            data = keccak(signature.encode())[:4] + abi_encode(types, list(args))
        except Exception as exc:
            raise IntentError(f"arguments do not encode as {signature}: {exc}") from None
        return self.send(
            TransactionIntent(
                from_=self.account,
                to=contract,
                value=value,
                data=data,
                chain_id=self.chain_id,
                function_signature=signature,
            )
        )

    # -- the data path ---------------------------------------------------------------------

    def send(self, intent: TransactionIntent) -> Receipt:
        if intent.from_ != self.account:
            raise IntentError(f"intent is from {intent.from_}, this wallet acts as {self.account}")
        if intent.chain_id != self.chain_id:
            raise IntentError(f"intent is for chain {intent.chain_id}, the node is {self.chain_id}")
        verified = self._authorize(intent)
        reservation = self._reserve(verified)
        signed = self._sign_and_send(verified, reservation)
        return self._settle(verified, reservation, signed)

    def _record(self, kind: str, **record: Any) -> None:
        if self._audit is not None:
            self._audit.append(kind, record)

    def _authorize(self, intent: TransactionIntent) -> VerifiedAttestation:
        try:
            verified = self._guard.authorize(intent)
        except AgentGuardError as exc:
            self._record("denied", intent=intent.wire(), error=type(exc).__name__, detail=str(exc))
            raise
        self._record(
            "authorized",
            intent=intent.wire(),
            intent_hash="0x" + intent.intent_hash.hex(),
            attestation=verified.attestation.to_json(),
            signers=list(verified.signers),
        )
        return verified

    def _reserve(self, verified: VerifiedAttestation) -> Reservation:
        try:
            return self._ledger.reserve(
                self.account,
                verified.intent.spend,
                key=verified.task_id,
                expires_at=verified.expires_at,
                limits=self._limits,
            )
        except AgentGuardError as exc:
            self._record(
                "refused", task_id=verified.task_id, error=type(exc).__name__, detail=str(exc)
            )
            self._release_at_gateway(verified)
            raise

    def _sign_and_send(
        self, verified: VerifiedAttestation, reservation: Reservation
    ) -> SignedTransaction:
        try:
            with self._nonces.reserve() as nonce:
                gas, max_fee, tip = self._estimate(verified)
                signed = self._signer.sign_transaction(
                    verified,
                    nonce=nonce,
                    gas=gas,
                    max_fee_per_gas=max_fee,
                    max_priority_fee_per_gas=tip,
                    vault=self._vault,
                )
                # Before the bytes leave the process: after a crash this says "maybe spent".
                self._ledger.mark_signed(reservation.id, _reference(signed))
                self._record("signed", task_id=verified.task_id, tx_hash=signed.hash, nonce=nonce)
                try:
                    self._w3.eth.send_raw_transaction(signed.raw)
                except Web3RPCError as exc:
                    # The node refused it outright: it is not in any mempool, it can never land.
                    self._release(verified, reservation, f"node refused the transaction: {exc}")
                    raise TransactionReverted(
                        "the node refused the signed transaction", reason=str(exc)
                    ) from None
                except Exception as exc:
                    raise OutcomeUnknown(
                        f"sending {signed.hash} failed in transport ({type(exc).__name__}); it may "
                        "still land",
                        reference=signed.hash,
                    ) from None
        except BaseException as exc:
            # Never signed (estimation reverted, interrupted, ...): nothing can land on it.
            if self._ledger.get(reservation.id).state == "reserved":
                reason = exc.message if isinstance(exc, AgentGuardError) else type(exc).__name__
                self._release(verified, reservation, f"not signed: {reason}")
            raise
        self._record("sent", task_id=verified.task_id, tx_hash=signed.hash)
        return signed

    def _release(
        self, verified: VerifiedAttestation, reservation: Reservation, reason: str
    ) -> None:
        self._ledger.release(reservation.id, reason)
        self._release_at_gateway(verified)
        self._record("released", task_id=verified.task_id, reason=reason)

    def _estimate(self, verified: VerifiedAttestation) -> tuple[int, int, int]:
        intent = verified.intent
        if not isinstance(intent, TransactionIntent):
            raise IntentError("a payment attestation cannot be sent as a transaction")
        if self._vault is None:
            call: dict[str, Any] = {
                "from": self._signer.address,
                "to": intent.to,
                "value": intent.value,
                "data": "0x" + intent.data.hex(),
            }
        else:
            from agentguard.chain.vault import execute_calldata

            call = {
                "from": self._signer.address,
                "to": self._vault,
                "value": 0,
                "data": "0x" + execute_calldata(intent, verified.attestation).hex(),
            }
        try:
            estimate = int(self._w3.eth.estimate_gas(call))  # type: ignore[arg-type]
        except (ContractLogicError, Web3RPCError) as exc:
            reason = decode_revert(revert_data(exc)) if revert_data(exc) else str(exc)
            raise TransactionReverted(
                "the call would revert; nothing was signed", reason=reason
            ) from None
        block = self._w3.eth.get_block("pending")
        base = int(block.get("baseFeePerGas", 0) or 0)
        tip = int(self._w3.eth.max_priority_fee)
        return int(estimate * self._gas_headroom) + 10_000, 2 * base + tip, tip

    def _settle(
        self, verified: VerifiedAttestation, reservation: Reservation, signed: SignedTransaction
    ) -> Receipt:
        try:
            receipt = self._w3.eth.wait_for_transaction_receipt(
                signed.hash,  # type: ignore[arg-type]
                timeout=self._receipt_timeout,
            )
        except TimeExhausted:
            raise OutcomeUnknown(
                f"{signed.hash} was sent but not mined within {self._receipt_timeout}s; it stays "
                "counted until wallet.recover() sees it",
                reference=signed.hash,
            ) from None
        if receipt["status"] != 1:
            reason = self._revert_reason(signed, receipt["blockNumber"])
            self._ledger.release(reservation.id, f"reverted onchain: {reason}")
            self._record("reverted", task_id=verified.task_id, tx_hash=signed.hash, reason=reason)
            raise TransactionReverted(
                "the transaction reverted onchain", reason=reason, tx_hash=signed.hash
            )
        self._ledger.commit(reservation.id, signed.hash)
        self._record(
            "committed",
            task_id=verified.task_id,
            tx_hash=signed.hash,
            block_number=int(receipt["blockNumber"]),
            amount=str(verified.intent.spend.amount),
            asset=verified.intent.spend.asset,
        )
        self._commit_at_gateway(verified, signed.hash)
        return Receipt(
            tx_hash=signed.hash,
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            task_id=verified.task_id,
            reservation_id=reservation.id,
            intent=verified.intent,  # type: ignore[arg-type]
        )

    def _revert_reason(self, signed: SignedTransaction, block: int) -> str:
        tx = self._w3.eth.get_transaction(signed.hash)  # type: ignore[arg-type]
        try:
            self._w3.eth.call(
                {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"]},
                block - 1,
            )
        except (ContractLogicError, Web3RPCError) as exc:
            return decode_revert(revert_data(exc))
        return "reverted (the replayed call succeeds now; state changed in between)"

    def _release_at_gateway(self, verified: VerifiedAttestation) -> None:
        try:
            self._guard.authorizer.release(verified.task_id)
        except AgentGuardError as exc:  # best effort: the network keeps counting, never less
            log.info("gateway release failed", task_id=verified.task_id, error=type(exc).__name__)

    def _commit_at_gateway(self, verified: VerifiedAttestation, tx_hash: str) -> None:
        try:
            self._guard.authorizer.commit(verified.task_id, tx_hash)
        except AgentGuardError as exc:
            log.info("gateway commit failed", task_id=verified.task_id, error=type(exc).__name__)

    # -- after a crash ---------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """At startup: settle what a crashed process left signed but uncommitted, from the chain."""
        return self._ledger.recover(self._resolve)

    def _resolve(self, reservation: Reservation) -> Verdict:
        tx_hash, _, nonce_text = (reservation.reference or "").partition(":")
        if not tx_hash or not nonce_text.isdigit():
            return "unknown"
        try:
            receipt = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except Exception:
            receipt = None
        if receipt is not None:
            return "committed" if receipt["status"] == 1 else "released"
        mined = int(self._w3.eth.get_transaction_count(self._signer.checksum_address, "latest"))
        # Its nonce was used by another transaction: this one can never land.
        return "released" if mined > int(nonce_text) else "unknown"


class AsyncGuardedWallet:
    """The same wallet for asyncio code: each action runs in a worker thread.

    The sync wallet already serializes nonces with a lock and the ledger is process-safe, so
    running its blocking calls off the event loop keeps both properties.
    """

    def __init__(self, wallet: GuardedWallet) -> None:
        self._wallet = wallet

    def __repr__(self) -> str:
        return "Async" + repr(self._wallet)

    @property
    def account(self) -> str:
        return self._wallet.account

    async def transfer(self, to: str, amount: int, *, asset: str | None = None) -> Receipt:
        return await asyncio.to_thread(self._wallet.transfer, to, amount, asset=asset)

    async def call(
        self, contract: str, function: str, args: Sequence[Any] = (), *, value: int = 0
    ) -> Receipt:
        return await asyncio.to_thread(self._wallet.call, contract, function, args, value=value)

    async def send(self, intent: TransactionIntent) -> Receipt:
        return await asyncio.to_thread(self._wallet.send, intent)

    async def recover(self) -> RecoveryReport:
        return await asyncio.to_thread(self._wallet.recover)
