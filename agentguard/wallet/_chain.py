"""The wallet's port into the pipeline: prepare, sign, send and confirm one EIP-1559 transaction.

Only this module talks to the RPC node, and it treats the node as what it is, a remote party
whose answers can be lost, late or false:

* a send that raises proves nothing: after a 504 or a read timeout the node may hold the
  transaction (and a retry then answers "already known" or "nonce too low"). Unless the node
  then shows the transaction, the outcome is unknown and stays counted;
* a receipt lookup that raises is not a missing receipt: recovery answers ``unknown``, never
  "can never land"; only another transaction found in a block under this nonce proves that
  ("nonce used, no receipt" alone is a node's word, and a lagging node says it of one that
  landed);
* a read that fails before signing (nonce, block, fees) is ``NodeUnavailable``: nothing was
  signed, and the node's own error never reaches the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from eth_typing import HexStr
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from agentguard._exceptions import (
    AgentGuardError,
    IntentError,
    NodeUnavailable,
    OutcomeUnknown,
    TransactionReverted,
)
from agentguard._fees import FeeQuote, quote
from agentguard._intent import NATIVE_ASSET, Spend, TransactionIntent
from agentguard._redact import register_node_secrets
from agentguard._signer import SignedTransaction, Signer, vault_calldata
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Reservation, Verdict
from agentguard.pipeline import (
    Landed,
    Outcome,
    Prepared,
    Reverted,
    Sent,
    Signed,
    StillCounted,
)
from agentguard.wallet._nonce import Lease, NonceManager
from agentguard.wallet._revert import decode_revert, revert_data

__all__ = ["FEE_SUFFIX", "ChainPort"]

_CLOCK_SKEW = 600
"""Seconds a block's timestamp may trail the ledger's clock when recovery searches blocks."""

FEE_SUFFIX = ":fee"
"""The pipeline keys a fee hold ``<reservation>:fee``; recovery settles it by the same tx."""


@contextmanager
def _node_read(what: str) -> Iterator[None]:
    """A failed read before signing, as a typed error. Only the error's type is kept: a
    dependency's message can carry the RPC URL, and with it a provider's API key."""
    try:
        yield
    except AgentGuardError:
        raise
    except Exception as exc:
        raise NodeUnavailable(
            f"the RPC node failed while {what} ({type(exc).__name__}); nothing was signed"
        ) from None


def _why(exc: Exception) -> str:
    """What a failed call says, without a transport error's text (it names the RPC URL)."""
    if isinstance(exc, Web3RPCError):  # the node's own JSON-RPC error message
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return type(exc).__name__


def _is_revert(exc: Exception) -> bool:
    """The call itself reverts (revert data, or the node says so), as opposed to a node error."""
    return (
        isinstance(exc, ContractLogicError)
        or bool(revert_data(exc))
        or "revert" in str(exc).lower()
    )


@dataclass(frozen=True, slots=True)
class _Ticket:
    lease: Lease
    fees: FeeQuote


@dataclass(frozen=True, slots=True)
class _Bytes:
    tx: SignedTransaction
    lease: Lease


