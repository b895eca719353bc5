"""What the chain says about a vault's attestations: the independent source of history.

A gateway's records are its own word: it can leave tasks out of the records it hands a
challenger just as it can leave them out of the totals it hands the operators. A vault's
events are not: ``Executed(taskId, to, value, dataHash)`` is emitted only after a quorum's
attestation for that task passed the vault's own check, and a vault x402 payment spends the
EIP-3009 nonce ``taskId`` on the token (``AuthorizationUsed(vault, taskId)``). No honest
gateway gives either back (a vault's release stands only on the chain's word). An EOA's
transaction is no such fact: the network takes a self-owned client's word that it never used
an attestation, so a landed EOA transaction proves the agent host lied, not the gateway.
``ChainFact`` is one fact, as a record carries it; ``recheck_fact`` reads it again from a
node. ``pause_vaults`` is the guardian's one move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from agentguard._attestation import Attestation, attestation_digest, recover_signer
from agentguard._eip712 import keccak
from agentguard._exceptions import AgentGuardError, ConfigurationError, NodeUnavailable
from agentguard._intent import TransactionIntent
from agentguard.chain.contracts import load_artifact, transact
from agentguard.chain.vault import EXECUTE_SIGNATURE

__all__ = [
    "AUTHORIZATION_USED_TOPIC",
    "EXECUTED_TOPIC",
    "ChainFact",
    "Executed",
    "PauseResult",
    "authorization_used",
    "chain_head",
    "executed_events",
    "pause_vaults",
    "recheck_fact",
    "vault_operators",
]

FactKind = Literal["executed", "authorization_used"]

EXECUTED_TOPIC = keccak(b"Executed(bytes32,address,uint256,bytes32)")
AUTHORIZATION_USED_TOPIC = keccak(b"AuthorizationUsed(address,bytes32)")
TRANSFER_TOPIC = keccak(b"Transfer(address,address,uint256)")
_EXECUTE_SELECTOR = keccak(EXECUTE_SIGNATURE.encode())[:4]
# the argument types, read from the signature itself so a new argument (the tier) is never
# left out: decoding without it recovered the signers over another digest
_EXECUTE_TYPES = EXECUTE_SIGNATURE[EXECUTE_SIGNATURE.index("(") + 1 : -1].split(",")
_T = TypeVar("_T")
MAX_LOG_RANGE = 10_000  # blocks per eth_getLogs request (public nodes cap the range)


def _hex(raw: bytes | str) -> str:
    return raw.lower() if isinstance(raw, str) else "0x" + bytes(raw).hex()


def _word_address(topic: bytes) -> str:
    return to_checksum_address(bytes(topic)[-20:])


@dataclass(frozen=True)
class ChainFact:
    """One onchain fact about one task, as read from a node (and re-read by ``recheck_fact``).

    ``kind``: ``executed`` (the vault's ``Executed`` log) or ``authorization_used`` (the
    token's ``AuthorizationUsed(vault, taskId)`` log, with the ``Transfer`` log of the same
    transaction in ``data``). ``data`` holds the event's values as JSON (amounts as decimal
    strings)."""

    kind: FactKind
    chain_id: int
    tx_hash: str
    block_number: int
    block_hash: str
    log_index: int | None
    address: str
    task_id: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ChainFact:
        try:
            kind = raw["kind"]
            if kind not in ("executed", "authorization_used"):
                raise ValueError(f"unknown chain fact kind {kind!r}")
            log_index = raw["log_index"]
            return cls(
                kind=kind,
                chain_id=_int(raw["chain_id"]),
                tx_hash=str(raw["tx_hash"]).lower(),
                block_number=_int(raw["block_number"]),
                block_hash=str(raw["block_hash"]).lower(),
                log_index=None if log_index is None else _int(log_index),
                address=to_checksum_address(str(raw["address"])),
                task_id=None if raw["task_id"] is None else str(raw["task_id"]).lower(),
                data=dict(raw["data"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed chain fact: {exc}") from None

    def proves_use_of(self, intent: TransactionIntent, task_id: str) -> str | None:
        """Why this fact does not show ``intent`` under ``task_id`` landed (None: it does)."""
        if self.chain_id != intent.chain_id:
            return f"the fact is on chain {self.chain_id}, the intent on {intent.chain_id}"
        data = self.data
        if (self.task_id or "") != task_id.lower():
            return f"the fact names task {self.task_id}, not {task_id}"
        if self.kind == "executed":
            moved = (
                self.address.lower() == intent.from_.lower()
                and data.get("to", "").lower() == intent.to.lower()
                and data.get("value") == str(intent.value)
                and data.get("data_hash") == _hex(keccak(intent.data))
            )
            return None if moved else "the Executed event is not the attested call"
        spend = intent.spend
        transfer = data.get("transfer") or {}
        moved = (
            self.address.lower() == intent.to.lower()
            and spend.kind == "transfer"
            and data.get("authorizer", "").lower() == intent.from_.lower()
            and transfer.get("from", "").lower() == intent.from_.lower()
            and transfer.get("to", "").lower() == (spend.recipient or "").lower()
            and transfer.get("value") == str(spend.amount)
        )
        return None if moved else "the authorization used is not the attested payment"


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


@dataclass(frozen=True)
class Executed:
    """A vault's ``Executed`` event, with the attested call decoded from its transaction
    (``intent``/``attestation`` are None when the transaction did not call ``execute``
    directly, e.g. through another contract: the event still proves the task landed)."""

    fact: ChainFact
    intent: TransactionIntent | None
    attestation: Attestation | None


def _call(what: str, fn: Callable[..., _T], *args: Any) -> _T:
    try:
        return fn(*args)
    except AgentGuardError:
        raise
    except Exception as exc:  # a node's failure, whatever the client library raises
        raise NodeUnavailable(
            f"the RPC node failed reading {what} ({type(exc).__name__}); retry later"
        ) from None


def executed_events(w3: Web3, vault: str, *, from_block: int, to_block: int) -> list[Executed]:
    """Every ``Executed`` event of ``vault`` in the block range, oldest first."""
    vault = to_checksum_address(vault)
    chain_id = int(_call("the chain id", lambda: w3.eth.chain_id))
    found: list[Executed] = []
    start = from_block
    while start <= to_block:
        end = min(to_block, start + MAX_LOG_RANGE - 1)
        logs = _call(
            "the vault's Executed events",
            w3.eth.get_logs,
            {
                "address": vault,
                "topics": [_hex(EXECUTED_TOPIC)],
                "fromBlock": start,
                "toBlock": end,
            },
        )
        for log in logs:
            found.append(_call("an Executed event", _executed, w3, chain_id, vault, log))
        start = end + 1
    return found


def _executed(w3: Web3, chain_id: int, vault: str, log: Mapping[str, Any]) -> Executed:
    topics = log["topics"]
    value, data_hash = abi_decode(["uint256", "bytes32"], bytes(log["data"]))
    fact = ChainFact(
        kind="executed",
        chain_id=chain_id,
        tx_hash=_hex(log["transactionHash"]),
        block_number=int(log["blockNumber"]),
        block_hash=_hex(log["blockHash"]),
        log_index=int(log["logIndex"]),
        address=vault,
        task_id=_hex(topics[1]),
        data={"to": _word_address(topics[2]), "value": str(value), "data_hash": _hex(data_hash)},
    )
    tx = _call("the executing transaction", w3.eth.get_transaction, log["transactionHash"])
    intent, attestation = decode_execute(bytes(tx["input"]), vault, chain_id)
    if intent is not None and fact.proves_use_of(intent, fact.task_id or "") is not None:
        intent, attestation = None, None  # another execute in the same transaction
    return Executed(fact, intent, attestation)


def decode_execute(
    calldata: bytes, vault: str, chain_id: int
) -> tuple[TransactionIntent | None, Attestation | None]:
    """The intent and allow attestation an ``execute`` call carries (signers recovered from
    the digest the vault checks); ``(None, None)`` for any other calldata."""
    if calldata[:4] != _EXECUTE_SELECTOR:
        return None, None
    try:
        to, value, data, signature, task_id, policy_id, expires_at, sigs, tier = abi_decode(
            _EXECUTE_TYPES, calldata[4:]
        )
        intent = TransactionIntent(
            from_=to_checksum_address(vault),
            to=to,
            value=value,
            data=data,
            chain_id=chain_id,
            function_signature=bytes(signature).decode("utf-8"),
        )
        digest = attestation_digest(
            chain_id=chain_id,
            policy_client=bytes.fromhex(vault[2:]),
            task_id=task_id,
            policy_id=policy_id,
            intent_hash=intent.intent_hash,
            allow=True,
            expires_at=expires_at,
            tier=tier,
        )
        signatures = [
            {"operator": "0x" + recover_signer(digest, bytes(s)).hex(), "signature": _hex(s)}
            for s in sigs
        ]
        attestation = Attestation.from_json(
            {
                "decision": "allow",
                "task_id": _hex(task_id),
                "policy_id": _hex(policy_id),
                "policy_client": to_checksum_address(vault),
                "intent_hash": _hex(intent.intent_hash),
                "expires_at": expires_at,
                "tier": tier,
                "signatures": signatures,
            }
        )
    except (AgentGuardError, DecodingError, ValueError, TypeError, UnicodeDecodeError):
        return None, None  # the event alone still stands; the call is not ours to read
    return intent, attestation


def authorization_used(w3: Web3, token: str, vault: str, task_id: str) -> ChainFact | None:
    """The token's ``AuthorizationUsed(vault, taskId)`` (a vault x402 payment settled under
    that attestation) with the transfer it made, or None if the chain shows none."""
    chain_id = int(_call("the chain id", lambda: w3.eth.chain_id))
    logs = _call(
        "the token's AuthorizationUsed events",
        w3.eth.get_logs,
        {
            "address": to_checksum_address(token),
            "topics": [
                _hex(AUTHORIZATION_USED_TOPIC),
                "0x" + bytes(12).hex() + vault.lower().removeprefix("0x"),
                task_id.lower(),
            ],
            "fromBlock": 0,
            "toBlock": "latest",
        },
    )
    if not logs:
        return None
    return _call(
        "the payment's logs", _authorization_fact, w3, chain_id, token, vault, task_id, logs[0]
    )


def _authorization_fact(
    w3: Web3, chain_id: int, token: str, vault: str, task_id: str, log: Mapping[str, Any]
) -> ChainFact:
    receipt = _call("the payment's receipt", w3.eth.get_transaction_receipt, log["transactionHash"])
    transfer = _transfer_before(receipt["logs"], token, int(log["logIndex"]))
    return ChainFact(
        kind="authorization_used",
        chain_id=chain_id,
        tx_hash=_hex(log["transactionHash"]),
        block_number=int(log["blockNumber"]),
        block_hash=_hex(log["blockHash"]),
        log_index=int(log["logIndex"]),
        address=to_checksum_address(token),
        task_id=task_id.lower(),
        data={
            "authorizer": to_checksum_address(vault),
            "nonce": task_id.lower(),
            "transfer": transfer,
        },
    )


def _transfer_before(logs: Sequence[Mapping[str, Any]], token: str, index: int) -> dict[str, Any]:
    """The token's ``Transfer`` log next to its ``AuthorizationUsed`` log (same call)."""
    for log in logs:
        topics = log["topics"]
        if (
            log["address"].lower() == token.lower()
            and topics
            and bytes(topics[0]) == TRANSFER_TOPIC
            and abs(int(log["logIndex"]) - index) == 1
        ):
            (value,) = abi_decode(["uint256"], bytes(log["data"]))
            return {
                "from": _word_address(topics[1]),
                "to": _word_address(topics[2]),
                "value": str(value),
                "log_index": int(log["logIndex"]),
            }
    return {}


