"""Fuzz: the reference network's parsers, in process (real gateway and operator objects, real
policy engine, an operator URL nobody listens on).

The network's typed refusal is a JSON-RPC error (``RPCError`` with a Newton code); anything
else reaching the app's catch-all is an internal error (-32603, logged as a bug). Between
gateway and operators, an operator's answer must become a vote or an ``_OperatorFailure``
and the HTTP head an ``HTTPError``. The API key and operator token must not be echoed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agentguard import TransactionIntent
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard.network._http import HTTPError, _parse_head
from agentguard.network._keys import api_key_digest
from agentguard.network._rpc import RPCError, parse_request
from agentguard.network.approvals import SignedApproval
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig, OperatorEntry
from agentguard.network.gateway import Gateway
from agentguard.network.gateway._fanout import vote
from agentguard.network.gateway._operators import Bodies as _Bodies
from agentguard.network.gateway._operators import OperatorFailure as _OperatorFailure
from agentguard.network.gateway._operators import call_operator
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import State, TaskRecord, policy_material
from agentguard.policies import load, policy_id

from ..task_ids import bind
from .hostile import budget, json_text, mutated, outcome, wire_values

API_KEY = "agk_fuzz_network_3c9d0e1f2a4b6c8d"
TOKEN = "optok_fuzz_5e6f7a8b9c0d1e2f"
OWNER = PrivateKey(b"\x07" * 32)
OPERATOR_KEY = PrivateKey(b"\x09" * 32)
CLIENT = operator_address(OWNER)  # a self-owned (EOA) policy client
AGENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TOKEN_ADDRESS = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SHOP = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
POLICY = load("agent_spend")
PARAMS = {
    "max_per_tx": {TOKEN_ADDRESS.lower(): "5000000"},
    "allowed_recipients": [SHOP],
    "window_caps": [
        {"asset": TOKEN_ADDRESS.lower(), "window_seconds": 86400, "max_amount": "12000000"}
    ],
}
INTENT = TransactionIntent.erc20_transfer(
    sender=AGENT, token=TOKEN_ADDRESS, recipient=SHOP, amount=1_000_000, chain_id=8453
)
REGISTRATION = Registration.sign(
    OWNER,
    policy_client=CLIENT,
    policy=POLICY,
    params=PARAMS,
    expire_after=300,
    chain_id=8453,
    version=1,
).to_json()
SECRETS = [API_KEY, TOKEN, OWNER.secret, OPERATOR_KEY.secret]


# -- the HTTP hop gateway → operator ---------------------------------------------------------

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n"


@budget(200)
@given(
    st.one_of(
        st.binary(max_size=200).map(lambda b: b + b"\r\n\r\n"),
        st.tuples(st.integers(0, len(_HEAD) - 1), st.binary(max_size=12)).map(
            lambda p: _HEAD[: p[0]] + p[1] + _HEAD[p[0] :]
        ),
        st.sampled_from(
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
                b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\nContent-Length: 1\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            ]
        ),
    )
)
def test_operator_response_heads(head: bytes) -> None:
    outcome(_parse_head, head, allowed=HTTPError)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\nContent-Length: 1\r\n\r\n",
    ],
)
def test_a_huge_content_length_is_an_http_error(head: bytes) -> None:
    """Found by ``test_operator_response_heads``. Harmless today (the gateway turns any
    exception from one operator into an ``internal`` operator error) but outside
    ``KeepAliveClient.post``'s contract: ``HTTPError`` or ``TimeoutError``. Raised
    ``ValueError`` before the digit counts were bounded."""
    with pytest.raises(HTTPError):
        _parse_head(head)


def test_two_different_content_lengths_are_refused() -> None:
    """Before: the last one won, so an operator's keep-alive connection could be read with a
    length the sender did not mean (what is left is taken as the next answer's start)."""
    with pytest.raises(HTTPError, match="two different"):
        _parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert _parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n")[1] == 2


class _Stub:
    """An operator link whose HTTP client answers what the test says."""

    def __init__(self, status: int, content: bytes) -> None:
        self.has_code: set[bytes] = set()
        self.has_registration: set[bytes] = set()
        self.answer = (status, content)
        self.address_bytes = bytes.fromhex(operator_address(OPERATOR_KEY)[2:])
        self.http = self

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        return self.answer


_DIGESTS = {
    (allow, tier): attestation_digest(
        chain_id=8453,
        policy_client=bytes.fromhex(CLIENT[2:]),
        task_id=b"\x11" * 32,
        policy_id=b"\x22" * 32,
        intent_hash=INTENT.intent_hash,
        allow=allow,
        expires_at=2_000_000_000,
        tier=tier,
    )
    for allow in (True, False)
    for tier in range(8)  # every known trust tier: a mutated tier still finds its digest
}
REPLY = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "decision": "allow",
        "intent_hash": "0x" + INTENT.intent_hash.hex(),
        "policy_id": "0x" + "22" * 32,
        "tier": 0,
        "reasons": ["within the cap"],
        "signature": "0x" + sign_attestation(OPERATOR_KEY, _DIGESTS[True, 0]).hex(),
    },
}


