"""The operator links: one keep-alive connection pool per operator, and one call to it.

An operator's answer becomes a result or an ``OperatorFailure`` (Newton's ``OperatorError``
shape comes from ``operator_error``); nothing an operator sends can raise anything else.

Operators configured with the same URL are keys of one operator host (one process, see
``agentguard.network.operator``): their links share its connection pool and the policy code
and registrations it holds, and the operators of a host wanted for a task are asked in one
call (``call_host``) that names them. The same URL is the grouping because it is what
decides which process answers; they must then share one bearer token too, or the gateway
refuses to start.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError
from agentguard._json import strict_loads
from agentguard._logging import get_logger
from agentguard.network._http import HTTPError, KeepAliveClient
from agentguard.network._keys import load_token
from agentguard.network._rpc import (
    EVALUATE_FOR_KEYS,
    POLICY_REQUIRED,
    PROBE_UNAVAILABLE,
    REGISTRATION_REQUIRED,
)
from agentguard.network.config import OperatorEntry

if TYPE_CHECKING:
    from agentguard.network.gateway._registry import PolicyClient
    from agentguard.network.gateway._validation import TaskInput

__all__ = [
    "Bodies",
    "OperatorFailure",
    "OperatorLink",
    "bind_answers",
    "call_host",
    "call_operator",
    "deliver",
    "exchange",
    "host_answers",
    "members",
    "named",
    "operator_error",
    "operator_links",
    "rpc_failure",
    "task_members",
]

log = get_logger("agentguard.network.gateway")

# Policy codes and registrations noted as held per operator host (``_remember``): as many as
# an operator keeps registrations verified (``operator._MAX_DERIVED``).
MAX_HELD = 4096

# Newton's ``operator_errors[].error_code`` is a number; ours are these (HTTP-like for
# transport trouble), or the operator's own JSON-RPC error code; ``error_type`` names it.
_ERROR_CODES = {
    "timeout": 408,
    "unreachable": 503,
    "invalid_response": 502,
    "mismatch": 409,
    "bad_signature": 401,
    "internal": 500,
}


class OperatorLink:
    def __init__(self, entry: OperatorEntry, host: OperatorLink | None = None) -> None:
        """``host``: the link of another key of the same operator host, whose connection
        pool, held policy code and held registrations this one shares."""
        self.url = entry.url
        self.address = entry.address
        self.address_bytes = bytes.fromhex(entry.address[2:])
        self.operator_id = "0x" + keccak(self.address_bytes).hex()
        self.hosted = host is not None
        if host is None:
            self.has_code: set[bytes] = set()
            self.has_registration: set[bytes] = set()  # their ``Registration.wire_hash``
            self.http = KeepAliveClient(entry.url, token=load_token(entry.token_file, ""))
        else:
            host.hosted = True
            self.has_code, self.http = host.has_code, host.http
            self.has_registration = host.has_registration


def operator_links(entries: Sequence[OperatorEntry]) -> list[OperatorLink]:
    """One link per operator, in order; operators at one URL share their host's (see above).
    ``ConfigurationError`` if two of them come with different bearer tokens, or if one
    address is listed twice (in any spelling, at any URL): quorum counts each link's vote, so
    one key listed twice would count its one signature twice."""
    out: list[OperatorLink] = []
    hosts: dict[str, tuple[OperatorLink, str]] = {}
    seen: set[str] = set()
    for entry in entries:
        if entry.address.lower() in seen:
            raise ConfigurationError(
                f"operator {entry.address} is listed twice: one key is one vote"
            )
        seen.add(entry.address.lower())
        token = load_token(entry.token_file, "")
        first = hosts.get(entry.url)
        if first is None:
            link = OperatorLink(entry)
            hosts[entry.url] = (link, token)
        elif first[1] != token:
            raise ConfigurationError(
                f"operators {first[0].address} and {entry.address} share the URL {entry.url} "
                "(one operator host) but not its bearer token"
            )
        else:
            link = OperatorLink(entry, first[0])
        out.append(link)
    return out


class OperatorFailure(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool, rpc_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.rpc_code = rpc_code

    @property
    def number(self) -> int:
        if self.rpc_code is not None:
            return self.rpc_code
        if self.code.startswith("http_") and self.code[5:].isdigit():
            return int(self.code[5:])
        return _ERROR_CODES.get(self.code, 500)


def operator_error(link: OperatorLink, failure: OperatorFailure, now: int) -> dict[str, Any]:
    """Newton's ``OperatorError``: numeric ``error_code``, ``timestamp`` as a string (RFC
    3339, UTC); ``error_type`` is the reference network's name for the code."""
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return {
        "operator_address": link.address,
        "operator_id": link.operator_id,
        "error_code": failure.number,
        "error_type": failure.code,
        "message": failure.message,
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "retryable": failure.retryable,
    }


def members(fields: dict[str, Any]) -> bytes:
    """``fields`` as JSON object members, without the braces, to be spliced into a request."""
    return json.dumps(fields, separators=(",", ":")).encode()[1:-1]


