"""Human approvals: signed by an approver the operators know, never invented by the gateway.

A policy that answers ``approval_required`` makes the gateway park the intent as a pending
approval request. A person approves it by signing (EIP-712, the domain of every agentguard
struct: ``{name: "agentguard", version: "1", chainId, verifyingContract: policyClient}``)

    Approval(address policyClient,bytes32 intentHash,uint256 chainId,uint64 expiresAt)

with an approver key. Who may approve is part of the owner-signed registration every operator
holds: ``params["approvers"]`` if the owner listed approvers there (then exactly those), else
the registered owner itself. The gateway hands the signed approval to the operators with the
one task that claims it; each operator checks it (``SignedApproval.check``) before it lets the
policy see ``data.wasm.approved = true``, and signs at most one ``allow`` per approval.

This module also holds what the CLI (``agentguard approvals``) and the approval console share:
the admin JSON-RPC client and ``ApprovalView``, a listed request re-derived from its intent
(the amount, token and recipient shown to a person come from the intent's calldata, never from
the gateway's words; a request whose intent does not hash to its intent hash is not shown as
approvable).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from coincurve import PrivateKey
from eth_utils.address import to_checksum_address

from agentguard._attestation import operator_address, recover_signer, sign_attestation
from agentguard._eip712 import address_word, domain_separator, keccak, typed_data_digest, uint_word
from agentguard._exceptions import (
    AgentGuardError,
    ConfigurationError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    MalformedSignature,
)
from agentguard._intent import TransactionIntent
from agentguard._json import strict_loads
from agentguard._units import Token, Tokens, format_amount
from agentguard.network.registration import Registration

__all__ = [
    "APPROVAL_TYPE",
    "DEFAULT_APPROVAL_TTL",
    "MAX_APPROVAL_LIFETIME",
    "SIGNED_APPROVAL_LIFETIME",
    "ApprovalView",
    "ApprovalsClient",
    "SignedApproval",
    "approvers_of",
    "parse_token_option",
    "shown_text",
]

APPROVAL_TYPE = "Approval(address policyClient,bytes32 intentHash,uint256 chainId,uint64 expiresAt)"
APPROVAL_TYPEHASH = keccak(APPROVAL_TYPE.encode())
DEFAULT_APPROVAL_TTL = 900
"""How long a parked request waits for a person (gateway setting ``approval_ttl``)."""
MAX_APPROVAL_LIFETIME = 86400
"""Operators refuse an approval valid further ahead than this (they remember used ones)."""
SIGNED_APPROVAL_LIFETIME = 900
"""What a person signs is valid at most this long (or until the request expires, if sooner),
whatever expiry the gateway lists: the waiting agent uses it within seconds, and a short life
bounds what a signature the person later regrets (rejects) could still do."""

MAX_ANSWER = 64 << 20
"""Bytes of one admin answer: a listing of every live request of many clients fits."""
MAX_LISTED = 100_000
"""Rows of one listing turned into views: a gateway lists every live request of every client
(up to 1,000 each), so a lower cap would let one client's flood push another's off the end."""

RequestStatus = Literal["pending", "approved", "rejected", "expired", "used", "unknown"]
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "expired", "used", "unknown")

_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}\Z")
_FIELDS = frozenset({"policy_client", "intent_hash", "chain_id", "expires_at", "signature"})
_LAST_SHOWN_TIME = 253402300799  # 9999-12-31T23:59:59Z: later cannot be shown as a date


def shown_text(text: str) -> str:
    """Text from the gateway as a person may see it: control and bidi characters (terminal
    escapes that rewrite earlier lines, overrides that reorder them) become visible escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _invalid(message: str) -> ConfigurationError:
    return ConfigurationError(f"approval: {message}")


def approvers_of(registration: Registration) -> frozenset[bytes]:
    """Who may approve for this policy client, as its owner registered it: ``approvers`` in
    the params (exactly those), else the owner. A malformed list approves nobody."""
    listed = registration.params.get("approvers")
    if listed is None:
        return frozenset({registration.owner})
    if not isinstance(listed, list) or not all(
        isinstance(a, str) and _ADDR.match(a) for a in listed
    ):
        return frozenset()
    return frozenset(bytes.fromhex(a[2:]) for a in listed)