_CLIENT_PARTS: Any = SimpleNamespace(
    request_lean=b"",
    request_registration=b"",
    request_reference=b"",
    request_policy=b"",
    registration_hash=b"",
)


def _vote_on(status: int, content: bytes) -> Any:
    link = _Stub(status, content)
    reply = asyncio.run(call_operator(link, b"code", _Bodies(_CLIENT_PARTS, b"", bytes(32)), 5.0))  # type: ignore[arg-type]
    return vote(
        link,  # type: ignore[arg-type]
        reply,
        intent_hash_hex="0x" + INTENT.intent_hash.hex(),
        policy_id_hex="0x" + "22" * 32,
        digests=_DIGESTS,
    )


def test_the_unmutated_reply_is_a_vote() -> None:
    assert _vote_on(200, json.dumps(REPLY).encode())[0] == ("allow", 0)


@budget(250)
@given(
    st.sampled_from([200, 200, 200, 404, 500]),
    st.one_of(
        mutated(REPLY, max_edits=2).map(lambda d: json.dumps(d).encode()),
        json_text(REPLY).filter(lambda raw: raw.count(b"{") + raw.count(b"[") < 500),
        st.binary(max_size=100),
    ),
)
def test_operator_replies(status: int, content: bytes) -> None:
    outcome(_vote_on, status, content, allowed=_OperatorFailure)


def test_one_operator_cannot_crash_the_gateway_with_deep_json() -> None:
    """Run in a child process, which the crash killed (SIGSEGV) while the gateway used
    ``json.loads``; now ``strict_loads`` refuses the depth first: ``_OperatorFailure``."""
    code = (
        "import asyncio, web3\n"
        "from tests.fuzz.test_fuzz_network import _vote_on\n"
        "from agentguard.network.gateway._operators import OperatorFailure as _OperatorFailure\n"
        "try:\n"
        "    _vote_on(200, b'[' * 1_000_000)\n"
        "except _OperatorFailure:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT, timeout=120
    )
    assert done.returncode == 0 and "refused" in done.stdout, (done.returncode, done.stderr[-300:])


_ROOT = Path(__file__).resolve().parents[2]


# -- JSON-RPC requests into the gateway and the operators -------------------------------------


ENVELOPE = {
    "jsonrpc": "2.0",
    "id": "5b0e8c8e-2a51-4d0f-9a55-1c1f6b0b0c01",
    "method": "newt_createTask",
    "params": {
        "policy_client": CLIENT,
        "intent": INTENT.wire(),
        "intent_signature": "0x",
        "quorum_number": "0x00",
        "quorum_threshold_percentage": 66,
        "wasm_args": "0x",
        "timeout": 1,
    },
}


@budget(250)
@given(
    st.one_of(
        mutated(ENVELOPE).map(lambda d: json.dumps(d).encode()),
        json_text(ENVELOPE),
        st.binary(max_size=200),
    )
)
def test_request_bodies(body: bytes) -> None:
    outcome(parse_request, body, allowed=RPCError, secrets=SECRETS)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "operator.token"
        token.write_text(TOKEN)
        config = NetworkConfig(
            gateway=GatewaySettings(timeout=1.0),
            operators=(
                OperatorEntry(
                    address=operator_address(OPERATOR_KEY),
                    url="http://127.0.0.1:9/rpc",  # discard port: nobody answers
                    token_file=str(token),
                ),
            ),
            api_keys=(ApiKeyEntry(sha256=api_key_digest(API_KEY), admin=True),),
        )
        state = State(Path(tmp) / "state.sqlite3")
        gw = Gateway(config, state)
        gw.register({"registration": REGISTRATION, "policy": "agent_spend"})
        yield gw
        asyncio.run(gw.close())
        state.close()


_METHODS = [
    "newt_createTask",
    "newt_simulateTask",
    "agentguard_releaseTask",
    "agentguard_commitTask",
    "agentguard_approve",
    "agentguard_reject",
    "agentguard_listApprovals",
    "agentguard_approvalStatus",
    "agentguard_registerPolicyClient",
]
_PARAMS = {
    "newt_createTask": ENVELOPE["params"],
    "newt_simulateTask": ENVELOPE["params"],
    "agentguard_releaseTask": {"task_id": "0x" + "11" * 32},
    "agentguard_commitTask": {"task_id": "0x" + "11" * 32, "outcome": "landed"},
    "agentguard_approve": {
        "approval": SignedApproval.sign(
            OWNER,
            policy_client=CLIENT,
            intent_hash="0x" + INTENT.intent_hash.hex(),
            chain_id=8453,
            expires_at=2_000_000_000,
        ).to_json()
    },
    "agentguard_reject": {"policy_client": CLIENT, "intent_hash": "0x" + "ab" * 32},
    "agentguard_listApprovals": {"status": "pending", "policy_client": CLIENT},
    "agentguard_approvalStatus": {"policy_client": CLIENT, "intent_hash": "0x" + "ab" * 32},
    "agentguard_registerPolicyClient": {"registration": REGISTRATION, "policy": "agent_spend"},
}


