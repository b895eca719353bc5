"""A hostile gateway: every answer it can give is an ``Attestation`` or an ``AgentGuardError``.

Before these changes, many of the answers below crashed the client with a dependency's or
Python's own exception (``AttributeError`` for a number as ``task_response``, ``TypeError`` for
non-integers in byte arrays, ``RecursionError`` for JSON nested 200,000 deep,
``httpx.DecodingError`` for a body labelled gzip that is not), which callers catching
``AgentGuardError`` do not catch, or accepted what they should not (``true`` as an expiry, a
64-byte signature, a redirect's target). Field-level cases use ``httpx.MockTransport``; the
transport-level ones (encodings, size, depth, slow drip, redirects) also run over a real
loopback HTTP server.
"""

from __future__ import annotations

import copy
import gzip
import json
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import (
    AgentGuardError,
    AsyncNewtonGateway,
    Attestation,
    AuthorizationError,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    NewtonGateway,
)
from agentguard._exceptions import MalformedAttestation
from agentguard._json import strict_loads

from .conftest import POLICY_CLIENT, bound
from .test_gateway_client import API_KEY, gateway, task_result

MiB = 1 << 20


# -- valid answers, and ways to serve them -----------------------------------------------------


def reference_result(operators: Any, intent: Any) -> dict[str, Any]:
    """What the reference network answers: Newton's fields plus the ECDSA ``attestation``."""
    result = task_result(operators.attest(intent, reasons=("ok",)))
    result["expiration"] = result["attestation"]["expires_at"]
    result["operator_errors"] = []
    return result


def newton_result(intent: Any) -> dict[str, Any]:
    """What Newton's gateway answers: no ``attestation``, byte fields as number arrays."""
    return {
        "task_id": "0x" + "ab" * 32,
        "status": "success",
        "error": None,
        "expiration": 2_000_000_000,
        "task_response": {
            "task_id": list(b"\xab" * 32),
            "policy_client": POLICY_CLIENT,
            "policy_id": "0x" + "cd" * 32,
            "intent": {**intent.wire(), "data": list(intent.data)},
            "evaluation_result": [0] * 31 + [1],
        },
        "aggregation_response": {"signers_agg_sig_g1": {"g1_point": {}}},
    }


def envelope(request: httpx.Request, result: Any) -> dict[str, Any]:
    """``result`` answering ``request``, its attestation for the task asked (``bound``)."""
    doc = json.loads(request.content)
    return {"jsonrpc": "2.0", "id": doc["id"], "result": bound(result, doc)}


