"""Newton's optional ``intent_signature``: the agent's EIP-712 signature of the exact intent.

Newton's gateway documents it as typed data ``Intent(address from,address to,uint256 value,
bytes data,uint256 chainId,bytes functionSignature)`` under the policy client's own EIP-712
domain, read from its EIP-5267 ``eip712Domain()`` (dashboard-deployed clients use
``EIP712("NewtonPolicyWallet", "1")``). Newton's contracts do not check it; policies and
identity flows may (``input.intent_signature``). It authorizes nothing by itself, so a signer
for it is a plain callable the caller supplies; agentguard never sends the empty ``"0x"``
(Newton refuses it), it sends ``null`` when not signing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentguard._eip712 import address_word, keccak, typed_data_digest, uint_word
from agentguard._exceptions import ConfigurationError, GatewayProtocolError

if TYPE_CHECKING:
    from web3 import Web3

    from agentguard._intent import PaymentIntent, TransactionIntent

__all__ = ["IntentDomain", "intent_signing_digest", "read_intent_domain"]

_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_EIP712_DOMAIN_SELECTOR = keccak(b"eip712Domain()")[:4]


@dataclass(frozen=True, slots=True)
class IntentDomain:
    """The policy client's EIP-712 domain (``name``, ``version``, ``chainId``,
    ``verifyingContract``), as its ``eip712Domain()`` reports it or as configured."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def separator(self) -> bytes:
        contract = self.verifying_contract
        if not isinstance(contract, str) or len(contract) != 42 or not contract.startswith("0x"):
            raise ConfigurationError(f"verifying_contract {contract!r:.60} is not a 0x address")
        if type(self.chain_id) is not int or not 0 < self.chain_id < 1 << 256:
            raise ConfigurationError(f"chain_id {self.chain_id!r:.40} is not a positive integer")
        return keccak(
            _DOMAIN_TYPEHASH
            + keccak(self.name.encode())
            + keccak(self.version.encode())
            + uint_word(self.chain_id)
            + address_word(bytes.fromhex(contract[2:]))
        )


def intent_signing_digest(intent: TransactionIntent | PaymentIntent, domain: IntentDomain) -> bytes:
    """The 32-byte digest an agent signs for ``intent_signature``: ``hashStruct(Intent)`` is
    agentguard's canonical intent hash (a payment signs its equivalent token transfer)."""
    if domain.chain_id != intent.chain_id:
        raise ConfigurationError(
            f"the intent is for chain {intent.chain_id}, the policy client's EIP-712 domain "
            f"for chain {domain.chain_id}"
        )
    return typed_data_digest(domain.separator(), intent.intent_hash)


def read_intent_domain(web3: Web3, policy_client: str) -> IntentDomain:
    """The policy client's domain from its EIP-5267 ``eip712Domain()``; a client without one
    (or an answer that does not decode) is a typed error, never a guessed domain."""
    from eth_abi.abi import decode

    try:
        call: Any = {"to": policy_client, "data": "0x" + _EIP712_DOMAIN_SELECTOR.hex()}
        raw = web3.eth.call(call)
        _fields, name, version, chain_id, contract, _salt, _ext = decode(
            ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"],
            bytes(raw),
        )
    except Exception as exc:
        raise GatewayProtocolError(
            f"policy client {policy_client} answered no EIP-5267 eip712Domain() "
            f"({type(exc).__name__}); configure its IntentDomain instead"
        ) from None
    from eth_utils.address import to_checksum_address

    return IntentDomain(
        name=str(name),
        version=str(version),
        chain_id=int(chain_id),
        verifying_contract=to_checksum_address(contract),
    )