def _number(value: Any) -> str:
    return str(value) if type(value) is int else json.dumps(value)


def task_members(
    task: TaskInput,
    task_id: bytes,
    request_id: str,
    expires_at: int,
    approval: dict[str, Any] | None,
    intent_json: str | None = None,
) -> bytes:
    """``members`` of one task's fields (``task_id``, the ``request_id`` it derives from,
    ``chain_id``, ``intent``, ``expires_at``, ``approval`` if any), joined from values already
    at hand: the intent's JSON is the one the answer carries too (``intent_json``), used when
    it is ASCII, as ``members`` writes."""
    if intent_json is None or not intent_json.isascii():
        intent_json = json.dumps(task.intent.wire(), separators=(",", ":"))
    text = (
        f'"task_id":"0x{task_id.hex()}","request_id":{json.dumps(request_id)},'
        f'"chain_id":{_number(task.intent.chain_id)},'
        f'"intent":{intent_json},"expires_at":{_number(expires_at)}'
    )
    if approval is not None:  # each operator checks it before trusting approved
        text += ',"approval":' + json.dumps(approval, separators=(",", ":"))
    return text.encode()


_PREFIX = b'{"jsonrpc":"2.0","id":1,"method":"newt_evaluateAndSign","params":{'
_HOST_PREFIX = b'{"jsonrpc":"2.0","id":1,"method":"%s","params":{' % EVALUATE_FOR_KEYS.encode()


class Bodies:
    """One task's operator request, as bytes: the policy client's parts, encoded once at
    registration (``PolicyClient.request_*``), and the task's part, encoded once for every
    operator asked."""

    def __init__(self, client: PolicyClient, task: bytes, task_id: bytes) -> None:
        self._client = client
        self._task = task
        self.registration_hash = client.registration_hash
        self.task_id = "0x" + task_id.hex()  # as ``task_members`` writes it in the request
        self.batchable: bool | None = None  # whether it may go in a batch (``_batching``)
        self._lean: bytes | None = None

    @property
    def lean(self) -> bytes:
        """``params(False, False)``, joined once for every operator that holds both."""
        if self._lean is None:
            self._lean = self.params(False, False)
        return self._lean

    def params(self, with_policy: bool, with_registration: bool) -> bytes:
        """The ``newt_evaluateAndSign`` params' members, with the policy code and the
        registration in full or not."""
        client = self._client
        return (
            client.request_lean
            + b","
            + (client.request_registration if with_registration else client.request_reference)
            + (b"," + client.request_policy if with_policy else b"")
            + b","
            + self._task
        )

    def get(
        self, with_policy: bool, with_registration: bool, operators: Sequence[str] | None = None
    ) -> bytes:
        """The request, with the policy code and the registration in full or not; with
        ``operators``, a host's request naming the operators wanted."""
        part = (
            self.params(with_policy, with_registration)
            if with_policy or with_registration
            else self.lean
        )
        if operators is None:
            return _PREFIX + part + b"}}"
        return _HOST_PREFIX + part + named(operators) + b"}}"


def named(operators: Sequence[str]) -> bytes:
    """The ``operators`` member a host's request appends to a task's params."""
    return b',"operators":[' + ",".join(f'"{a}"' for a in operators).encode() + b"]"


def _remember(held: set[bytes], name: bytes) -> None:
    """Note that the operator holds ``name``, forgetting all once ``MAX_HELD`` are noted: an
    owner re-registering in a loop must not grow the gateway's memory per host without end
    (a forgotten name costs one resend in full, as after the operator's own eviction)."""
    if name not in held:
        if len(held) >= MAX_HELD:
            held.clear()
        held.add(name)


async def exchange(link: OperatorLink, body: bytes, timeout: float) -> dict[str, Any]:
    """POST ``body`` to the operator: its JSON-RPC reply object, or ``OperatorFailure`` (no
    answer in time, unreachable, an HTTP error, not a JSON object)."""
    try:
        status, content = await link.http.post(body, timeout)
    except TimeoutError:
        raise OperatorFailure(
            "timeout", "operator did not answer in time", retryable=True
        ) from None
    except HTTPError as exc:
        raise OperatorFailure(
            "unreachable", f"operator unreachable: {exc}", retryable=True
        ) from None
    if status != 200:
        raise OperatorFailure(
            f"http_{status}", f"operator answered HTTP {status}", retryable=status >= 500
        )
    try:
        reply = strict_loads(content)
    except ValueError:
        raise OperatorFailure(
            "invalid_response", "operator answered non-JSON", retryable=True
        ) from None
    if not isinstance(reply, dict):
        raise OperatorFailure(
            "invalid_response", "operator answer is not an object", retryable=True
        )
    return reply