def wire(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    """A response whose body is streamed like one off a socket (not pre-read by httpx)."""
    return httpx.Response(status, headers=headers or {}, stream=httpx.ByteStream(body))


def serve(answer: Callable[[httpx.Request], Any]) -> NewtonGateway:
    """A gateway whose result is ``answer(request)`` inside a correct JSON-RPC envelope."""
    return gateway(lambda r: wire(json.dumps(envelope(r, answer(r))).encode()), attempts=1)


def serve_raw(body: bytes, status: int = 200, **headers: str) -> NewtonGateway:
    return gateway(lambda r: wire(body, status, headers), attempts=1)


# -- every field the client reads, wrong in every way -----------------------------------------


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``path`` like ``attestation.signatures.0.signature``; ``value`` DELETE removes it."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return doc


DELETE = object()

REFERENCE_CASES: list[tuple[str, Any, str]] = [
    # (path, hostile value, what the message must mention)
    ("task_response", 5, "task_response"),
    ("task_response", [1, 2], "task_response"),
    ("task_response.evaluation_result", ["a"] * 32, "evaluation_result"),
    ("task_response.evaluation_result", [True] * 32, "evaluation_result"),
    ("task_response.evaluation_result", [256] + [0] * 31, "evaluation_result"),
    ("task_response.evaluation_result", [1.0] * 32, "evaluation_result"),
    ("task_response.evaluation_result", "0x123", "evaluation_result"),
    ("task_response.evaluation_result", {"a": 1}, "evaluation_result"),
    ("attestation", 5, "attestation"),
    ("attestation", "allow", "attestation"),
    ("attestation", [], "attestation"),
    ("attestation.task_id", ["x"] * 32, "task_id"),
    ("attestation.task_id", [None] * 32, "task_id"),
    ("attestation.task_id", [True] * 32, "task_id"),
    ("attestation.task_id", "0x" + "ab" * 31, "task_id"),
    ("attestation.task_id", "0x" + "a" * 63, "task_id"),
    ("attestation.task_id", 12345, "task_id"),
    ("attestation.task_id", DELETE, "task_id"),
    ("attestation.policy_id", None, "policy_id"),
    ("attestation.intent_hash", {"x": 1}, "intent_hash"),
    ("attestation.policy_client", 5, "policy_client"),
    ("attestation.policy_client", "0x1234", "policy_client"),
    ("attestation.policy_client", "0x" + POLICY_CLIENT[2:].swapcase(), "checksum"),
    ("attestation.expires_at", 1.9e9, "expires_at"),
    ("attestation.expires_at", True, "expires_at"),
    ("attestation.expires_at", "2000000000", "expires_at"),
    ("attestation.expires_at", -1, "expires_at"),
    ("attestation.expires_at", 1 << 64, "expires_at"),
    ("attestation.expires_at", 10**70, "expires_at"),
    ("attestation.expires_at", None, "expires_at"),
    ("attestation.expires_at", DELETE, "expires_at"),
    ("attestation.decision", 1, "decision"),
    ("attestation.decision", "maybe", "decision"),
    ("attestation.decision", None, "decision"),
    ("attestation.decision", DELETE, "decision"),
    ("attestation.scheme", "newton-bls", "ECDSA"),
    ("attestation.scheme", 7, "scheme"),
    ("attestation.signatures", {"a": 1}, "signatures"),
    ("attestation.signatures", "0x00", "signatures"),
    ("attestation.signatures", [[1, 2]], "signatures"),
    ("attestation.signatures", [{"operator": "0x" + "11" * 20, "signature": "0x00"}] * 300, "300"),
    ("attestation.signatures.0", "sig", "signatures"),
    ("attestation.signatures.0.signature", ["a"] * 65, "signature"),
    ("attestation.signatures.0.signature", [300] * 65, "signature"),
    ("attestation.signatures.0.signature", "0x" + "ab" * 64 + "a", "signature"),
    ("attestation.signatures.0.signature", "0x" + "ab" * 64, "65"),
    ("attestation.signatures.0.signature", "0x" + "ab" * 66, "65"),
    ("attestation.signatures.0.signature", 5, "signature"),
    ("attestation.signatures.0.signature", None, "signature"),
    ("attestation.signatures.0.operator", ["0x"], "operator"),
    ("attestation.signatures.0.operator", "0xZZ" + "1" * 38, "operator"),
    ("attestation.reasons", [1, 2], "reasons"),
    ("attestation.reasons", "no", "reasons"),
    ("task_id", 5, "task_id"),
    ("task_id", "0x12", "task_id"),
    ("task_id", "0x" + "00" * 32, "differs"),
    ("status", 1, "status"),
    ("status", None, "status"),
    ("status", "pending", "status"),
]


@pytest.mark.parametrize(("path", "value", "mentions"), REFERENCE_CASES)
def test_reference_answer_with_a_hostile_field(operators, intent, path, value, mentions):
    """Each case raised TypeError/AttributeError or was accepted before; now refused, typed."""
    result = _set(reference_result(operators, intent), path, value)
    with pytest.raises(GatewayProtocolError) as info:
        serve(lambda r: result).authorize(intent)
    assert mentions in str(info.value)


NEWTON_CASES: list[tuple[str, Any, str]] = [
    ("task_response", 5, "task_response"),
    ("task_response", None, "task_response"),
    ("task_response", DELETE, "task_response"),
    ("task_response.intent", 5, "intent"),
    ("task_response.intent", [1], "intent"),
    ("task_response.intent", DELETE, "intent"),
    ("task_response.intent.value", 1.5, "intent"),
    ("task_response.intent.value", [1], "intent"),
    ("task_response.intent.data", [True, 2], "intent"),
    ("task_response.intent.data", ["x"], "intent"),
    ("task_response.intent.chain_id", {"a": 1}, "intent"),
    ("task_response.intent.to", 5, "intent"),
    ("task_response.intent.function_signature", [255, 254], "intent"),
    ("task_response.evaluation_result", [None] * 32, "evaluation_result"),
    ("task_response.evaluation_result", DELETE, "evaluation_result"),
    ("task_response.policy_id", list(range(31)), "policy_id"),
    ("task_response.policy_id", 0, "policy_id"),
    ("task_response.policy_client", 5, "policy_client"),
    ("task_response.policy_client", "not an address", "policy_client"),
    ("task_id", None, "task_id"),
    ("task_id", "0xzz", "task_id"),
    ("expiration", True, "expiration"),
    ("expiration", 1.9e9, "expiration"),
    ("expiration", "2000000000", "expiration"),
    ("expiration", -5, "expiration"),
    ("expiration", DELETE, "expiration"),
]


@pytest.mark.parametrize(("path", "value", "mentions"), NEWTON_CASES)
def test_newton_answer_with_a_hostile_field(intent, path, value, mentions):
    """Newton-shaped answers (no ``attestation``): the same guarantee for the BLS path."""
    result = _set(newton_result(intent), path, value)
    if path == "task_id" and value is None:  # falls back to task_response.task_id: corrupt that
        result["task_response"]["task_id"] = "0x" + "ab" * 31
    with pytest.raises(GatewayProtocolError) as info:
        serve(lambda r: result).authorize(intent)
    assert mentions in str(info.value)


@pytest.mark.parametrize("result", [None, 5, "success", [], True, 1.5])
def test_result_of_the_wrong_type(intent, result):
    with pytest.raises(GatewayProtocolError, match="not an object"):
        serve(lambda r: result).authorize(intent)


def test_valid_answers_of_both_shapes_still_parse(operators, intent):
    """The refusals above are not a client that refuses everything."""
    assert serve(lambda r: reference_result(operators, intent)).authorize(intent).allowed
    bls = serve(lambda r: newton_result(intent)).authorize(intent)
    assert bls.scheme == "newton-bls" and bls.intent_hash == intent.intent_hash


def test_failed_task_with_a_hostile_error_field(intent):
    """``error`` as an object and ``operator_errors`` as junk: still a plain typed refusal."""
    result = {"status": "failed", "error": {"deep": [1]}, "operator_errors": [5, "x", {"a": 1}]}
    with pytest.raises(AuthorizationError, match="task failed") as info:
        serve(lambda r: result).authorize(intent)
    assert not isinstance(info.value, GatewayProtocolError)


@pytest.mark.parametrize(
    "result",
    [
        None,
        [],
        {"decision": "allow"},  # the old reference shape: not Newton's
        {"success": 1, "result": {"allow": True}},
        {"success": True, "result": {"allow": 1}},
        {"success": True, "result": {"allow": "true"}},
        {"success": True, "result": None},
        {"success": True, "result": {"allow": False, "decision": "allow"}},
        {"success": True, "result": {"allow": True, "decision": "deny"}},
        {"success": True, "result": {"allow": True, "reason": 5, "reasons": 5}},
        {"success": True, "result": {"allow": False, "reasons": [1, None, {"a": 1}, "kept"]}},
        {"success": False, "result": None, "error": {"deep": 1}, "details": None},
    ],
)
def test_simulation_answers_are_typed_or_plain_text(intent, result):
    """A dry run's answer too (Newton's ``{success, result: {allow, reason}, error,
    details}``): a ``Simulation`` holding only text, or a typed refusal; only a boolean
    ``allow: true`` reads as allow."""
    client = gateway(
        lambda r: wire(json.dumps(envelope(r, result)).encode()),
        attempts=1,
        policy_id="0x" + "cd" * 32,
    )
    try:
        simulation = client.simulate(intent)
    except AuthorizationError:
        return
    assert all(isinstance(r, str) for r in simulation.reasons)
    assert simulation.decision in ("allow", "deny", "approval_required")
    assert simulation.decision != "allow" or result["result"]["allow"] is True


@pytest.mark.parametrize("method", ["release", "commit"])
@pytest.mark.parametrize(
    "body", [b'{"jsonrpc":"2.0","result":' + b"[" * 100_000, b"\xff", b"[1]", b'{"id":1}']
)
def test_bookkeeping_calls_refuse_hostile_answers_typed(method, body):
    client = serve_raw(body)
    call = client.release if method == "release" else lambda t: client.commit(t, "executed")
    with pytest.raises(GatewayProtocolError):
        call("0x" + "ab" * 32)


# -- the JSON-RPC envelope and HTTP statuses that lie ----------------------------------------


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: {**e, "jsonrpc": "1.0"},
        lambda e: {**e, "jsonrpc": 2.0},
        lambda e: {k: v for k, v in e.items() if k != "jsonrpc"},
        lambda e: {**e, "id": "someone-else"},
        lambda e: {**e, "id": 1},
        lambda e: {**e, "id": None},
        lambda e: {k: v for k, v in e.items() if k != "result"},
        lambda e: {**e, "error": {"code": True, "message": "m"}},
        lambda e: {**e, "error": {"code": "-32615", "message": "m"}},
        lambda e: {**e, "error": {"code": 1.5}},
        lambda e: {**e, "error": 5},
        lambda e: {**e, "error": []},
    ],
)
def test_envelope_that_is_not_our_answer(operators, intent, mutate):
    def handler(request: httpx.Request) -> httpx.Response:
        doc = mutate(envelope(request, reference_result(operators, intent)))
        return wire(json.dumps(doc).encode())

    with pytest.raises(GatewayProtocolError):
        gateway(handler, attempts=1).authorize(intent)