@dataclass(frozen=True)
class SignedApproval:
    """An approver's signature over one exact intent of one policy client, until ``expires_at``.

    ``from_json`` and ``sign`` are the only ways to get one; ``signer`` is recovered, never
    stated."""

    policy_client: bytes
    intent_hash: bytes
    chain_id: int
    expires_at: int
    signature: bytes
    signer: bytes

    @staticmethod
    def digest_of(
        policy_client: bytes, intent_hash: bytes, chain_id: int, expires_at: int
    ) -> bytes:
        struct_hash = keccak(
            APPROVAL_TYPEHASH
            + address_word(policy_client)
            + intent_hash
            + uint_word(chain_id)
            + uint_word(expires_at)
        )
        return typed_data_digest(domain_separator(chain_id, policy_client), struct_hash)

    @property
    def digest(self) -> bytes:
        return self.digest_of(self.policy_client, self.intent_hash, self.chain_id, self.expires_at)

    @property
    def signer_hex(self) -> str:
        return to_checksum_address("0x" + self.signer.hex())

    @classmethod
    def sign(
        cls,
        key: PrivateKey,
        *,
        policy_client: str,
        intent_hash: str,
        chain_id: int,
        expires_at: int,
    ) -> SignedApproval:
        """What an approver's CLI or console signs."""
        unsigned = {
            "policy_client": policy_client,
            "intent_hash": intent_hash,
            "chain_id": chain_id,
            "expires_at": expires_at,
        }
        client, intent, chain, expiry = cls._fields(unsigned)
        signature = sign_attestation(key, cls.digest_of(client, intent, chain, expiry))
        signer = bytes.fromhex(operator_address(key)[2:])
        return cls(client, intent, chain, expiry, signature, signer)

    @staticmethod
    def _fields(raw: Mapping[str, Any]) -> tuple[bytes, bytes, int, int]:
        client = raw.get("policy_client")
        if not isinstance(client, str) or not _ADDR.match(client):
            raise _invalid("policy_client must be a 0x-prefixed 20-byte address")
        intent_hash = raw.get("intent_hash")
        if not isinstance(intent_hash, str) or not _B32.match(intent_hash):
            raise _invalid("intent_hash must be 0x followed by 64 hex digits")
        values = []
        for field, high in (("chain_id", (1 << 64) - 1), ("expires_at", (1 << 64) - 1)):
            value = raw.get(field)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise _invalid(f"{field} must be an integer in 1..{high}")
            values.append(value)
        return bytes.fromhex(client[2:]), bytes.fromhex(intent_hash[2:]), values[0], values[1]

    @classmethod
    def from_json(cls, raw: Any) -> SignedApproval:
        """Parse strictly and recover the signer (any signer: ``check`` judges it)."""
        if not isinstance(raw, dict):
            raise _invalid("must be an object {policy_client, intent_hash, chain_id, ...}")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise _invalid(f"unknown fields {sorted(str(k)[:40] for k in unknown)[:5]}")
        client, intent_hash, chain_id, expires_at = cls._fields(raw)
        signature = raw.get("signature")
        if not isinstance(signature, str) or not _SIG.match(signature):
            raise _invalid("signature must be 0x followed by 65 bytes of hex")
        sig = bytes.fromhex(signature[2:])
        try:
            signer = recover_signer(cls.digest_of(client, intent_hash, chain_id, expires_at), sig)
        except MalformedSignature as exc:
            raise _invalid(f"bad signature: {exc.message}") from None
        return cls(client, intent_hash, chain_id, expires_at, sig, signer)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_client": "0x" + self.policy_client.hex(),
            "intent_hash": "0x" + self.intent_hash.hex(),
            "chain_id": self.chain_id,
            "expires_at": self.expires_at,
            "signature": "0x" + self.signature.hex(),
        }

    def check(
        self,
        registration: Registration,
        *,
        intent_hash: bytes,
        chain_id: int,
        now: float,
        max_lifetime: int = MAX_APPROVAL_LIFETIME,
    ) -> None:
        """Raise ``ConfigurationError`` unless this approves exactly ``intent_hash`` for the
        registration's policy client and chain, now, signed by one of its approvers."""
        if self.policy_client != registration.policy_client:
            raise _invalid("it is for another policy client")
        if self.intent_hash != intent_hash:
            raise _invalid("it approves another intent")
        if self.chain_id != chain_id or chain_id != registration.chain_id:
            raise _invalid("it is for another chain")
        if not now < self.expires_at:
            raise _invalid("it has expired")
        if self.expires_at > now + max_lifetime:
            raise _invalid(f"it is valid for more than {max_lifetime}s ahead")
        try:  # recovered again: a hand-built instance could state any signer
            signer = recover_signer(self.digest, self.signature)
        except MalformedSignature as exc:
            raise _invalid(f"bad signature: {exc.message}") from None
        if signer != self.signer or signer not in approvers_of(registration):
            raise _invalid(
                f"signed by {self.signer_hex}, who is not an approver of this policy client "
                "(the registered owner, or params.approvers)"
            )