@st.composite
def _calls(draw: Any) -> tuple[Any, str, Any]:
    method = draw(st.sampled_from(_METHODS))
    params = draw(mutated(_PARAMS[method], max_edits=2))
    rpc_id = draw(st.one_of(st.just(ENVELOPE["id"]), wire_values))
    return rpc_id, method, params


@budget(200)
@given(_calls())
def test_gateway_methods(gateway: Gateway, call: tuple[Any, str, Any]) -> None:
    """What the app's handler runs for an authenticated request (admin key: every method)."""
    rpc_id, method, params = call
    if not isinstance(params, dict):
        return  # read_request refuses non-objects before dispatch
    key = gateway.authenticate(f"Bearer {API_KEY}")
    outcome(
        lambda: asyncio.run(gateway.dispatch(key, rpc_id, method, params)),
        allowed=RPCError,
        secrets=SECRETS,
    )


def _operator_request() -> dict[str, Any]:
    """An honest gateway's request (its task id derived from a request id, ``bind``)."""
    now = int(time.time())
    spend = INTENT.spend
    body = {
        "policy_client": CLIENT,
        "chain_id": 8453,
        "intent": INTENT.wire(),
        "policy_code_hash": "0x" + POLICY.code_hash.hex(),
        "params": PARAMS,
        "expire_after": 300,
        "expires_at": now + 300,
        "registration": REGISTRATION,
        "policy": policy_material(POLICY),
        "wasm": {
            "now": now,
            "intent_hash": "0x" + INTENT.intent_hash.hex(),
            "approved": False,
            "spend": spend.wasm(),
            "history": {
                w: {"count": 0, "spent": {}, "projected": {spend.asset.lower(): str(spend.amount)}}
                for w in ("60", "3600", "86400")
            },
        },
    }
    return bind(body, request_id="fuzz")


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator(OPERATOR_KEY, Registry(":memory:"))


def test_the_unmutated_operator_request_is_signed(operator: Operator) -> None:
    answer = operator.evaluate_and_sign(_operator_request())
    assert answer["decision"] == "allow"
    assert answer["policy_id"] == "0x" + policy_id(CLIENT, POLICY, PARAMS, 300).hex()


def _lean_request(_: object) -> Any:
    """A fresh request (its expiry is checked against the clock) without the policy code,
    which is not mutated (it would only recompile Rego)."""
    return mutated({k: v for k, v in _operator_request().items() if k != "policy"}, max_edits=2)


@budget(200)
@given(st.just(None).flatmap(_lean_request), st.booleans())
def test_operator_requests(operator: Operator, request: Any, rebind: bool) -> None:
    """What the gateway (or anyone holding its token) asks an operator to sign. ``rebind``:
    the mutated request under the task id its parts derive, as a gateway would send it, so
    the mutation reaches the checks and the policy behind the task id's."""
    if not isinstance(request, dict):
        return
    request["policy"] = policy_material(POLICY)
    request.setdefault("task_id", "0x" + "33" * 32)
    if rebind:
        bind(request)  # its request id, if a mutation left one
    outcome(operator.evaluate_and_sign, request, allowed=RPCError, secrets=SECRETS)


def test_a_failing_chain_rpc_does_not_put_its_url_in_the_gateway_log(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage check's real failure (``ChainUsageCheck`` against a node that is down),
    raised where the sweeper calls it; the gateway's log must not carry the provider key."""
    import io
    import logging

    from agentguard._logging import configure_logging
    from agentguard.network.gateway import _core as gateway_module
    from agentguard.network.usage import ChainUsageCheck

    provider_key = "provkey_5f2a9c7e1b3d4a6c"
    check = ChainUsageCheck(f"http://127.0.0.1:9/v2/{provider_key}")

    def sweeping(*args: Any, **kwargs: Any) -> Generator[TaskRecord, Any, int]:
        yield TaskRecord("0x" + "ee" * 32, CLIENT, CLIENT, CLIENT, 1, 0, 0, "attested")
        return 0  # the check raised requests' ConnectionError naming the URL

    monkeypatch.setattr(gateway.state, "sweeping", sweeping)
    monkeypatch.setattr(gateway_module, "SWEEP_INTERVAL", 0.01)
    monkeypatch.setattr(gateway, "usage_check", check)
    configure_logging("DEBUG", json=True)
    logger = logging.getLogger("agentguard")
    sink = io.StringIO()
    logger.handlers[0].setStream(sink)  # type: ignore[attr-defined]
    try:

        async def one_sweep() -> None:
            task = asyncio.ensure_future(gateway.sweep_forever())
            await asyncio.sleep(0.5)
            task.cancel()

        asyncio.run(one_sweep())
    finally:
        logger.handlers[:] = [logging.NullHandler()]
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    assert "usage check failed" in sink.getvalue()
    assert provider_key not in sink.getvalue()