def test_rpc_error_with_a_hostile_message_and_data_is_still_typed(intent):
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": -32602, "message": {"nested": [1]}, "data": [[[[1]]]]}
        return wire(json.dumps({**envelope(request, None), "error": error}).encode())

    with pytest.raises(GatewayRPCError, match="no message") as info:
        gateway(handler, attempts=1).authorize(intent)
    assert info.value.code == -32602


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, GatewayProtocolError),  # a success body under a 404
        (400, GatewayProtocolError),
        (418, GatewayProtocolError),
        (201, GatewayProtocolError),
        (204, GatewayProtocolError),
        (401, GatewayAuthError),  # a success body under a 401 is not a success
        (403, GatewayAuthError),
        (500, GatewayUnavailable),  # a success body under a 500: retried, never trusted
        (429, GatewayUnavailable),
    ],
)
def test_status_that_lies_about_the_body(operators, intent, status, error):
    def handler(request: httpx.Request) -> httpx.Response:
        return wire(
            json.dumps(envelope(request, reference_result(operators, intent))).encode(), status
        )

    with pytest.raises(error):
        gateway(handler, attempts=1).authorize(intent)


# -- the body itself: encoding, size, depth, text ---------------------------------------------


def _deep(depth: int) -> bytes:
    return b'{"jsonrpc":"2.0","result":' + b"[" * depth + b"]" * depth + b"}"