def parse_token_option(text: str, chain_ids: tuple[int, ...]) -> list[Token]:
    """``SYMBOL=ADDRESS:DECIMALS`` (a local token, e.g. the reference network's), on each of
    ``chain_ids``, so its amounts show in human units."""
    symbol, _, rest = text.partition("=")
    address, _, decimals = rest.partition(":")
    if not symbol or not address or not decimals.isdigit():
        raise ConfigurationError(f"--token {text!r} is not SYMBOL=ADDRESS:DECIMALS")
    return [Token(symbol, address, int(decimals), chain_id) for chain_id in chain_ids]


# -- what the CLI and the console show and send -------------------------------------------------


@dataclass(frozen=True)
class ApprovalView:
    """One listed request, re-derived from its intent. ``problem`` is set when the gateway's
    listing does not add up (then it must not be signed)."""

    policy_client: str
    intent_hash: str
    chain_id: int
    status: str
    amount: str
    recipient: str
    kind: str
    target: str
    reasons: tuple[str, ...]
    created_at: int
    expires_at: int
    problem: str | None = None

    @classmethod
    def from_row(cls, row: Any, tokens: Tokens = None) -> ApprovalView:
        if not isinstance(row, dict):
            raise GatewayProtocolError("an approval request is not an object")
        client = row.get("policy_client")
        intent_hash = row.get("intent_hash")
        if not isinstance(client, str) or not _ADDR.match(client):
            raise GatewayProtocolError("approval request: policy_client is not an address")
        if not isinstance(intent_hash, str) or not _B32.match(intent_hash):
            raise GatewayProtocolError("approval request: intent_hash is not 32 bytes of hex")
        status = row.get("status")
        reasons = row.get("reasons")
        created, expires = row.get("created_at"), row.get("expires_at")
        if (
            status not in STATUSES
            or not isinstance(reasons, list)
            or not all(isinstance(r, str) for r in reasons)
            or type(created) is not int
            or type(expires) is not int
            or not 0 <= created <= _LAST_SHOWN_TIME
            or not 0 <= expires <= _LAST_SHOWN_TIME
        ):
            raise GatewayProtocolError("approval request: malformed status, reasons or times")
        problem = None
        kind: str
        try:
            intent = TransactionIntent.from_wire(row.get("intent"))  # type: ignore[arg-type]
            spend = intent.spend
            if "0x" + intent.intent_hash.hex() != intent_hash.lower():
                problem = "its intent does not hash to its intent hash (do not approve)"
            amount = format_amount(spend.amount, spend.asset, intent.chain_id, tokens)
            if spend.kind == "unknown_call":  # its ETH value is all agentguard can see
                amount = (
                    f"{amount} sent with {intent.function_signature}, plus whatever that call "
                    "moves: agentguard cannot value this call"
                )
            recipient, kind = spend.recipient or "", spend.kind
            chain_id, target = intent.chain_id, intent.to
        except AgentGuardError as exc:
            problem = f"its intent is malformed: {shown_text(exc.message[:200])}"
            amount, recipient, kind, chain_id, target = "?", "?", "?", 0, "?"
        return cls(
            policy_client=client,
            intent_hash=intent_hash.lower(),
            chain_id=chain_id,
            status=str(status),
            amount=amount,
            recipient=recipient,
            kind=kind,
            target=target,
            reasons=tuple(shown_text(r[:500]) for r in reasons[:32]),
            created_at=created,
            expires_at=expires,
            problem=problem,
        )


