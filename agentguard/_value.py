"""What a call moves out of the wallet, judged from its calldata, never from a name.

A contract dispatches on the 4-byte selector at the start of the calldata, not on the
human-readable signature an agent supplies (the vault only checks that the two hash alike).
So spend is valued here from the selector and the decoded arguments, with one table of the
value-moving functions a wallet meets: ERC-20 (with burns), EIP-2612, EIP-3009, Permit2,
ERC-1363, ERC-777, ERC-721 and ERC-1155. Every operator values the intent it re-parsed itself
with this module.

* A signature whose selector is a known value-moving selector but which is not that function
  (``payb_9uByHa(address,uint256)`` hashes like ``approve``) is refused: it could only be meant
  to hide what the call does.
* A call whose selector is not in the table is an ``unknown_call``: only its ETH ``value`` is
  visible, so the bundled policies refuse it unless ``allowed_functions`` lists it (an offchain
  call to ``OFFCHAIN_TARGET``: unless ``offchain_calls`` names it).
* Unlimited approvals count as 2^256 - 1. NFT transfers and approvals carry a token id, not an
  amount, so they count as 2^256 - 1 of the collection: a cap refuses them unless a policy
  explicitly caps that collection at 2^256 - 1. ERC-721 ``transferFrom``/``approve``/``burn`` share
  ERC-20's selectors and cannot be told apart from calldata; they are valued as ERC-20
  amounts (the token id as amount), so give NFT collections no ``"*"`` cap entry.
* A call that sends ETH *and* moves tokens, or moves several assets or to several recipients at
  once, is refused: one spend is one asset to one recipient, and none of it may go uncounted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict

from agentguard._eip712 import keccak
from agentguard._exceptions import IntentError

__all__ = [
    "KNOWN_SELECTORS",
    "NATIVE_ASSET",
    "UINT256_MAX",
    "Spend",
    "SpendKind",
    "check_signature",
    "value_call",
]

NATIVE_ASSET = "0x0000000000000000000000000000000000000000"
UINT256_MAX = (1 << 256) - 1
_UINT160_MAX = (1 << 160) - 1

SpendKind = Literal["native", "transfer", "approval", "nft", "unknown_call"]


class Spend(BaseModel):
    """What an action moves: one asset, an exact atomic amount, to one recipient or spender.

    ``kind`` says how the amount was judged: ``native`` (ETH without calldata), ``transfer``
    (tokens leave), ``approval`` (someone may take tokens), ``nft`` (valued at 2^256 - 1) or
    ``unknown_call`` (a function agentguard cannot value; ``amount`` is only its ETH value).
    """

    model_config = ConfigDict(frozen=True)

    asset: str
    amount: int
    recipient: str | None = None
    kind: SpendKind = "transfer"

    def wasm(self) -> dict[str, str]:
        """``data.wasm.spend`` as the gateway sends it and every operator re-derives it."""
        return {
            "asset": self.asset.lower(),
            "amount": str(self.amount),
            "recipient": (self.recipient or "").lower(),
            "kind": self.kind,
        }


# (asset, amount, recipient) of one movement; a valuer returns the movements of one call.
_Move = tuple[str, int, str]
_Valuer = Callable[[str, Sequence[Any]], list[_Move]]


@dataclass(frozen=True)
class _Entry:
    signature: str
    kind: SpendKind
    valuer: _Valuer


def _unlimited(amount: int, type_max: int = UINT256_MAX) -> int:
    """An approval of its type's maximum is unlimited: count it as the uint256 maximum."""
    return UINT256_MAX if amount >= type_max else amount


def _on_contract(amount_at: int, recipient_at: int) -> _Valuer:
    """The contract called is the asset (ERC-20, EIP-2612, EIP-3009)."""
    return lambda to, a: [(to, a[amount_at], a[recipient_at])]


def _nft(recipient_at: int) -> _Valuer:
    """A token id is no amount: count the whole collection."""
    return lambda to, a: [(to, UINT256_MAX, a[recipient_at])]


def _set_approval_for_all(to: str, a: Sequence[Any]) -> list[_Move]:
    return [(to, UINT256_MAX if a[1] else 0, a[0])]


def _dai_permit(to: str, a: Sequence[Any]) -> list[_Move]:
    # permit(holder, spender, nonce, expiry, allowed, v, r, s): allowed means unlimited
    return [(to, UINT256_MAX if a[4] else 0, a[1])]


def _permit2_approve(to: str, a: Sequence[Any]) -> list[_Move]:
    # approve(token, spender, uint160 amount, uint48 expiration)
    return [(a[0], _unlimited(a[2], _UINT160_MAX), a[1])]