def recheck_fact(w3: Web3, fact: ChainFact) -> str | None:
    """Read ``fact`` again from the node: None if the chain says exactly this, else why not."""
    chain_id = int(_call("the chain id", lambda: w3.eth.chain_id))
    if chain_id != fact.chain_id:
        return f"the node serves chain {chain_id}, the fact is on chain {fact.chain_id}"
    try:
        receipt = w3.eth.get_transaction_receipt(fact.tx_hash)  # type: ignore[arg-type]
    except Exception:
        return f"transaction {fact.tx_hash} is not known to the node"
    return _call("the transaction's receipt", _judge_receipt, w3, fact, receipt)


def _judge_receipt(w3: Web3, fact: ChainFact, receipt: Mapping[str, Any]) -> str | None:
    """(A node's answer of the wrong shape is ``NodeUnavailable`` through ``_call``.)"""
    if _hex(receipt["blockHash"]) != fact.block_hash or int(receipt["blockNumber"]) != (
        fact.block_number
    ):
        return f"transaction {fact.tx_hash} is not in block {fact.block_number} ({fact.block_hash})"
    for log in receipt["logs"]:
        if int(log["logIndex"]) == fact.log_index:
            return _same_log(w3, fact, log, receipt)
    return f"transaction {fact.tx_hash} has no log at index {fact.log_index}"