def _gzip_bomb() -> bytes:
    return gzip.compress(b" " * (8 * MiB), compresslevel=9)  # ~8 KiB that inflates to 8 MiB


BODY_CASES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("deep 200,000", _deep(200_000), {}, "nested deeper"),
    ("deep 500 (parses, too deep)", _deep(500), {}, "nested deeper"),
    ("not UTF-8", b'{"jsonrpc":"2.0","result":"\xff\xfe"}', {}, "UTF-8"),
    ("UTF-16", '{"jsonrpc":"2.0"}'.encode("utf-16"), {}, "UTF-8"),
    ("NaN", b'{"jsonrpc":"2.0","result":NaN}', {}, "NaN"),
    ("Infinity by overflow", b'{"jsonrpc":"2.0","result":1e999}', {}, "overflows"),
    ("huge integer", b'{"jsonrpc":"2.0","result":' + b"9" * 5000 + b"}", {}, "digits"),
    ("duplicate key", b'{"jsonrpc":"2.0","result":1,"result":2}', {}, "twice"),
    ("lone surrogate", b'{"jsonrpc":"2.0","result":"\\ud800"}', {}, "surrogate"),
    ("truncated", b'{"jsonrpc":"2.0","res', {}, "not JSON"),
    ("empty", b"", {}, "not JSON"),
    ("html", b"<html>502</html>", {}, "not JSON"),
    ("gzip that is not", b'{"jsonrpc":"2.0"}', {"content-encoding": "gzip"}, "gzip"),
    ("truncated gzip", gzip.compress(b'{"a":1}' * 50)[:-12], {"content-encoding": "gzip"}, "gzip"),
    ("gzip then junk", gzip.compress(b"{}") + b"junk", {"content-encoding": "gzip"}, "gzip"),
    ("deflate that is not", b"\x00\x01\x02", {"content-encoding": "deflate"}, "deflate"),
    ("gzip bomb", _gzip_bomb(), {"content-encoding": "gzip"}, "inflates past"),
    ("br", b"\x8b\x02\x80{}\x03", {"content-encoding": "br"}, "Content-Encoding"),
    ("two encodings", gzip.compress(b"{}"), {"content-encoding": "gzip, gzip"}, "Content-Encoding"),
    ("oversized", b" " * (MiB + 1), {}, "exceeds"),
    ("announces oversize", b"{}", {"content-length": str(10 * MiB)}, "announces"),
]