def _permit2_permit(to: str, a: Sequence[Any]) -> list[_Move]:
    # permit(owner, ((token, amount, expiration, nonce), spender, sigDeadline), signature)
    (token, amount, _, _), spender, _ = a[1]
    return [(token, _unlimited(amount, _UINT160_MAX), spender)]


def _permit2_permit_batch(to: str, a: Sequence[Any]) -> list[_Move]:
    details, spender, _ = a[1]
    return [(token, _unlimited(amount, _UINT160_MAX), spender) for token, amount, _, _ in details]


def _permit2_transfer_from(to: str, a: Sequence[Any]) -> list[_Move]:
    # transferFrom(from, to, uint160 amount, token)
    return [(a[3], a[2], a[1])]


def _permit2_transfer_from_batch(to: str, a: Sequence[Any]) -> list[_Move]:
    return [(token, amount, recipient) for _, recipient, amount, token in a[0]]


def _permit2_signature_transfer(to: str, a: Sequence[Any]) -> list[_Move]:
    # permit(Witness)TransferFrom(((token, amount), nonce, deadline), (to, requestedAmount), …)
    (token, _), _, _ = a[0]
    recipient, requested = a[1]
    return [(token, requested, recipient)]


def _permit2_signature_transfer_batch(to: str, a: Sequence[Any]) -> list[_Move]:
    permitted, _, _ = a[0]
    if len(permitted) != len(a[1]):
        raise IntentError("Permit2 batch transfer: permitted and transfer lists differ in length")
    return [
        (token, requested, recipient)
        for (token, _), (recipient, requested) in zip(permitted, a[1], strict=True)
    ]


_PERMIT2_SIG_TRANSFER = "((address,uint256),uint256,uint256),(address,uint256),address"
_PERMIT2_SIG_BATCH = "((address,uint256)[],uint256,uint256),(address,uint256)[],address"

_ENTRIES = (
    # ERC-20 (transferFrom and approve are also ERC-721's: same selector, same signature)
    _Entry("transfer(address,uint256)", "transfer", _on_contract(1, 0)),
    _Entry("transferFrom(address,address,uint256)", "transfer", _on_contract(2, 1)),
    _Entry("approve(address,uint256)", "approval", _on_contract(1, 0)),
    _Entry("increaseAllowance(address,uint256)", "approval", _on_contract(1, 0)),
    _Entry("decreaseAllowance(address,uint256)", "approval", lambda to, a: [(to, 0, a[0])]),
    # burning destroys the wallet's tokens: a transfer to the zero address
    _Entry("burn(uint256)", "transfer", lambda to, a: [(to, a[0], NATIVE_ASSET)]),
    _Entry("burnFrom(address,uint256)", "transfer", lambda to, a: [(to, a[1], NATIVE_ASSET)]),
    # ERC-1363 (and LINK's transferAndCall) and ERC-777
    _Entry("transferAndCall(address,uint256)", "transfer", _on_contract(1, 0)),
    _Entry("transferAndCall(address,uint256,bytes)", "transfer", _on_contract(1, 0)),
    _Entry("transferFromAndCall(address,address,uint256)", "transfer", _on_contract(2, 1)),
    _Entry("transferFromAndCall(address,address,uint256,bytes)", "transfer", _on_contract(2, 1)),
    _Entry("approveAndCall(address,uint256)", "approval", _on_contract(1, 0)),
    _Entry("approveAndCall(address,uint256,bytes)", "approval", _on_contract(1, 0)),
    _Entry("send(address,uint256,bytes)", "transfer", _on_contract(1, 0)),
    _Entry("operatorSend(address,address,uint256,bytes,bytes)", "transfer", _on_contract(2, 1)),
    _Entry("burn(uint256,bytes)", "transfer", lambda to, a: [(to, a[0], NATIVE_ASSET)]),
    _Entry("authorizeOperator(address)", "approval", lambda to, a: [(to, UINT256_MAX, a[0])]),
    # EIP-2612 permit, USDC's bytes-signature permit, DAI's permit
    _Entry(
        "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
        "approval",
        _on_contract(2, 1),
    ),
    _Entry("permit(address,address,uint256,uint256,bytes)", "approval", _on_contract(2, 1)),
    _Entry(
        "permit(address,address,uint256,uint256,bool,uint8,bytes32,bytes32)",
        "approval",
        _dai_permit,
    ),
    # EIP-3009 (v,r,s and bytes-signature forms)
    *(
        _Entry(
            f"{name}(address,address,uint256,uint256,uint256,bytes32,{sig})",
            "transfer",
            _on_contract(2, 1),
        )
        for name in ("transferWithAuthorization", "receiveWithAuthorization")
        for sig in ("uint8,bytes32,bytes32", "bytes")
    ),
    # ERC-721 and ERC-1155
    _Entry("safeTransferFrom(address,address,uint256)", "nft", _nft(1)),
    _Entry("safeTransferFrom(address,address,uint256,bytes)", "nft", _nft(1)),
    _Entry("safeTransferFrom(address,address,uint256,uint256,bytes)", "nft", _nft(1)),
    _Entry("safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)", "nft", _nft(1)),
    _Entry("setApprovalForAll(address,bool)", "nft", _set_approval_for_all),
    # Permit2 AllowanceTransfer
    _Entry("approve(address,address,uint160,uint48)", "approval", _permit2_approve),
    _Entry(
        "permit(address,((address,uint160,uint48,uint48),address,uint256),bytes)",
        "approval",
        _permit2_permit,
    ),
    _Entry(
        "permit(address,((address,uint160,uint48,uint48)[],address,uint256),bytes)",
        "approval",
        _permit2_permit_batch,
    ),
    _Entry("transferFrom(address,address,uint160,address)", "transfer", _permit2_transfer_from),
    _Entry(
        "transferFrom((address,address,uint160,address)[])",
        "transfer",
        _permit2_transfer_from_batch,
    ),
    # Permit2 SignatureTransfer
    _Entry(
        f"permitTransferFrom({_PERMIT2_SIG_TRANSFER},bytes)",
        "transfer",
        _permit2_signature_transfer,
    ),
    _Entry(
        f"permitWitnessTransferFrom({_PERMIT2_SIG_TRANSFER},bytes32,string,bytes)",
        "transfer",
        _permit2_signature_transfer,
    ),
    _Entry(
        f"permitTransferFrom({_PERMIT2_SIG_BATCH},bytes)",
        "transfer",
        _permit2_signature_transfer_batch,
    ),
    _Entry(
        f"permitWitnessTransferFrom({_PERMIT2_SIG_BATCH},bytes32,string,bytes)",
        "transfer",
        _permit2_signature_transfer_batch,
    ),
)