def _same_log(
    w3: Web3, fact: ChainFact, log: Mapping[str, Any], receipt: Mapping[str, Any]
) -> str | None:
    if log["address"].lower() != fact.address.lower():
        return f"log {fact.log_index} of {fact.tx_hash} was emitted by {log['address']}"
    if fact.kind == "executed":
        again = _executed(w3, fact.chain_id, fact.address, log).fact
    else:
        topics = log["topics"]
        if len(topics) != 3 or bytes(topics[0]) != AUTHORIZATION_USED_TOPIC:
            return f"log {fact.log_index} of {fact.tx_hash} is not AuthorizationUsed"
        again = ChainFact(
            kind="authorization_used",
            chain_id=fact.chain_id,
            tx_hash=fact.tx_hash,
            block_number=int(log["blockNumber"]),
            block_hash=_hex(log["blockHash"]),
            log_index=int(log["logIndex"]),
            address=to_checksum_address(log["address"]),
            task_id=_hex(topics[2]),
            data={
                "authorizer": _word_address(topics[1]),
                "nonce": _hex(topics[2]),
                "transfer": _transfer_before(receipt["logs"], log["address"], int(log["logIndex"])),
            },
        )
    return None if again == fact else f"log {fact.log_index} of {fact.tx_hash} says otherwise"