class ChainPort:
    """EOA mode (``vault=None``): the attested call from the key itself, its fee held in the
    budget. Vault mode: ``vault.execute(...)`` carrying the attestation."""

    def __init__(
        self,
        *,
        w3: Web3,
        signer: Signer,
        vault: str | None,
        gas_headroom: float,
        receipt_timeout: float,
    ) -> None:
        self._w3, self._signer, self._vault = w3, signer, vault
        register_node_secrets(w3)  # a node's error message may echo its URL (a provider key)
        self._headroom, self._timeout = gas_headroom, receipt_timeout
        self._nonces = NonceManager(self._pending_nonce)
        # whose reservations this port may settle: the vault's (vault mode) or the key's
        self._accounts = {a.lower() for a in (signer.address, vault) if a}

    def _pending_nonce(self) -> int:
        with _node_read("reading the pending nonce"):
            return int(self._w3.eth.get_transaction_count(self._signer.checksum_address, "pending"))

    # -- Port -------------------------------------------------------------------------------

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        return self.prepare_with(self._nonces.acquire(), verified)

    def prepare_with(self, lease: Lease, verified: VerifiedAttestation) -> Prepared:
        try:
            fees = self._quote(verified)
        except BaseException:
            lease.done(broadcast=False)
            raise
        fee = None
        if self._vault is None:  # the key pays the fee from the agent's own ETH
            fee = Spend(asset=NATIVE_ASSET, amount=fees.max_total)
        return Prepared(
            payload=_Ticket(lease, fees),
            fee=fee,
            record={"gas": fees.gas, "max_fee_per_gas": fees.max_fee_per_gas},
        )

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        ticket = cast(_Ticket, prepared.payload)
        tx = self._signer.sign_transaction(
            verified,
            nonce=ticket.lease.nonce,
            gas=ticket.fees.gas,
            max_fee_per_gas=ticket.fees.max_fee_per_gas,
            max_priority_fee_per_gas=ticket.fees.max_priority_fee_per_gas,
            vault=self._vault,
        )
        return Signed(
            reference=f"{tx.hash}:{tx.nonce}",
            payload=_Bytes(tx, ticket.lease),
            record={"tx_hash": tx.hash, "nonce": tx.nonce},
        )

    def abandon(self, prepared: Prepared) -> None:
        cast(_Ticket, prepared.payload).lease.done(broadcast=False)

    def send(self, signed: Signed) -> Sent | Outcome:
        sent = cast(_Bytes, signed.payload)
        tx = sent.tx
        broadcast = False
        try:
            self._w3.eth.send_raw_transaction(tx.raw)
            broadcast = True
        except Exception as exc:
            if self._node_has(tx.hash):  # e.g. "already known" after a lost first answer
                return Sent({"tx_hash": tx.hash, "send_error": type(exc).__name__})
            return StillCounted(
                "outcome_unknown",
                f"sending raised {type(exc).__name__}",
                error=OutcomeUnknown(
                    f"sending {tx.hash} failed ({_why(exc)}); the "
                    "node may still have received it, so it stays counted until "
                    "wallet.recover() sees it land or its nonce used by another transaction",
                    reference=tx.hash,
                ),
                record={"tx_hash": tx.hash},
            )
        finally:
            sent.lease.done(broadcast=broadcast)
        return Sent({"tx_hash": tx.hash})

    def confirm(self, signed: Signed) -> Outcome:
        tx = cast(_Bytes, signed.payload).tx
        try:
            receipt = self._w3.eth.wait_for_transaction_receipt(
                HexStr(tx.hash), timeout=self._timeout
            )
        except Exception as exc:
            return StillCounted(
                "outcome_unknown",
                f"no receipt ({type(exc).__name__})",
                error=OutcomeUnknown(
                    f"{tx.hash} was sent but its receipt did not come within {self._timeout}s "
                    f"({type(exc).__name__}); it stays counted until wallet.recover() sees it",
                    reference=tx.hash,
                ),
                record={"tx_hash": tx.hash},
            )
        fee = int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0) or 0)
        block = int(receipt["blockNumber"])
        record = {"tx_hash": tx.hash, "block_number": block, "gas_used": int(receipt["gasUsed"])}
        if receipt["status"] != 1:
            reason = self._revert_reason(tx, block)
            return Reverted(
                reason,
                error=TransactionReverted(
                    "the transaction reverted onchain", reason=reason, tx_hash=tx.hash
                ),
                fee=fee,
                record=record,
            )
        return Landed(tx.hash, fee=fee, record=record, result=receipt)

    @property
    def nonces(self) -> NonceManager:
        return self._nonces

    # -- after a crash ------------------------------------------------------------------------

    def resolve(self, reservation: Reservation) -> Verdict:
        """What became of a signed reservation, from the chain; ``unknown`` unless proven.
        A lookup that raises propagates (``Ledger.recover`` counts it as ``unknown``).

        A receipt settles any reservation (its hash is the proof), but the nonce is judged
        only for this wallet's own: a shared ledger holds every agent's, and "the nonce was used
        by another transaction" is a fact about *this* key's nonces only (another agent's
        reservation is left to that agent's recover)."""
        tx_hash, _, nonce_text = (reservation.reference or "").partition(":")
        if not tx_hash or not nonce_text.isdigit():
            return "unknown"
        fee = reservation.key.endswith(FEE_SUFFIX)
        verdict = self._receipt_verdict(tx_hash, fee)
        if verdict is not None or reservation.agent not in self._accounts:
            return verdict or "unknown"
        nonce = int(nonce_text)
        mined = int(self._w3.eth.get_transaction_count(self._signer.checksum_address, "latest"))
        if mined <= nonce:
            return "unknown"
        # The nonce is used. Ask for the receipt again: it may have been mined in between.
        verdict = self._receipt_verdict(tx_hash, fee)
        if verdict is not None:
            return verdict
        # "Nonce used, no receipt" is only a node's word (a lagging or lying one says it of a
        # transaction that landed). Proof is the transaction that used the nonce, found in
        # its block: another one releases, ours counts.
        found = self._hash_at_nonce(nonce, reservation.created_at)
        if found is None:
            return "unknown"
        return "committed" if found == tx_hash.lower() else "released"

    def _hash_at_nonce(self, nonce: int, since: float) -> str | None:
        """The hash of the mined transaction from this key with ``nonce``, found by bisecting
        the account's nonce over blocks (from about ``since``), or ``None`` if the node's
        blocks do not show one (then nothing is proven). Needs the node's state at those
        blocks; a node without it raises, and the reservation stays counted."""
        eth, me = self._w3.eth, self._signer.checksum_address
        hi = int(eth.block_number)
        lo = max(self._first_block_after(since - _CLOCK_SKEW, hi) - 1, 0)
        if int(eth.get_transaction_count(me, lo)) > nonce:
            lo = 0  # used already before ``since``: search the whole chain
        if int(eth.get_transaction_count(me, hi)) <= nonce:
            return None
        while lo < hi:  # the first block after which the account's nonce exceeds ``nonce``
            mid = (lo + hi) // 2
            if int(eth.get_transaction_count(me, mid)) > nonce:
                hi = mid
            else:
                lo = mid + 1
        block = eth.get_block(hi, full_transactions=True)
        for tx in block["transactions"]:
            if not isinstance(tx, Mapping):
                continue
            if str(tx["from"]).lower() == me.lower() and int(tx["nonce"]) == nonce:
                found = "0x" + bytes(tx["hash"]).hex()
                receipt = eth.get_transaction_receipt(HexStr(found))  # the block's own record
                return found if int(receipt["blockNumber"]) == hi else None
        return None

    def _first_block_after(self, timestamp: float, latest: int) -> int:
        """The first block at or after ``timestamp`` (headers only), ``latest`` if none."""
        lo, hi = 0, latest
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self._w3.eth.get_block(mid)["timestamp"]) >= timestamp:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _receipt_verdict(self, tx_hash: str, fee: bool) -> Verdict | None:
        try:
            receipt = self._w3.eth.get_transaction_receipt(HexStr(tx_hash))
        except TransactionNotFound:
            return None
        if receipt["status"] == 1 or fee:  # a reverted transaction still paid its fee
            return "committed"
        return "released"

    # -- helpers ------------------------------------------------------------------------------

    def _quote(self, verified: VerifiedAttestation) -> FeeQuote:
        intent = verified.intent
        if not isinstance(intent, TransactionIntent):
            raise IntentError("a payment attestation cannot be sent as a transaction")
        if self._vault is None:
            to, value, data = intent.to, intent.value, intent.data
        else:
            to, value = self._vault, 0
            data = vault_calldata(
                intent, verified.attestation, vault=self._vault, agent=self._signer.address
            )
        call: dict[str, Any] = {
            "from": self._signer.address,
            "to": to,
            "value": value,
            "data": "0x" + data.hex(),
        }
        with _node_read("estimating gas"):
            try:
                estimate = int(self._w3.eth.estimate_gas(call))  # type: ignore[arg-type]
            except (ContractLogicError, Web3RPCError) as exc:
                if not _is_revert(exc):  # "nonce too low", a rate limit: the node, not the call
                    raise NodeUnavailable(
                        f"the RPC node refused to estimate gas ({_why(exc)}); nothing was signed"
                    ) from None
                reason = decode_revert(revert_data(exc)) if revert_data(exc) else str(exc)
                raise TransactionReverted(
                    "the call would revert; nothing was signed", reason=reason
                ) from None
        with _node_read("reading the base fee and tip"):
            block = self._w3.eth.get_block("pending")
            base_fee, tip = (
                int(block.get("baseFeePerGas", 0) or 0),
                int(self._w3.eth.max_priority_fee),
            )
        return quote(
            self._signer.fees,
            gas=int(estimate * self._headroom) + 10_000,
            base_fee=base_fee,
            tip=tip,
        )

    def _node_has(self, tx_hash: str) -> bool:
        try:
            self._w3.eth.get_transaction(HexStr(tx_hash))
        except Exception:
            return False
        return True

    def _revert_reason(self, tx: SignedTransaction, block: int) -> str:
        try:
            sent = self._w3.eth.get_transaction(HexStr(tx.hash))
            self._w3.eth.call(
                {
                    "from": sent["from"],
                    "to": sent["to"],
                    "data": sent["input"],
                    "value": sent["value"],
                },
                block - 1,
            )
        except (ContractLogicError, Web3RPCError) as exc:
            return decode_revert(revert_data(exc))
        except Exception as exc:
            return f"reverted (the reason could not be read: {type(exc).__name__})"
        return "reverted (the replayed call succeeds now; state changed in between)"


class AsyncChainPort:
    """``ChainPort`` for the async runner: chain calls in worker threads, and the nonce lock
    awaited without parking a thread (see ``NonceManager.acquire_async``)."""

    def __init__(self, port: ChainPort) -> None:
        self._port = port

    async def prepare(self, verified: VerifiedAttestation) -> Prepared:
        lease = await self._port.nonces.acquire_async()
        try:
            return await asyncio.to_thread(self._port.prepare_with, lease, verified)
        except BaseException:  # cancelled while estimating: the runner never saw the lease
            lease.done(broadcast=False)
            raise

    async def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        return await asyncio.to_thread(self._port.sign, verified, prepared)

    async def abandon(self, prepared: Prepared) -> None:
        self._port.abandon(prepared)

    async def send(self, signed: Signed) -> Sent | Outcome:
        return await asyncio.to_thread(self._port.send, signed)

    async def confirm(self, signed: Signed) -> Outcome:
        return await asyncio.to_thread(self._port.confirm, signed)
