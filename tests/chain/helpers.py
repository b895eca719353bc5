"""Shared pieces of the chain tests: accounts, operator keys, attestations, revert decoding."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from agentguard._attestation import (
    Attestation,
    OperatorSignature,
    attestation_digest,
    operator_address,
    sign_attestation,
)
from agentguard._eip712 import keccak
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard.chain import (
    DEV_ACCOUNTS,
    Anvil,
    execute_args,
    load_artifact,
    payment_signature,
    transact,
    transfer_authorization_digest,
)
from agentguard.chain.vault import PAYMENT_SIGNATURE_TYPES

CHAIN_ID = 8453
POLICY_ID = keccak(b"agentguard test policy")
VAULT_USDC = 1_000_000_000  # 1 000 USDC (6 decimals)
VAULT_ETH = 10**18

OWNER = DEV_ACCOUNTS[0].address
AGENT = DEV_ACCOUNTS[1].address
OUTSIDER = DEV_ACCOUNTS[2].address
PAYEE = DEV_ACCOUNTS[3].address
FACILITATOR = DEV_ACCOUNTS[4].address

AGENT_KEY = PrivateKey(bytes.fromhex(DEV_ACCOUNTS[1].private_key[2:]))
OPERATOR_KEYS = [PrivateKey(keccak(f"agentguard test operator {i}".encode())) for i in range(3)]
OPERATORS = [operator_address(k) for k in OPERATOR_KEYS]
STRANGER_KEYS = [PrivateKey(keccak(f"agentguard test stranger {i}".encode())) for i in range(2)]
# The ``deploy_test`` fixture: (w3, name of a tests/chain/<name>.sol contract, *constructor args).
DeployTest = Callable[..., Contract]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in ("UsdCoin", "AgentVault", "AgentVaultFactory", "NewtonBlsValidator"):
        for item in load_artifact(name).abi:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
                table[selector] = (item["name"], types)
    return table


ERRORS = _error_table()


def decode_revert(data: Any) -> tuple[str, tuple[Any, ...]]:
    """Name and arguments of a custom error from the shipped contracts' ABIs."""
    raw = bytes.fromhex(str(data).removeprefix("0x"))
    name, types = ERRORS[raw[:4]]
    values = abi_decode(types, raw[4:])
    return name, tuple(
        Web3.to_checksum_address(v) if t == "address" else v
        for v, t in zip(values, types, strict=True)
    )


@contextmanager
def reverts(name: str, *args: Any) -> Iterator[list[Any]]:
    """Asserts the block reverts with exactly this custom error (and these arguments, if
    given); the list it yields receives the decoded arguments."""
    decoded: list[Any] = []
    with pytest.raises(ContractCustomError) as info:
        yield decoded
    got_name, got_args = decode_revert(info.value.data)
    assert got_name == name, f"reverted with {got_name}{got_args}, expected {name}"
    if args:
        assert got_args == args
    decoded.extend(got_args)


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    """The ``name`` events ``contract`` emitted in ``receipt``, as plain argument dicts."""
    found = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [dict(e["args"]) for e in found if e["address"] == contract.address]


def attest(
    vault: str,
    intent: TransactionIntent | PaymentIntent,
    *,
    keys: list[PrivateKey] | None = None,
    expires_at: int,
    task_id: bytes | None = None,
    policy_id: bytes = POLICY_ID,
    chain_id: int = CHAIN_ID,
    tier: int = 0,
) -> Attestation:
    """What a quorum of the reference network would return for ``intent`` (at trust ``tier``)."""
    task = task_id or secrets.token_bytes(32)
    digest = attestation_digest(
        chain_id=chain_id,
        policy_client=bytes.fromhex(vault[2:]),
        task_id=task,
        policy_id=policy_id,
        intent_hash=intent.intent_hash,
        allow=True,
        expires_at=expires_at,
        tier=tier,
    )
    signers = OPERATOR_KEYS[:2] if keys is None else keys
    return Attestation(
        decision="allow",
        task_id=task,
        policy_id=policy_id,
        policy_client=vault,
        intent_hash=intent.intent_hash,
        expires_at=expires_at,
        tier=tier,
        signatures=tuple(
            OperatorSignature(operator=operator_address(k), signature=sign_attestation(k, digest))
            for k in signers
        ),
    )


def attested_execute(env: Env, intent: TransactionIntent, **kw: Any) -> Any:
    """``vault.execute`` of ``intent`` under a fresh quorum attestation (``attest``'s keywords;
    ``vault=`` another vault than the session's)."""
    vault: Contract = kw.pop("vault", env.vault)
    expires_at = kw.pop("expires_at", env.now() + 600)
    attestation = attest(vault.address, intent, expires_at=expires_at, **kw)
    return vault.functions.execute(*execute_args(intent, attestation))


