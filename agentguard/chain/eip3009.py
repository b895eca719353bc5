"""EIP-3009 ``TransferWithAuthorization``: the digest an x402 ``exact`` payment signs.

Needed next to the vault because an x402 payment from a vault is this digest, signed by the
agent and accepted by the vault's ERC-1271 check only with a matching attestation.
"""

from __future__ import annotations

from functools import lru_cache

from agentguard._eip712 import address_word, keccak, typed_data_digest, uint_word

__all__ = [
    "EIP3009_TYPES",
    "RECEIVE_WITH_AUTHORIZATION_TYPE",
    "TRANSFER_WITH_AUTHORIZATION_TYPE",
    "token_domain_separator",
    "transfer_authorization_digest",
]

TRANSFER_WITH_AUTHORIZATION_TYPE = (
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    "uint256 validBefore,bytes32 nonce)"
)
RECEIVE_WITH_AUTHORIZATION_TYPE = TRANSFER_WITH_AUTHORIZATION_TYPE.replace("Transfer", "Receive", 1)
# The same types as an eth-account / x402 typed-data ``types`` mapping.
EIP3009_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


_TYPEHASHES = {
    t: keccak(t.encode())
    for t in (TRANSFER_WITH_AUTHORIZATION_TYPE, RECEIVE_WITH_AUTHORIZATION_TYPE)
}


def _address(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"{value!r} is not a 20-byte address")
    return raw


def token_domain_separator(*, token: str, chain_id: int, name: str, version: str) -> bytes:
    """The token's EIP-712 domain (x402's ``extra.name``/``extra.version``; USDC on Base:
    ``"USD Coin"``, ``"2"``). Computed once per token: an agent pays a handful of them."""
    return _domain_separator(token.lower(), chain_id, name, version)


@lru_cache(maxsize=64)
def _domain_separator(token: str, chain_id: int, name: str, version: str) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(name.encode())
        + keccak(version.encode())
        + uint_word(chain_id)
        + address_word(_address(token))
    )


def transfer_authorization_digest(
    *,
    token: str,
    chain_id: int,
    from_: str,
    to: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    name: str = "USD Coin",
    version: str = "2",
    primary_type: str = TRANSFER_WITH_AUTHORIZATION_TYPE,
) -> bytes:
    """The digest ``from_`` signs. ``primary_type`` may be ``RECEIVE_WITH_AUTHORIZATION_TYPE``
    (the payee-initiated variant, which a vault never accepts; kept to check exactly that)."""
    if primary_type not in (TRANSFER_WITH_AUTHORIZATION_TYPE, RECEIVE_WITH_AUTHORIZATION_TYPE):
        raise ValueError(f"not an EIP-3009 authorization type: {primary_type!r}")
    if len(nonce) != 32:
        raise ValueError("an EIP-3009 nonce is 32 bytes")
    struct_hash = keccak(
        _TYPEHASHES[primary_type]
        + address_word(_address(from_))
        + address_word(_address(to))
        + uint_word(value)
        + uint_word(valid_after)
        + uint_word(valid_before)
        + nonce
    )
    domain = token_domain_separator(token=token, chain_id=chain_id, name=name, version=version)
    return typed_data_digest(domain, struct_hash)