KNOWN_SELECTORS: dict[bytes, _Entry] = {keccak(e.signature.encode())[:4]: e for e in _ENTRIES}
if len(KNOWN_SELECTORS) != len(_ENTRIES):  # pragma: no cover - a table edit gone wrong
    raise RuntimeError("two value-moving signatures in agentguard._value share a selector")


@lru_cache(maxsize=4096)  # pure; an agent uses a handful of signatures again and again
def _checksum(address: str) -> str:
    return to_checksum_address(address)


@lru_cache(maxsize=4096)  # pure (a refusal raises and is not cached)
def check_signature(signature: str) -> None:
    """Refuse a signature that hashes like a value-moving function but is not that function."""
    entry = KNOWN_SELECTORS.get(keccak(signature.encode())[:4])
    if entry is not None and entry.signature != signature:
        raise IntentError(
            f"function signature {signature!r} has the selector of {entry.signature!r}, which "
            "moves value; the contract would run that function, so name it by its real "
            "signature"
        )


def value_call(
    *, to: str, value: int, data: bytes, signature: str, arguments: Sequence[Any]
) -> Spend:
    """The spend of a call: from its selector and decoded ``arguments``, never its name.

    ``signature`` must be the canonical signature whose selector starts ``data`` and
    ``arguments`` its decoded arguments (``TransactionIntent`` guarantees both).
    """
    if not data:
        return Spend(asset=NATIVE_ASSET, amount=value, recipient=to, kind="native")
    entry = KNOWN_SELECTORS.get(data[:4])
    if entry is None:
        return Spend(asset=NATIVE_ASSET, amount=value, recipient=to, kind="unknown_call")
    if entry.signature != signature:  # unreachable through TransactionIntent; never trust it
        check_signature(signature)
        raise IntentError(f"calldata starts with the selector of {entry.signature!r}")
    if value:
        raise IntentError(
            f"{entry.signature} moves tokens and the call also sends {value} wei; send the "
            "ETH and the token action as two intents so both are counted"
        )
    moves = entry.valuer(to, arguments)
    assets = {asset.lower() for asset, _, _ in moves}
    recipients = {recipient.lower() for _, _, recipient in moves}
    if len(assets) > 1 or len(recipients) > 1:
        raise IntentError(
            f"{entry.signature} here moves {len(assets)} assets to {len(recipients)} recipients; "
            "agentguard values one asset to one recipient per intent, so split it"
        )
    if not moves:
        raise IntentError(f"{entry.signature} here moves nothing; there is nothing to authorize")
    asset, _, recipient = moves[0]
    amount = min(sum(amount for _, amount, _ in moves), UINT256_MAX)
    return Spend(
        asset=_checksum(asset),
        amount=amount,
        recipient=_checksum(recipient),
        kind=entry.kind,
    )