@pytest.mark.parametrize(
    ("body", "headers", "mentions"),
    [c[1:] for c in BODY_CASES],
    ids=[c[0] for c in BODY_CASES],
)
def test_hostile_body(intent, body, headers, mentions):
    """200,000-deep JSON raised RecursionError and bad gzip httpx.DecodingError before."""
    with pytest.raises(GatewayProtocolError) as info:
        serve_raw(body, **headers).authorize(intent)
    assert mentions in str(info.value)


def test_deep_json_with_a_raised_recursion_limit_does_not_crash_the_process(intent):
    """The C JSON decoder trusts the recursion limit; a host that raised it (hypothesis does)
    segfaulted on 100,000 unclosed brackets before the depth was checked ahead of parsing.
    Run in a child process, so a regression crashes the child, not the test run."""
    code = (
        "import sys; sys.setrecursionlimit(10**6)\n"
        "from agentguard._json import strict_loads\n"
        "try:\n"
        "    strict_loads(b'{\"result\":' + b'[' * 200_000)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr[-500:]
    assert "nested deeper than 32 levels" in child.stdout


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"a": "[" * 100}),  # brackets inside a string are not nesting
        json.dumps({"a": "\\", "b": [1]}),  # an escaped backslash ends at the quote after it
        json.dumps({"a": '\\"' + "[" * 40, "b": ["]"]}),  # an escaped quote does not end it
        "[" * 32 + "]" * 32,
    ],
)
def test_depth_check_reads_strings_as_json_does(text):
    assert strict_loads(text) == json.loads(text)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_an_honestly_compressed_answer_is_read(operators, intent, encoding):
    """We ask for identity, but a proxy that compresses anyway is tolerated (bounded)."""
    compress = gzip.compress if encoding == "gzip" else zlib.compress

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps(envelope(request, reference_result(operators, intent))).encode()
        return wire(compress(body), headers={"content-encoding": encoding})

    assert gateway(handler, attempts=1).authorize(intent).allowed


def test_the_client_asks_for_an_uncompressed_answer(operators, intent):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return wire(json.dumps(envelope(request, reference_result(operators, intent))).encode())

    gateway(handler).authorize(intent)
    assert seen[0].headers["accept-encoding"] == "identity"


# -- retries: a malformed 200 is final, and nothing changes the JSON-RPC id --------------------


