"""An operator of the reference network: evaluates a policy for one intent and signs the result.

``python -m agentguard.network.operator --port 9101 --key-file operator.key``

An operator trusts the gateway for as little as possible. It evaluates only the policy, params
and expiry the policy client's owner registered (an owner-signed ``Registration`` it holds,
``--registry``), parses the intent from its wire form itself, recomputes the intent hash and the
policy code hash from the exact material it evaluates, checks that the gateway's ``data.wasm``
describes this same intent and a plausible expiry, and only then evaluates and signs. A lying
gateway can make it sign a different decision only by lying about the history (the oracle
data), exactly as on Newton.

One process may hold several operator keys (an operator host: ``--key-file`` repeated). It
evaluates a task once and each key it is asked for signs the same attestation digest on its
own (``agentguard_evaluateForKeys``), each key with its own task claims, as separate operators
would. Keys on one host share its failure domain: see ``docs/architecture.md``.

Under load the gateway sends an operator several tasks in one message
(``agentguard_evaluateBatch``): each is checked, evaluated, signed and answered on its own,
under its task id, exactly as if it came alone; an operator host, several tasks each naming
its keys (``agentguard_evaluateBatchForKeys``), each answered as ``evaluate_for`` alone would.
"""

from __future__ import annotations

import argparse
import heapq
import hmac
import re
import sqlite3
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from coincurve import PrivateKey

from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._exceptions import AgentGuardError, ConfigurationError, IntentError
from agentguard._intent import TransactionIntent
from agentguard._logging import get_logger
from agentguard._task_id import canonical_x402
from agentguard._task_id import task_id as derive_task_id
from agentguard._tiers import human_gate
from agentguard.network._rpc import (
    EVALUATE_BATCH,
    EVALUATE_BATCH_FOR_KEYS,
    EVALUATE_FOR_KEYS,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MAX_BATCH,
    MAX_BODY,
    MAX_HOST_KEYS,
    METHOD_NOT_FOUND,
    POLICY_EVALUATION_ERROR,
    POLICY_REQUIRED,
    REGISTRATION_REQUIRED,
    UNAUTHORIZED,
    RPCError,
    probe_unavailable,
    rpc_handler,
)
from agentguard.network._server import Handler, run
from agentguard.network.approvals import SignedApproval
from agentguard.network.registration import MAX_EXPIRE_AFTER, Registration
from agentguard.network.registry import Registry
from agentguard.network.state import policy_from_material
from agentguard.policies import Policy, canonical_json
from agentguard.policies._engine import Evaluation, PolicyEngine, PolicyEngineError
from agentguard.policies._probe import PolicyRefused, ProbeUnavailable, probe, same_material

__all__ = [
    "KEY_ENV",
    "TOKEN_ENV",
    "Operator",
    "check_params",
    "create_app",
    "evaluate_policy",
    "main",
    "policy_input",
    "probe_policy",
]

KEY_ENV = "AGENTGUARD_OPERATOR_KEY"
TOKEN_ENV = "AGENTGUARD_OPERATOR_TOKEN"  # noqa: S105 - a variable name, not a secret
# How far the gateway's clock (``now``, ``expires_at``) may be from ours.
CLOCK_SKEW = 30
# Task ids this operator signed and whose attestations have not expired yet.
MAX_LIVE_TASKS = 1_000_000

_MAX_DERIVED = 4096
# Policies held by code hash; one pushed out is asked for again (``POLICY_REQUIRED``).
_MAX_POLICIES = 256
_K = TypeVar("_K")
_V = TypeVar("_V")
# What a gateway puts in a policy's ``data.wasm`` (see ``Gateway._wasm``); a policy must not
# read anything else there that only a lying gateway could have added.
_WASM_FIELDS = frozenset({"now", "intent_hash", "approved", "spend", "history", "x402"})
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}\Z")

log = get_logger("agentguard.network.operator")


def _b32(params: Mapping[str, Any], field: str) -> bytes:
    value = params.get(field)
    if not isinstance(value, str) or not _B32.match(value):
        raise RPCError(INVALID_PARAMS, f"{field} must be 0x followed by 64 hex digits")
    return bytes.fromhex(value[2:])