class ApprovalsClient:
    """The admin JSON-RPC calls of the approval flow (the CLI and the console use it). The
    approver key signs here, in the caller's process, never in the gateway."""

    def __init__(
        self,
        url: str,
        admin_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url if url.rstrip("/").endswith("/rpc") else url.rstrip("/") + "/rpc"
        self._clock = clock
        self._timeout = timeout
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout,
            headers={"authorization": f"Bearer {admin_key}"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never shows the admin key
        return f"ApprovalsClient(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, params: Mapping[str, Any]) -> Any:
        rpc_id = str(uuid.uuid4())
        try:
            doc = strict_loads(
                self._read(
                    method, {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}
                )
            )
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"{method} failed in transport: {type(exc).__name__}"
            ) from None
        except ValueError:
            raise GatewayProtocolError(f"{method}: the gateway answered non-JSON") from None
        if not isinstance(doc, dict):
            raise GatewayProtocolError(f"{method}: the answer is not a JSON-RPC object")
        error = doc.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code")
            raise GatewayRPCError(
                shown_text(message[:500]) if isinstance(message, str) else "(no message)",
                code=code if type(code) is int else 0,
            )
        if doc.get("id") != rpc_id or "result" not in doc:
            raise GatewayProtocolError(f"{method}: the answer is not the response to this call")
        return doc["result"]

    def _read(self, method: str, body: Mapping[str, Any]) -> bytes:
        """The whole answer, at most ``MAX_ANSWER`` bytes, within the timeout in total (httpx's
        timeout bounds each read, so a body dripping a byte at a time would never end)."""
        deadline = self._clock() + self._timeout
        answer = bytearray()
        with self._http.stream("POST", self.url, json=body) as response:
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) > MAX_ANSWER:
                    raise GatewayProtocolError(
                        f"{method}: the gateway's answer is larger than {MAX_ANSWER} bytes"
                    )
                if self._clock() > deadline:
                    raise GatewayUnavailable(
                        f"{method}: the gateway's answer did not arrive within {self._timeout}s"
                    )
        return bytes(answer)

    def list(
        self,
        *,
        status: str | None = "pending",
        tokens: Tokens = None,
        policy_client: str | None = None,
        intent_hash: str | None = None,
    ) -> list[ApprovalView]:
        params: dict[str, Any] = {} if status is None else {"status": status}
        if policy_client is not None:
            params["policy_client"] = policy_client
        if intent_hash is not None:
            params["intent_hash"] = intent_hash
        result = self._call("agentguard_listApprovals", params)
        rows = result.get("approvals") if isinstance(result, dict) else None
        if not isinstance(rows, list):
            raise GatewayProtocolError("agentguard_listApprovals: no approvals list")
        return [ApprovalView.from_row(row, tokens) for row in rows[:MAX_LISTED]]

    def find(self, policy_client: str, intent_hash: str, *, tokens: Tokens = None) -> ApprovalView:
        for view in self.list(
            status=None, tokens=tokens, policy_client=policy_client, intent_hash=intent_hash
        ):
            if (view.policy_client.lower(), view.intent_hash) == (
                policy_client.lower(),
                intent_hash.lower(),
            ):
                return view
        raise ConfigurationError(f"no approval request for {intent_hash} of {policy_client}")

    def approve(
        self,
        key: PrivateKey,
        policy_client: str,
        intent_hash: str,
        *,
        before_sending: Callable[[SignedApproval], None] | None = None,
    ) -> dict[str, Any]:
        """Sign (with ``key``) and deliver an approval for a pending request, after checking
        the request adds up (its intent hashes to its intent hash) and is still pending.
        ``before_sending`` sees the signed approval first (and may refuse by raising)."""
        view = self.find(policy_client, intent_hash)
        if view.problem is not None:
            raise ConfigurationError(f"refusing to approve {intent_hash}: {view.problem}")
        if view.status != "pending":
            raise ConfigurationError(f"{intent_hash} is {view.status}, not pending")
        approval = SignedApproval.sign(
            key,
            policy_client=view.policy_client,
            intent_hash=view.intent_hash,
            chain_id=view.chain_id,
            expires_at=min(view.expires_at, int(self._clock()) + SIGNED_APPROVAL_LIFETIME),
        )
        if before_sending is not None:
            before_sending(approval)
        result: dict[str, Any] = self._call("agentguard_approve", {"approval": approval.to_json()})
        return result

    def reject(self, policy_client: str, intent_hash: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "agentguard_reject", {"policy_client": policy_client, "intent_hash": intent_hash}
        )
        return result