def test_malformed_200_is_not_retried_into_a_second_task(operators, intent):
    """Retrying a parse failure would create a second task with a new id; it is final."""
    ids: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)["id"])
        result = _set(reference_result(operators, intent), "attestation.expires_at", True)
        return wire(json.dumps(envelope(request, result)).encode())

    with pytest.raises(GatewayProtocolError):
        gateway(handler, attempts=4).authorize(intent)
    assert len(ids) == 1


def test_retries_after_transport_trouble_reuse_the_id_and_end_typed(operators, intent):
    """A 503, a body that dies mid-way, then a malformed 200: one id throughout, then final."""
    ids: list[str] = []
    answers = iter(["503", "cut", "malformed", "never"])

    class Cut(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'{"jsonrpc":'
            raise httpx.RemoteProtocolError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)["id"])
        answer = next(answers)
        if answer == "503":
            return wire(b"", 503)
        if answer == "cut":
            return httpx.Response(200, stream=Cut())
        return wire(b'{"jsonrpc":"2.0","result":' + b"[" * 100_000)

    with pytest.raises(GatewayProtocolError):
        gateway(handler, attempts=4, dedupe=True).authorize(intent)
    assert len(ids) == 3 and len(set(ids)) == 1


# -- fuzz: mutate valid answers of both shapes -------------------------------------------------

_HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=70),
    st.sampled_from(["0x", "0x0", "0x" + "ab" * 32, "0x" + "ab" * 65, "allow", "deny", "success"]),
    st.lists(st.integers(min_value=-2, max_value=300), max_size=70),
    st.lists(st.booleans(), min_size=32, max_size=32),
    st.lists(st.none() | st.text(max_size=2) | st.floats(), min_size=32, max_size=32),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3),
    st.integers(min_value=1, max_value=30).map(lambda d: json.loads("[" * d + "]" * d)),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):  # the first few elements of long byte arrays
            yield from _paths(value, (*prefix, i))


def _mutate(doc: Any, data: st.DataObject) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        path = data.draw(st.sampled_from(sorted(_paths(doc), key=repr)), label="path")
        if not path:
            return data.draw(_HOSTILE, label="whole result")
        *parents, last = path
        node = doc
        for part in parents:
            node = node[part]
        if isinstance(node, dict) and data.draw(st.booleans(), label="delete"):
            del node[last]
        else:
            node[last] = data.draw(_HOSTILE, label="value")
    return doc


def _fuzz_gateway(result: Any, *, raw: bytes | None, status: int) -> Callable[..., Any]:
    def handler(request: httpx.Request) -> httpx.Response:
        body = raw if raw is not None else json.dumps(envelope(request, result)).encode()
        return wire(body, status)

    return handler


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _fuzz_case(operators: Any, intent: Any, data: st.DataObject) -> tuple[Any, bytes | None, int]:
    valid = data.draw(st.sampled_from(["reference", "newton"]), label="shape")
    result = reference_result(operators, intent) if valid == "reference" else newton_result(intent)
    result = _mutate(result, data)
    raw = None
    if data.draw(st.integers(min_value=0, max_value=3), label="mangle bytes") == 0:
        body = json.dumps({"jsonrpc": "2.0", "id": "x", "result": result}).encode()
        cut = data.draw(st.integers(min_value=0, max_value=len(body)), label="cut")
        junk = data.draw(st.binary(max_size=8), label="junk")
        raw = body[:cut] + junk + body[cut + len(junk) :]
    status = data.draw(st.sampled_from([200] * 8 + [400, 401, 404, 500]), label="status")
    return result, raw, status


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_answers_are_an_attestation_or_a_typed_error(operators, intent, data):
    result, raw, status = _fuzz_case(operators, intent, data)
    client = gateway(_fuzz_gateway(result, raw=raw, status=status), attempts=1)
    try:
        assert isinstance(client.authorize(intent), Attestation)
    except AgentGuardError:
        pass


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_fuzz_async_client_the_same(operators, intent, data):
    result, raw, status = _fuzz_case(operators, intent, data)

    async def handler(request: httpx.Request) -> httpx.Response:
        return _fuzz_gateway(result, raw=raw, status=status)(request)

    async with AsyncNewtonGateway(
        "http://127.0.0.1:1",
        policy_client=POLICY_CLIENT,
        api_key=API_KEY,
        attempts=1,
        transport=httpx.MockTransport(handler),
    ) as client:
        try:
            assert isinstance(await client.authorize(intent), Attestation)
        except AgentGuardError:
            pass