def chain_head(w3: Web3) -> int:
    """The latest block number (``NodeUnavailable`` if the node fails)."""
    return int(_call("the latest block", lambda: w3.eth.block_number))


def vault_operators(w3: Web3, vault: str) -> tuple[frozenset[str], int]:
    """A vault's current operators (lowercase) and threshold, as the chain says."""
    contract = w3.eth.contract(
        address=to_checksum_address(vault), abi=load_artifact("AgentVault").abi
    )
    operators = _call("the vault's operators", contract.functions.operators().call)
    threshold = _call("the vault's threshold", contract.functions.threshold().call)
    return frozenset(str(o).lower() for o in operators), int(threshold)


@dataclass(frozen=True)
class PauseResult:
    """``retry``: the node failed (try again later); otherwise the answer is final."""

    vault: str
    paused: bool
    tx_hash: str | None
    error: str | None = None
    retry: bool = False


def pause_vaults(
    w3: Web3, vaults: Iterable[str], guardian: LocalAccount | str
) -> list[PauseResult]:
    """``pause()`` each vault from the guardian key (granted by the owner with
    ``grantGuardian``; a guardian can pause and nothing else). A vault already paused is left
    as it is (a re-run after a crash sends nothing twice); a refusal is reported, not raised,
    so one vault's failure does not keep the others running."""
    account = Account.from_key(guardian) if isinstance(guardian, str) else guardian
    abi = load_artifact("AgentVault").abi
    results = []
    for address in vaults:
        vault = w3.eth.contract(address=to_checksum_address(address), abi=abi)
        try:
            if vault.functions.paused().call():
                results.append(PauseResult(vault.address, True, None))
                continue
            if not vault.functions.isGuardian(account.address).call() and (
                vault.functions.owner().call() != account.address
            ):
                results.append(
                    PauseResult(
                        vault.address,
                        False,
                        None,
                        f"{account.address} is not a guardian of this vault (the owner grants "
                        "it with grantGuardian)",
                    )
                )
                continue
            receipt = transact(w3, vault.functions.pause(), sender=account)
            results.append(PauseResult(vault.address, True, _hex(receipt["transactionHash"])))
        except (ContractLogicError, ConfigurationError) as exc:  # refused: final
            results.append(PauseResult(vault.address, False, None, f"pause refused ({exc})"))
        except Exception as exc:  # the node: try again later
            results.append(
                PauseResult(
                    vault.address, False, None, f"pause failed ({type(exc).__name__})", True
                )
            )
    return results