def _int(params: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = params.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RPCError(INVALID_PARAMS, f"{field} must be an integer in {low}..{high}")
    return value


# places in a JSON value (keys and indexes) and the exact type found there
_Scalars = tuple[tuple[tuple[str | int, ...], type], ...]


@dataclass(frozen=True)
class _Derived:
    """What one held registration implies, computed once instead of per task: the canonical
    JSON of its params (compared with the params the gateway sends), where its params hold
    integers and booleans (``_scalars``), its policy id (two keccaks), and the engine's key
    for the params (canonical JSON of ``{"params": ...}``)."""

    params_json: bytes
    scalars: _Scalars | None
    policy_id: bytes
    engine_params: bytes


class _Verdict(NamedTuple):
    """One evaluated task, before any key signs it: what every key of a host signs alike (a
    named tuple: a fifth of a frozen dataclass's cost to build, once per task)."""

    task_id: bytes
    policy_client: bytes
    intent_hash: bytes
    expires_at: int
    now: float
    approval: SignedApproval | None
    decision: str
    reasons: tuple[str, ...]
    tier: int
    policy_id: bytes
    digest: bytes


class _Signer:
    """One operator key (never shown) and the task ids it signed: its own claims, as if it
    were alone in its process."""

    __slots__ = ("address", "key", "tasks")

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.address = operator_address(key)
        self.tasks = _Claims(MAX_LIVE_TASKS)

    def __repr__(self) -> str:
        return f"_Signer({self.address})"


class Operator:
    """Holds the signing keys (never shown) and the compiled-policy caches. One key is an
    operator; several are an operator host, whose registry and caches they share."""

    def __init__(
        self,
        key: PrivateKey | Sequence[PrivateKey],
        registry: Registry,
        engine: PolicyEngine | None = None,
    ) -> None:
        signers = [_Signer(k) for k in ([key] if isinstance(key, PrivateKey) else key)]
        self._signers = {s.address.lower(): s for s in signers}
        if not signers or len(self._signers) != len(signers):
            raise ConfigurationError("an operator host needs one or more distinct keys")
        self.addresses = tuple(s.address for s in signers)
        self.address = self.addresses[0]  # a single-key operator's only address
        self._registry = registry
        self._engine = engine if engine is not None else PolicyEngine()
        self._policies: OrderedDict[bytes, Policy] = OrderedDict()  # LRU, code hash -> policy
        # an owner's signature -> (the registration's JSON, the registration held)
        self._held_json: dict[str, tuple[dict[str, Any], Registration]] = {}
        # ``Registration.wire_hash`` -> the registration ``_held`` returned for its JSON: a
        # request may name it by that hash instead (``registration_hash``)
        self._by_hash: dict[bytes, Registration] = {}
        # LRU: (code hash, schema hash, canonical params) that passed that schema and the
        # probe (``probe_policy``): the content itself, so a registration replaced at the same
        # version is checked again (the bytes objects are kept, their hashes cached, by the
        # policy and ``_derived``: a lookup hashes nothing); the value is the policy checked,
        # since a code hash does not pin its material down (``same_material``)
        self._validated: OrderedDict[tuple[bytes, bytes, bytes], Policy] = OrderedDict()
        # registration signature -> what it implies; bounded by the registry's size
        self._derived: dict[bytes, _Derived] = {}

    def __repr__(self) -> str:
        return f"Operator({', '.join(self.addresses)})"

    def _policy(self, params: Mapping[str, Any], code_hash: bytes) -> Policy:
        material = params.get("policy")
        if material is None:
            cached = self._policies.get(code_hash)
            if cached is None:
                raise RPCError(
                    POLICY_REQUIRED,
                    f"this operator does not hold policy code 0x{code_hash.hex()}; "
                    "resend the request with the policy material",
                )
            self._policies.move_to_end(code_hash)
            return cached
        if not isinstance(material, dict):
            raise RPCError(INVALID_PARAMS, "policy must be an object {entrypoint, modules, ...}")
        try:
            policy = policy_from_material(material)
        except ValueError as exc:
            raise RPCError(INVALID_PARAMS, str(exc)) from None
        if policy.code_hash != code_hash:
            raise RPCError(
                INVALID_PARAMS,
                "the policy material does not hash to policy_code_hash "
                f"(it hashes to 0x{policy.code_hash.hex()})",
            )
        _remember(self._policies, code_hash, policy, _MAX_POLICIES)
        return policy

    def hold(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``agentguard_holdRegistration``: the gateway delivers a registration as soon as the
        owner signed it, so this operator refuses a stranger's for that client from then on."""
        raw = params.get("registration")
        policy_client = raw.get("policy_client") if isinstance(raw, dict) else None
        if not isinstance(policy_client, str) or not _ADDR.match(policy_client):
            raise RPCError(INVALID_PARAMS, "registration.policy_client must be an address")
        held = self._held(params, policy_client)
        return {"policy_client": held.policy_client_hex, "version": held.version}

    def _registration(self, params: Mapping[str, Any], policy_client: str) -> Registration:
        """The registration to evaluate under: one this operator holds, never the gateway's say
        (``Registry.choose``: the newest, or for a vault the one it pins onchain)."""
        try:
            return self._registry.choose(self._held(params, policy_client))
        except ConfigurationError as exc:
            raise RPCError(INVALID_PARAMS, exc.message) from None

    def _held(self, params: Mapping[str, Any], policy_client: str) -> Registration:
        """The owner-signed registration the gateway delivers (held if ``Registry.offer``
        takes it, refused if it is older than the newest of an EOA client or a stranger's), or
        without one the newest held."""
        client = bytes.fromhex(policy_client[2:])
        raw = params.get("registration")
        if "registration_hash" in params:
            if raw is not None:
                # one name each: which of two disagreeing ones is signed under must never
                # depend on which field a reader looks at (no gateway sends both)
                raise RPCError(INVALID_PARAMS, "send registration or registration_hash, not both")
            return self._named(params, client)
        if raw is None:
            held = self._registry.get(client)
            if held is None:
                raise RPCError(
                    INVALID_PARAMS,
                    f"policy client {policy_client} has no registration signed by its owner; "
                    "this operator signs nothing for it",
                )
            return held
        signature = raw.get("signature") if isinstance(raw, dict) else None
        known = self._held_json.get(signature) if isinstance(signature, str) else None
        if known is not None and known[1].policy_client == client and known[0] == raw:
            return known[1]
        try:
            offered = Registration.from_json(raw)
            if offered.policy_client != client:
                raise ConfigurationError("registration: it is for another policy client")
            held = self._registry.offer(offered)
        except ConfigurationError as exc:
            raise RPCError(INVALID_PARAMS, exc.message) from None
        if len(self._held_json) >= _MAX_DERIVED:
            self._held_json.clear()
            self._by_hash.clear()
        self._held_json["0x" + held.signature.hex()] = (held.to_json(), held)
        self._by_hash[held.wire_hash] = held
        return held

    def _named(self, params: Mapping[str, Any], client: bytes) -> Registration:
        """The registration a request names by ``registration_hash``: only one this operator
        verified itself from its full JSON (``_held``), exactly as if that JSON came again;
        ``REGISTRATION_REQUIRED`` for any other hash, so the gateway sends it in full."""
        named = _b32(params, "registration_hash")
        held = self._by_hash.get(named)
        if held is None:
            raise RPCError(
                REGISTRATION_REQUIRED,
                f"this operator does not hold registration 0x{named.hex()}; "
                "resend the request with the registration",
            )
        if held.policy_client != client:
            raise RPCError(INVALID_PARAMS, "registration: it is for another policy client")
        return held

    def _derive(self, registration: Registration) -> _Derived:
        """``_Derived`` for a registration, keyed by its owner's signature (which covers every
        field derived from), so a replaced registration never shares an entry."""
        derived = self._derived.get(registration.signature)
        if derived is None:
            if len(self._derived) >= _MAX_DERIVED:
                self._derived.clear()  # recomputed on the next task of each client
            derived = _Derived(
                params_json=registration.params_json,
                scalars=_scalars(registration.params),
                policy_id=registration.policy_id,
                engine_params=canonical_json({"params": registration.params}),
            )
            self._derived[registration.signature] = derived
        return derived

    def _check_registered(
        self,
        params: Mapping[str, Any],
        registration: Registration,
        derived: _Derived,
        chain_id: int,
        expire_after: int,
    ) -> tuple[Policy, dict[str, Any]]:
        """The policy code, params and expiry must be exactly what the owner registered."""
        if chain_id != registration.chain_id:
            raise RPCError(
                INVALID_PARAMS,
                f"the policy client is registered for chain {registration.chain_id}, "
                f"not {chain_id}",
            )
        code_hash = _b32(params, "policy_code_hash")
        if code_hash != registration.policy_code_hash:
            raise RPCError(
                INVALID_PARAMS,
                f"policy code 0x{code_hash.hex()} is not the registered policy "
                f"0x{registration.policy_code_hash.hex()}",
            )
        sent = params.get("params")
        if not _same_params(sent, registration.params, derived.scalars):
            try:
                same = canonical_json(sent) == derived.params_json
            except (TypeError, ValueError):
                same = False
            if not same:
                raise RPCError(INVALID_PARAMS, "params differ from the registered params")
        if expire_after != registration.expire_after:
            raise RPCError(
                INVALID_PARAMS,
                f"expire_after {expire_after} is not the registered {registration.expire_after}",
            )
        policy = self._policy(params, code_hash)
        key = (code_hash, policy.schema_hash, derived.params_json)
        checked = self._validated.get(key)
        if checked is not None and (
            checked is policy or same_material(policy, checked.entrypoint, checked.modules)
        ):
            self._validated.move_to_end(key)
        else:
            check_params(policy, registration.params)
            probe_policy(policy, registration.params)
            _remember(self._validated, key, policy, _MAX_DERIVED)
        return policy, registration.params

    @staticmethod
    def _claim_task(signer: _Signer, verdict: _Verdict) -> None:
        """A task id names one intent of one policy client: the vault's ``taskUsed``, a vault
        payment's EIP-3009 nonce, the SDK's replay guard and the gateway's records all assume
        it. The gateway derives it, so only a lying gateway could reuse one for another intent;
        refuse that while an attestation signed under it is live (a retry of the same intent
        is fine). Forgotten after expiry: an expired attestation authorizes nothing."""
        owner = (verdict.policy_client, verdict.intent_hash)
        if not signer.tasks.claim(verdict.task_id, owner, verdict.expires_at, verdict.now):
            raise RPCError(
                INVALID_PARAMS,
                f"task id 0x{verdict.task_id.hex()} was already signed for a different intent; "
                "a task id names exactly one intent",
            )

    def _approval(
        self,
        params: Mapping[str, Any],
        wasm: Mapping[str, Any],
        registration: Registration,
        intent_hash: bytes,
        chain_id: int,
        now: float,
    ) -> SignedApproval | None:
        """``data.wasm.approved = true`` only with an approver's signed approval of exactly this
        intent, for this policy client and chain, unexpired: the gateway cannot invent one."""
        raw = params.get("approval")
        if wasm["approved"] is not True:
            if raw is not None:
                raise RPCError(INVALID_PARAMS, "an approval came with data.wasm.approved false")
            return None
        if raw is None:
            raise RPCError(
                INVALID_PARAMS,
                "data.wasm.approved is true without a signed approval; this operator signs "
                "nothing on the gateway's word that a human approved",
            )
        try:
            approval = SignedApproval.from_json(raw)
            approval.check(registration, intent_hash=intent_hash, chain_id=chain_id, now=now)
        except ConfigurationError as exc:
            raise RPCError(INVALID_PARAMS, exc.message) from None
        return approval

    def evaluate_and_sign(
        self, params: Mapping[str, Any], now: float | None = None
    ) -> dict[str, Any]:
        """``newt_evaluateAndSign``: check, evaluate, sign. Raises ``RPCError`` on bad input.
        A host of several keys answers only ``evaluate_for``: which keys sign is the caller's
        to say, never this method's to guess."""
        if len(self._signers) > 1:
            raise RPCError(
                INVALID_PARAMS,
                f"this operator host holds {len(self._signers)} operator keys: ask "
                f"{EVALUATE_FOR_KEYS} with the operators wanted",
            )
        [answer] = self._sign(self._evaluate(params, now), [self.address])
        if isinstance(answer, RPCError):
            raise answer
        return answer

    def evaluate_batch(
        self, params: Mapping[str, Any], now: float | None = None, *, for_keys: bool = False
    ) -> dict[str, Any]:
        """``agentguard_evaluateBatch``: ``{"tasks": [...]}``, 1..``MAX_BATCH`` params of
        ``newt_evaluateAndSign`` with distinct task ids. Each task is checked, evaluated and
        signed on its own, exactly as ``evaluate_and_sign`` would alone (a task refused or
        failing touches no other); answers ``{"answers": [...]}``, one per task in that
        order, each ``{"task_id", "result"}`` or ``{"task_id", "error": {"code",
        "message"}}``, so the gateway binds every answer to its task by id.

        ``for_keys`` (``agentguard_evaluateBatchForKeys``, an operator host's): each task is
        ``evaluate_for``'s params instead, its ``operators`` naming at most ``MAX_HOST_KEYS``
        keys in all the batch (one message signs no more than one host call), and its
        ``result`` is ``evaluate_for``'s, one answer per key named."""
        tasks = params.get("tasks")
        if (
            not isinstance(tasks, list)
            or not 0 < len(tasks) <= MAX_BATCH
            or not all(isinstance(t, dict) for t in tasks)
        ):
            raise RPCError(INVALID_PARAMS, f"tasks must be a list of 1..{MAX_BATCH} objects")
        ids = [t.get("task_id") for t in tasks]
        if not all(isinstance(i, str) and _B32.match(i) for i in ids):
            raise RPCError(INVALID_PARAMS, "each task's task_id must be 0x and 64 hex digits")
        if len({i.lower() for i in ids}) != len(ids):
            raise RPCError(INVALID_PARAMS, "a batch names one task id twice")
        one = self.evaluate_and_sign
        if for_keys:
            one = self.evaluate_for
            named = sum(len(t["operators"]) for t in tasks if isinstance(t.get("operators"), list))
            if named > MAX_HOST_KEYS:
                raise RPCError(
                    INVALID_PARAMS, f"a batch names more than {MAX_HOST_KEYS} operators in all"
                )
        answers: list[dict[str, Any]] = []
        for task_id, task in zip(ids, tasks, strict=True):
            try:
                answers.append({"task_id": task_id, "result": one(task, now)})
            except RPCError as exc:
                error = {"code": exc.code, "message": exc.message}
                answers.append({"task_id": task_id, "error": error})
            except Exception as exc:  # a bug in one task must not fail the others
                log.error("internal error", error_type=type(exc).__name__, error=str(exc))
                error = {"code": INTERNAL_ERROR, "message": "internal operator error"}
                answers.append({"task_id": task_id, "error": error})
        return {"answers": answers}

    def evaluate_for(self, params: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        """``agentguard_evaluateForKeys``: ``params`` of ``newt_evaluateAndSign`` plus
        ``operators`` (distinct addresses). Evaluates once; answers ``{"answers": [...]}``,
        one per address in that order: the answer that key alone would give as an operator,
        or ``{"operator", "error": {"code", "message"}}`` (an address this host does not
        hold, a task id that key signed for another intent). A request every key would refuse
        alike (bad input, a failing policy) raises ``RPCError``."""
        wanted = params.get("operators")
        if (
            not isinstance(wanted, list)
            or not 0 < len(wanted) <= MAX_HOST_KEYS
            or not all(isinstance(a, str) and _ADDR.match(a) for a in wanted)
        ):
            raise RPCError(
                INVALID_PARAMS, f"operators must be a list of 1..{MAX_HOST_KEYS} operator addresses"
            )
        if len({a.lower() for a in wanted}) != len(wanted):
            raise RPCError(INVALID_PARAMS, "operators names an address twice")
        held = any(a.lower() in self._signers for a in wanted)
        answers = self._sign(self._evaluate(params, now) if held else None, wanted)
        return {
            "answers": [
                {"operator": address, "error": {"code": a.code, "message": a.message}}
                if isinstance(a, RPCError)
                else a
                for address, a in zip(wanted, answers, strict=True)
            ]
        }

    def _sign(
        self, verdict: _Verdict | None, wanted: Sequence[str]
    ) -> list[dict[str, Any] | RPCError]:
        """Each wanted key's answer to ``verdict``, or why that key refuses: its claim on the
        task id, then the approval's single use (the host's registry: a use by one key counts
        for all its keys), then its signature. ``verdict`` is None only if no key is held."""
        answers: list[Any] = []
        claimed: list[int] = []
        for address in wanted:
            signer = self._signers.get(address.lower())
            try:
                if signer is None or verdict is None:
                    raise RPCError(
                        INVALID_PARAMS, f"this operator host does not hold the key of {address}"
                    )
                self._claim_task(signer, verdict)
            except RPCError as exc:
                answers.append(exc)
                continue
            claimed.append(len(answers))
            answers.append(signer)
        if claimed and verdict is not None:
            approval = verdict.approval
            if (
                approval is not None
                and verdict.decision == "allow"
                and not self._registry.claim_approval(
                    approval.digest, verdict.task_id, approval.expires_at + CLOCK_SKEW, verdict.now
                )
            ):
                refused = RPCError(
                    INVALID_PARAMS,
                    "this approval was already used for another task; one approval allows one task",
                )
                for i in claimed:
                    answers[i] = refused
        return [
            _answer(a, verdict) if isinstance(a, _Signer) and verdict is not None else a
            for a in answers
        ]

    def _evaluate(self, params: Mapping[str, Any], now: float | None) -> _Verdict:
        """Every check and the policy's evaluation: the same for each key of a host."""
        now = time.time() if now is None else now
        task_id = _b32(params, "task_id")
        policy_client = params.get("policy_client")
        if not isinstance(policy_client, str) or not _ADDR.match(policy_client):
            raise RPCError(INVALID_PARAMS, "policy_client must be a 0x-prefixed address")
        intent, parsed, wasm = policy_input(params.get("intent"), params.get("wasm"))
        chain_id = _int(params, "chain_id", 1, (1 << 64) - 1)
        if chain_id != intent.chain_id:
            raise RPCError(INVALID_PARAMS, "chain_id differs from the intent's chain id")
        expire_after = _int(params, "expire_after", 1, MAX_EXPIRE_AFTER)
        expires_at = _int(params, "expires_at", 0, (1 << 64) - 1)
        if abs(expires_at - expire_after - now) > CLOCK_SKEW:
            raise RPCError(INVALID_PARAMS, "expires_at is not now + expire_after")
        intent_hash = intent.intent_hash
        wasm_now = wasm["now"]
        if abs(wasm_now - now) > CLOCK_SKEW:
            raise RPCError(INVALID_PARAMS, "data.wasm.now is not the current time")
        if expires_at != wasm_now + expire_after:
            raise RPCError(INVALID_PARAMS, "expires_at is not data.wasm.now + expire_after")

        registration = self._registration(params, policy_client)
        derived = self._derive(registration)
        policy, config = self._check_registered(
            params, registration, derived, chain_id, expire_after
        )
        try:
            derived_id = derive_task_id(
                policy_client, intent_hash, wasm.get("x402"), params.get("request_id")
            )
        except IntentError as exc:
            raise RPCError(INVALID_PARAMS, f"request_id: {exc.message}") from None
        if derived_id != task_id:  # the client checks this id: so it checks what is signed
            raise RPCError(
                INVALID_PARAMS,
                "task_id is not keccak(policy_client, intent hash, data.wasm.x402, request_id): "
                "a task signed under it would not bind the details evaluated",
            )
        approval = self._approval(params, wasm, registration, intent_hash, chain_id, now)
        pid = derived.policy_id
        evaluation = evaluate_policy(
            self._engine, policy, parsed, config, wasm, params_json=derived.engine_params
        )
        decision, reasons, tier = _tiered(evaluation, approval)
        client = bytes.fromhex(policy_client[2:])
        digest = attestation_digest(
            chain_id=chain_id,
            policy_client=client,
            task_id=task_id,
            policy_id=pid,
            intent_hash=intent_hash,
            allow=decision == "allow",
            expires_at=expires_at,
            tier=tier,
        )
        return _Verdict(
            task_id,
            client,
            intent_hash,
            expires_at,
            now,
            approval,
            decision,
            reasons,
            tier,
            pid,
            digest,
        )


def _answer(signer: _Signer, verdict: _Verdict) -> dict[str, Any]:
    """``newt_evaluateAndSign``'s result: ``verdict`` signed by ``signer`` alone."""
    return {
        "operator": signer.address,
        "decision": verdict.decision,
        "tier": verdict.tier,
        "reasons": list(verdict.reasons),
        "intent_hash": "0x" + verdict.intent_hash.hex(),
        "policy_id": "0x" + verdict.policy_id.hex(),
        "signature": "0x" + sign_attestation(signer.key, verdict.digest).hex(),
    }


def _tiered(
    evaluation: Evaluation, approval: SignedApproval | None
) -> tuple[str, tuple[str, ...], int]:
    """The (decision, reasons, tier) this operator signs. The tier is the policy's; the human
    tier is an allow only with a person's signed approval this operator checked itself, so
    whatever the policy's own rules say, the tier is never signed on the gateway's word."""
    decision, reasons = human_gate(
        evaluation.decision, evaluation.reasons, evaluation.tier, approved=approval is not None
    )
    return decision, reasons, evaluation.tier


def _scalars(value: Any, at: tuple[str | int, ...] = ()) -> _Scalars | None:
    """Where the registered params hold an integer or a boolean, and its exact type; None if
    they hold a float (or anything else a ``==`` does not pin to one JSON text)."""
    found: list[tuple[tuple[str | int, ...], type]] = []
    kind = type(value)
    if kind is dict:
        items: Any = value.items()
    elif kind is list:
        items = enumerate(value)
    elif kind is int or kind is bool:
        return ((at, kind),)
    elif kind is str or value is None:
        return ()
    else:
        return None
    for key, inner in items:
        below = _scalars(inner, (*at, key))
        if below is None:
            return None
        found.extend(below)
    return tuple(found)


def _same_params(sent: Any, held: dict[str, Any], scalars: _Scalars | None) -> bool:
    """True only if ``sent`` has the canonical JSON of ``held`` (the registered params), at a
    fraction of that encoding's cost; False sends the caller to the encoding. ``==`` holds the
    two equal as Python values (keys in any order, as the canonical JSON sorts them); that
    leaves only ``1 == 1.0 == True`` apart, so every place ``held`` has an integer or a
    boolean (``scalars``) must hold the same type in ``sent``. Strings, objects, arrays and
    null are equal only to their own kind. ``held`` with a float: never (``-0.0 == 0.0``).
    ``sent`` as the RPC decoder (``strict_loads``) gives it: exact JSON types only, so no
    value's own ``__eq__`` (a subclass's, which Python asks first) decides."""
    if scalars is None or type(sent) is not dict or sent != held:
        return False
    try:
        for path, kind in scalars:
            value: Any = sent
            for step in path:
                value = value[step]
            if type(value) is not kind:
                return False
    except (LookupError, TypeError):  # never after ``==``; the encoding decides
        return False
    return True


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """An LRU's newest entry; the least recently used goes past ``limit``."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)


def check_params(policy: Policy, params: dict[str, Any]) -> None:
    """The registered params must match the policy's params schema (itself a valid schema);
    ``RPCError`` otherwise. The challenger checks a registration with this very function."""
    if not policy.params_schema:
        return
    import jsonschema

    try:
        jsonschema.validate(params, dict(policy.params_schema))
    except jsonschema.ValidationError as exc:
        raise RPCError(
            INVALID_PARAMS, f"params do not match the policy schema: {exc.message}"
        ) from None
    except jsonschema.SchemaError as exc:
        raise RPCError(
            INVALID_PARAMS, f"the policy's params schema is invalid: {exc.message}"
        ) from None
    except (TypeError, ValueError, LookupError, AttributeError) as exc:
        # jsonschema reads some malformed schemas (``"$schema": []``) with a TypeError
        raise RPCError(
            INVALID_PARAMS, f"the policy's params schema is invalid ({type(exc).__name__})"
        ) from None


def policy_input(
    intent_wire: Any, wasm: Any
) -> tuple[TransactionIntent, dict[str, Any], dict[str, Any]]:
    """The policy's input as an operator builds it: the intent parsed from its wire form (never
    the gateway's reading of it) and ``data.wasm`` checked to describe exactly that intent, in
    the shape an honest gateway sends. Returns (intent, parsed input, data.wasm); ``RPCError``
    otherwise. The challenger (``agentguard.challenge``) rebuilds inputs with this very function.
    The clock checks (``now``, expiry) are the caller's: they depend on when it evaluates."""
    try:
        intent = TransactionIntent.from_wire(intent_wire)
        spend = intent.spend
        parsed = intent.parsed()
    except AgentGuardError as exc:
        raise RPCError(INVALID_PARAMS, f"intent: {exc.message}") from None
    if not isinstance(wasm, dict):
        raise RPCError(INVALID_PARAMS, "wasm must be an object (the policy's data.wasm)")
    if wasm.get("intent_hash") != "0x" + intent.intent_hash.hex():
        raise RPCError(INVALID_PARAMS, "data.wasm is about a different intent")
    if wasm.get("spend") != spend.wasm():
        raise RPCError(INVALID_PARAMS, "data.wasm.spend does not match the intent")
    if "x402" in wasm:
        try:
            canonical = canonical_x402(wasm["x402"], intent)
        except AgentGuardError as exc:
            raise RPCError(INVALID_PARAMS, f"data.wasm.x402: {exc.message}") from None
        if canonical_json(wasm["x402"]) != canonical_json(canonical):  # True == 1 in Python
            raise RPCError(INVALID_PARAMS, "data.wasm.x402 is not in canonical form")
    now = wasm.get("now")
    if isinstance(now, bool) or not isinstance(now, int):
        raise RPCError(INVALID_PARAMS, "data.wasm.now is not the current time")
    unknown = sorted(set(wasm) - _WASM_FIELDS)
    if unknown:
        shown = ", ".join(repr(k)[:40] for k in unknown[:5])
        raise RPCError(INVALID_PARAMS, f"data.wasm carries keys no gateway sends: {shown}")
    if not isinstance(wasm.get("approved"), bool) or not isinstance(wasm.get("history"), dict):
        raise RPCError(INVALID_PARAMS, "data.wasm.approved must be a bool, history an object")
    return intent, parsed, wasm


def probe_policy(policy: Policy, params: dict[str, Any]) -> None:
    """Before this process first compiles ``policy`` under ``params``: one that crashes or
    hangs rego-cpp in a child process (``agentguard.policies._probe``) is refused, so it never
    takes this operator down; the verdict is kept in this process, refusals too."""
    try:
        probe(policy, params)
    except PolicyRefused as exc:
        raise RPCError(POLICY_EVALUATION_ERROR, f"policy evaluation failed: {exc}") from None
    except ProbeUnavailable as exc:  # nothing judged: the machine's state, not the policy
        raise probe_unavailable("operator", exc) from None


def evaluate_policy(
    engine: PolicyEngine,
    policy: Policy,
    parsed: dict[str, Any],
    params: dict[str, Any],
    wasm: dict[str, Any],
    *,
    params_json: bytes | None = None,
) -> Evaluation:
    """The one evaluation an operator signs (and the challenger repeats): the parsed intent as
    ``input``, the registered params, ``data.wasm``. ``RPCError`` if the policy fails."""
    try:
        return engine.evaluate(
            policy, input=parsed, params=params, wasm=wasm, params_json=params_json
        )
    except PolicyEngineError as exc:
        raise RPCError(POLICY_EVALUATION_ERROR, f"policy evaluation failed: {exc}") from None


class _Claims:
    """Keys each held by one owner until their expiry (plus the clock skew), bounded in number:
    a task id for one intent."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: dict[bytes, tuple[Any, int]] = {}
        self._expiries: list[tuple[int, bytes]] = []

    def claim(self, key: bytes, owner: Any, expires_at: int, now: float) -> bool:
        """False if another owner holds ``key``; the same owner may claim it again."""
        while self._expiries and self._expiries[0][0] + CLOCK_SKEW < now:
            expiry, old = heapq.heappop(self._expiries)
            if self._held.get(old, (None, -1))[1] == expiry:
                del self._held[old]
        held = self._held.get(key)
        if held is not None and held[0] != owner:
            return False
        if held is None and len(self._held) >= self._limit:
            raise RPCError(INVALID_PARAMS, "too many live tasks; try again later")
        if held is None or expires_at > held[1]:
            self._held[key] = (owner, expires_at)
            heapq.heappush(self._expiries, (expires_at, key))
        return True


def create_app(operator: Operator, *, token: str) -> Handler:
    """Only a caller with ``token`` (the gateway) may ask for signatures: an operator signs the
    history the caller hands it, so anyone else could make it sign past a cap."""
    expected = f"Bearer {token}".encode()

    def authorize(header: str | None) -> None:
        if not hmac.compare_digest((header or "").encode(), expected):
            raise RPCError(UNAUTHORIZED, "only the gateway may call this operator", http_status=401)

    async def call(_: None, rpc_id: Any, method: str, params: dict[str, Any]) -> Any:
        if method == "newt_evaluateAndSign":
            return operator.evaluate_and_sign(params)
        if method == EVALUATE_FOR_KEYS:
            return operator.evaluate_for(params)
        if method == EVALUATE_BATCH:
            return operator.evaluate_batch(params)
        if method == EVALUATE_BATCH_FOR_KEYS:
            return operator.evaluate_batch(params, for_keys=True)
        if method == "agentguard_holdRegistration":
            return operator.hold(params)
        raise RPCError(METHOD_NOT_FOUND, f"unknown method {method!r}")

    addresses = operator.addresses
    health: dict[str, Any] = {"status": "ok"}
    if len(addresses) == 1:
        health["operator"] = addresses[0]
    else:
        health["operators"] = list(addresses)
    return rpc_handler(authorize, call, health=health, name="operator")


def main(argv: Sequence[str] | None = None) -> int:
    from agentguard.network._keys import load_operator_key, load_token

    parser = argparse.ArgumentParser(
        prog="python -m agentguard.network.operator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--key-file",
        action="append",
        help=f"file with the hex private key (else ${KEY_ENV}); repeated, an operator host "
        "that evaluates once for all its keys",
    )
    parser.add_argument(
        "--token-file", help=f"file with the gateway's bearer token (else ${TOKEN_ENV})"
    )
    parser.add_argument(
        "--registry", required=True, help="SQLite file holding the policy registrations"
    )
    parser.add_argument(
        "--chain-rpc",
        help="node URL: check a vault's owner() before holding its registration, and sign only "
        "under the policy id the vault pins",
    )
    args = parser.parse_args(argv)
    try:
        check_owner: Callable[[Registration], str | None] | None = None
        pinned: Callable[[Registration], bytes | None] | None = None
        if args.chain_rpc:
            from agentguard.network.pins import VaultPins
            from agentguard.network.usage import ChainUsageCheck

            chain = ChainUsageCheck(args.chain_rpc)
            check_owner, pinned = chain.check_owner, VaultPins(chain).pinned
        registry = Registry(args.registry, check_owner=check_owner, pinned=pinned)
        keys = [load_operator_key(path, KEY_ENV) for path in args.key_file or [None]]
        operator = Operator(keys, registry)
        token = load_token(args.token_file, TOKEN_ENV)
    except (AgentGuardError, OSError, sqlite3.Error) as exc:
        print(f"operator: {exc}", file=sys.stderr)
        return 2

    async def started() -> None:
        print(
            f"operator {', '.join(operator.addresses)} listening on "
            f"http://{args.host}:{args.port}/rpc",
            flush=True,
        )

    try:
        run(
            create_app(operator, token=token),
            args.host,
            args.port,
            on_start=started,
            max_body=MAX_BODY,
        )
    except OSError as exc:
        print(
            f"operator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