# -- Attestation.from_json / to_json ----------------------------------------------------------

_B32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(
    decision=st.sampled_from(["allow", "deny", "approval_required"]),
    task_id=_B32,
    policy_id=_B32,
    intent_hash=_B32,
    client=st.binary(min_size=20, max_size=20),
    expires_at=st.integers(min_value=0, max_value=(1 << 64) - 1),
    sigs=st.lists(
        st.tuples(st.binary(min_size=20, max_size=20), st.binary(min_size=65, max_size=65)),
        max_size=5,
    ),
    reasons=st.lists(st.text(max_size=30), max_size=4),
)
def test_attestation_json_round_trip(
    decision, task_id, policy_id, intent_hash, client, expires_at, sigs, reasons
):
    attestation = Attestation(
        decision=decision,
        task_id=task_id,
        policy_id=policy_id,
        policy_client="0x" + client.hex(),
        intent_hash=intent_hash,
        expires_at=expires_at,
        signatures=tuple({"operator": "0x" + a.hex(), "signature": s} for a, s in sigs),
        reasons=tuple(reasons),
    )
    doc = attestation.to_json()
    assert Attestation.from_json(doc) == attestation
    assert Attestation.from_json(json.loads(json.dumps(doc))) == attestation


def test_from_json_accepts_newton_byte_arrays(operators, intent):
    doc = operators.attest(intent).to_json()
    arrays = {
        **doc,
        "task_id": list(bytes.fromhex(doc["task_id"][2:])),
        "signatures": [
            {**s, "signature": list(bytes.fromhex(s["signature"][2:]))} for s in doc["signatures"]
        ],
    }
    assert Attestation.from_json(arrays) == Attestation.from_json(doc)


@pytest.mark.parametrize(
    "doc",
    [None, 5, "x", [], {}, {"decision": "allow"}],
)
def test_from_json_refuses_what_is_not_an_attestation(doc):
    with pytest.raises(MalformedAttestation):
        Attestation.from_json(doc)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", [object()] * 32),
        ("task_id", ["1"] * 32),
        ("policy_id", b"\x00" * 31),
        ("intent_hash", 3),
        ("policy_client", None),
        ("expires_at", 2.5),
        ("expires_at", False),
        ("expires_at", 1 << 64),
        ("decision", "yes"),
        ("signatures", ({"operator": "0x" + "11" * 20, "signature": [object()]},)),
        ("signatures", ({"operator": 5, "signature": b""},)),
        ("signatures", (5,)),
        ("reasons", (1,)),
        ("scheme", "bls"),
    ],
)
def test_hostile_values_in_the_constructor_are_typed(operators, intent, field, value):
    """``bytes([object()])`` inside a validator raised TypeError, which pydantic lets through."""
    fields = {
        "decision": "allow",
        "task_id": b"\x01" * 32,
        "policy_id": b"\x02" * 32,
        "policy_client": POLICY_CLIENT,
        "intent_hash": intent.intent_hash,
        "expires_at": 2_000_000_000,
        field: value,
    }
    with pytest.raises(MalformedAttestation, match=field):
        Attestation(**fields)
    with pytest.raises(MalformedAttestation, match=field):
        Attestation.model_validate(fields)


@pytest.mark.parametrize(
    "raw", [b"", b"[", b"\xff", b"[]", b'{"decision":"allow"}', b"[" * 100_000]
)
def test_model_validate_json_is_typed_too(raw):
    with pytest.raises(MalformedAttestation):
        Attestation.model_validate_json(raw)