def high_s(signature: bytes) -> bytes:
    """The malleable twin of a valid signature: same signer under raw ecrecover."""
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


@dataclass
class Env:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract
    vault: Contract

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def transfer_intent(self, to: str = PAYEE, amount: int = 5_000_000) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=self.vault.address,
            token=self.token.address,
            recipient=to,
            amount=amount,
            chain_id=CHAIN_ID,
        )

    def usdc(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())


def create_vault(
    w3: Web3, factory: Contract, *, salt: bytes, sender: str = OWNER, threshold: int = 2
) -> Contract:
    receipt = transact(
        w3,
        factory.functions.createVault(OWNER, AGENT, OPERATORS, threshold, POLICY_ID, salt),
        sender=sender,
    )
    (event,) = factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    return w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)


MAGIC = bytes.fromhex("1626ba7e")
INVALID = bytes.fromhex("ffffffff")
PAYMENT_AMOUNT = 10_000  # $0.01


class Payment:
    """One x402 `exact` payment from the vault, with everything the facilitator sees.

    ``token`` settles it (and asks the vault); the operators attest a payment in ``asset``,
    which is ``token`` unless an attacker arranged otherwise. ``replay`` reuses an attestation
    already issued instead (the agent signs the new authorization all the same).
    """

    def __init__(
        self,
        env: Env,
        *,
        amount: int = PAYMENT_AMOUNT,
        pay_to: str = PAYEE,
        token: Contract | None = None,
        asset: str | None = None,
        replay: Attestation | None = None,
        **attest_kw: Any,
    ) -> None:
        self.env = env
        self.token = env.token if token is None else token
        self.intent = PaymentIntent(
            payer=env.vault.address, scheme="exact", network="eip155:8453",
            asset=asset or self.token.address, amount=amount, pay_to=pay_to,
        )  # fmt: skip
        expires_at = attest_kw.pop("expires_at", env.now() + 600)
        self.attestation: Attestation = replay or attest(
            env.vault.address, self.intent, expires_at=expires_at, **attest_kw
        )
        self.valid_after, self.valid_before = 0, env.now() + 300
        self.digest = self.authorization_digest()
        self.agent_signature = sign_attestation(AGENT_KEY, self.digest)

    def authorization_digest(self, **overrides: Any) -> bytes:
        fields: dict[str, Any] = {
            "from_": self.env.vault.address,
            "to": self.intent.pay_to,
            "value": self.intent.amount,
            "valid_after": self.valid_after,
            "valid_before": self.valid_before,
            "nonce": self.attestation.task_id,
        }
        fields.update(overrides)
        return transfer_authorization_digest(token=self.token.address, chain_id=CHAIN_ID, **fields)

    def blob(self) -> bytes:
        return payment_signature(
            self.intent,
            self.attestation,
            valid_after=self.valid_after,
            valid_before=self.valid_before,
            agent_signature=self.agent_signature,
        )

    def raw_blob(self, **overrides: Any) -> bytes:
        """The blob with fields changed behind the helper's back (what an attacker could send)."""
        fields: dict[str, Any] = {
            "token": self.intent.asset,
            "pay_to": self.intent.pay_to,
            "value": self.intent.amount,
            "valid_after": self.valid_after,
            "valid_before": self.valid_before,
            "nonce": self.attestation.task_id,
            "task_id": self.attestation.task_id,
            "policy_id": self.attestation.policy_id,
            "expires_at": self.attestation.expires_at,
            "agent_signature": self.agent_signature,
            "operator_signatures": [s.signature for s in self.attestation.signatures],
            "tier": self.attestation.tier,
        }
        fields.update(overrides)
        return abi_encode(list(PAYMENT_SIGNATURE_TYPES), list(fields.values()))

    def settle_call(self, blob: bytes | None = None, **auth: Any) -> Any:
        """The facilitator's `transferWithAuthorization(..., bytes signature)`."""
        return self.token.functions.transferWithAuthorization(
            self.env.vault.address,
            auth.get("to", self.intent.pay_to),
            auth.get("value", self.intent.amount),
            self.valid_after,
            self.valid_before,
            auth.get("nonce", self.attestation.task_id),
            self.blob() if blob is None else blob,
        )

    def is_valid(
        self, blob: bytes, digest: bytes | None = None, *, asker: str | None = None
    ) -> bytes:
        """The vault's ERC-1271 answer when ``asker`` (the settling token by default) asks."""
        check = self.env.vault.functions.isValidSignature(digest or self.digest, blob)
        return bytes(check.call({"from": asker or self.token.address}))