def rpc_failure(error: Any) -> OperatorFailure:
    """An operator's JSON-RPC ``error`` object as an ``OperatorFailure`` (retryable only if the
    operator could not judge the policy now)."""
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message", "operator error") if isinstance(error, dict) else ""
    return OperatorFailure(
        f"rpc_{code}",
        str(message)[:500],
        retryable=code == PROBE_UNAVAILABLE,
        rpc_code=code if isinstance(code, int) else None,
    )


async def call_operator(
    link: OperatorLink,
    code_hash: bytes,
    bodies: Bodies,
    timeout: float,
    operators: Sequence[str] | None = None,
) -> Any:
    """The operator's ``result``: sent without the policy code and with the registration's
    hash only while it holds them, and once more with both in full if it asks for either
    (it restarted). ``operators``: a host's request."""
    reference = bodies.registration_hash
    with_policy = code_hash not in link.has_code
    with_registration = reference not in link.has_registration
    for _ in range(2):
        reply = await exchange(link, bodies.get(with_policy, with_registration, operators), timeout)
        error = reply.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            if code in (POLICY_REQUIRED, REGISTRATION_REQUIRED) and not (
                with_policy and with_registration
            ):
                link.has_code.discard(code_hash)  # the operator restarted: send both
                link.has_registration.discard(reference)
                with_policy = with_registration = True
                continue
            raise rpc_failure(error)
        _remember(link.has_code, code_hash)
        _remember(link.has_registration, reference)
        return reply.get("result")
    raise OperatorFailure(
        "invalid_response",
        "operator kept asking for the policy or the registration",
        retryable=False,
    )


def bind_answers(answers: Any, field: str, wanted: set[str], who: str) -> dict[str, Any]:
    """Each answer of a many-answer call by its ``field`` (lower-cased), refused whole
    (``OperatorFailure``) unless every one of ``wanted`` is answered exactly once and nothing
    else is: one answer for something not asked, or two for one, and none of them counts.
    A host's answers go by operator address, a batch's by task id."""
    if not isinstance(answers, list):
        raise OperatorFailure("invalid_response", f"{who} answer has no answers", retryable=False)
    bound: dict[str, Any] = {}
    for answer in answers:
        value = answer.get(field) if isinstance(answer, dict) else None
        key = value.lower() if isinstance(value, str) else ""
        if key in bound or key not in wanted:
            raise OperatorFailure(
                "invalid_response",
                f"{who} answered for a {field} it was not asked for, or twice for one",
                retryable=False,
            )
        bound[key] = answer
    if len(bound) != len(wanted):
        raise OperatorFailure(
            "invalid_response", f"{who} did not answer for every {field} asked", retryable=False
        )
    return bound


async def call_host(
    asked: Sequence[OperatorLink], code_hash: bytes, bodies: Bodies, timeout: float
) -> list[Any]:
    """One call to the host of ``asked`` (links of one host); each operator's ``result`` or
    its ``OperatorFailure``, in order (``host_answers``)."""
    addresses = [link.address for link in asked]
    return host_answers(asked, await call_operator(asked[0], code_hash, bodies, timeout, addresses))


def host_answers(asked: Sequence[OperatorLink], result: Any) -> list[Any]:
    """A host's ``result`` for one task as each operator's ``result`` or ``OperatorFailure``,
    in the order of ``asked``. The whole answer is refused (an ``OperatorFailure`` raised)
    unless it is exactly one answer per operator asked: one for an operator not asked, or two
    for one, and none of them counts. Each signature is still checked against its own
    operator by ``vote``."""
    answers = result.get("answers") if isinstance(result, dict) else None
    by_address = bind_answers(answers, "operator", {a.address.lower() for a in asked}, "host")
    out: list[Any] = []
    for link in asked:
        answer = by_address[link.address.lower()]
        error = answer.get("error")
        out.append(answer if error is None else rpc_failure(error))
    return out


async def deliver(links: Sequence[OperatorLink], clients: Sequence[PolicyClient]) -> list[str]:
    """Hand registrations to every operator now (they also travel with each task), so an
    operator holds the owner's before anyone can offer it another; once per host. Returns
    the operators that did not take them (they get them with their next task)."""
    if not clients:
        return []
    hosts: dict[int, list[OperatorLink]] = {}
    for link in links:
        hosts.setdefault(id(link.http), []).append(link)

    async def one(link: OperatorLink) -> str | None:
        for client in clients:
            envelope = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "agentguard_holdRegistration",
                "params": {"registration": client.registration_json},
            }
            try:
                status, content = await link.http.post(json.dumps(envelope).encode(), 5.0)
                reply = strict_loads(content) if status == 200 else None
            except (TimeoutError, HTTPError, ValueError):
                reply = None
            if not isinstance(reply, dict) or "result" not in reply:
                log.warning("operator did not take a registration", operator=link.address)
                return link.address
        return None

    missed = await asyncio.gather(*(one(keys[0]) for keys in hosts.values()))
    return [
        link.address
        for m, keys in zip(missed, hosts.values(), strict=True)
        if m is not None
        for link in keys
    ]
