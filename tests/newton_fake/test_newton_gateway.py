"""``NewtonGateway`` / ``AsyncNewtonGateway`` against the fake Newton gateway (real sockets):
the request exactly as Newton documents it, and every documented answer read as Newton means it.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from agentguard import (
    AsyncNewtonGateway,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayUnavailable,
    NewtonGateway,
    PolicyEvaluationError,
    QuorumNotReached,
    TransactionIntent,
)
from agentguard._exceptions import (
    DataProviderError,
    IncompatiblePolicyVersion,
    OperatorNotRegistered,
    PolicyContractError,
)
from agentguard._intent_signature import IntentDomain, intent_signing_digest
from agentguard._json import strict_loads
from tests.newton_fake.gateway import POLICY_ID, REFERENCE_BLOCK, Answer, FakeNewton
from tests.unit.conftest import POLICY_CLIENT

API_KEY = "newton-test-api-key-0123456789"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def client(fake: FakeNewton, **options: Any) -> NewtonGateway:
    return NewtonGateway(fake.url, policy_client=POLICY_CLIENT, api_key=API_KEY, **options)


def test_the_request_is_what_newton_documents(newton: FakeNewton, intent: TransactionIntent):
    with client(newton) as gateway:
        gateway.authorize(intent, wasm_args={"k": 1})
    [body] = newton.calls("newt_createTask")
    assert body["jsonrpc"] == "2.0" and UUID.match(body["id"])
    params = body["params"]
    assert params == {
        "policy_client": POLICY_CLIENT,
        "intent": intent.wire(),
        "intent_signature": None,  # never "0x": Newton refuses it ("expected exactly 65 bytes")
        "quorum_number": "00",  # as the SDK strips it
        "quorum_threshold_percentage": None,  # the gateway's default
        "wasm_args": "0x"
        + json.dumps({"k": 1}, sort_keys=True, separators=(",", ":")).encode().hex(),
        "timeout": 5,
    }
    assert newton.headers[0]["authorization"] == f"Bearer {API_KEY}"


def test_newton_hosts_get_newtons_documented_30s_task_timeout():
    gateway = NewtonGateway("https://gateway.newton.xyz/rpc", policy_client=POLICY_CLIENT)
    assert gateway._cfg.task_timeout == 30
    local = NewtonGateway("http://127.0.0.1:9", policy_client=POLICY_CLIENT)
    assert local._cfg.task_timeout == 5


def test_the_intent_signature_is_newtons_eip712_intent(newton: FakeNewton, intent):
    """The signer gets the digest of Newton's typed data ``Intent(...)`` under the policy
    client's domain: eth-account's generic encoder gives the same digest and signer."""
    account = Account.from_key("0x" + "42" * 32)
    domain = IntentDomain("NewtonPolicyWallet", "1", intent.chain_id, POLICY_CLIENT)

    def sign(i: Any) -> bytes:
        return bytes(account.unsafe_sign_hash(intent_signing_digest(i, domain)).signature)

    with client(newton, intent_signer=sign) as gateway:
        gateway.authorize(intent)
    signature = newton.calls("newt_createTask")[0]["params"]["intent_signature"]
    assert len(bytes.fromhex(signature[2:])) == 65
    typed = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Intent": [
                    {"name": "from", "type": "address"},
                    {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "data", "type": "bytes"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "functionSignature", "type": "bytes"},
                ],
            },
            "primaryType": "Intent",
            "domain": {
                "name": "NewtonPolicyWallet",
                "version": "1",
                "chainId": intent.chain_id,
                "verifyingContract": POLICY_CLIENT,
            },
            "message": {
                "from": intent.from_,
                "to": intent.to,
                "value": intent.value,
                "data": intent.data,
                "chainId": intent.chain_id,
                "functionSignature": intent.function_signature.encode(),
            },
        }
    )
    assert Account.recover_message(typed, signature=signature) == account.address


@pytest.mark.parametrize("casing", ["camel", "snake"])
@pytest.mark.parametrize("encoding", ["bool", "string"])
@pytest.mark.parametrize("bytes_as", ["array", "hex"])
@pytest.mark.parametrize("decision", ["allow", "deny"])
def test_every_documented_result_form_reads_as_newton_means_it(
    newton: FakeNewton, intent, casing, encoding, bytes_as, decision
):
    newton.answer(Answer(decision=decision, casing=casing, encoding=encoding, bytes_as=bytes_as))
    with client(newton) as gateway:
        attestation = gateway.authorize(intent)
    assert attestation.scheme == "newton-bls" and attestation.decision == decision
    assert attestation.intent_hash == intent.intent_hash
    assert attestation.expires_at == REFERENCE_BLOCK + 100  # Newton's expiry: a block number
    assert attestation.policy_id.hex() == POLICY_ID[2:]
    # the whole result as received, for the BLS verifier to re-read
    assert attestation.newton_result is not None
    assert strict_loads(attestation.newton_result.encode())["expiration"] == REFERENCE_BLOCK + 100


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (-32615, PolicyEvaluationError),
        (-32616, PolicyContractError),
        (-32617, OperatorNotRegistered),
        (-32618, IncompatiblePolicyVersion),
        (-32619, IncompatiblePolicyVersion),
        (-32620, DataProviderError),
        (-32002, GatewayAuthError),
    ],
)
def test_each_documented_error_code_is_its_typed_error_sent_once(newton, intent, code, error):
    newton.answer(Answer(rpc_error=code))
    with client(newton) as gateway, pytest.raises(error):
        gateway.authorize(intent)
    assert len(newton.calls("newt_createTask")) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_http_auth_failures_are_gateway_auth_errors(newton, intent, status):
    newton.answer(Answer(http=status))
    with client(newton) as gateway, pytest.raises(GatewayAuthError):
        gateway.authorize(intent)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_429_and_5xx_at_newton_are_not_sent_again(newton, intent, status):
    """Newton documents no deduplication: the request reached it, so it may have made a task.
    Before: sent up to 4 times with the same id, each possibly a new task at Newton."""
    newton.answer(Answer(http=status), Answer())
    with client(newton) as gateway, pytest.raises(GatewayUnavailable, match="a task may exist"):
        gateway.authorize(intent)
    assert len(newton.calls("newt_createTask")) == 1


def test_truncated_bodies_are_typed_and_not_sent_again(newton, intent):
    newton.answer(Answer(truncated=True), Answer(truncated=True, cut_connection=True))
    with client(newton) as gateway:
        with pytest.raises(GatewayProtocolError):
            gateway.authorize(intent)
        with pytest.raises(GatewayUnavailable, match="a task may exist"):
            gateway.authorize(intent)
    assert len(newton.calls("newt_createTask")) == 2


def test_a_failed_task_is_quorum_not_reached_with_newtons_operator_errors(newton, intent):
    newton.answer(Answer(status="failed"))
    with client(newton) as gateway, pytest.raises(QuorumNotReached) as info:
        gateway.authorize(intent)
    [error] = info.value.operator_errors
    assert error["error_code"] == 1001 and isinstance(error["timestamp"], str)


def test_a_refused_connection_is_sent_again_it_never_arrived(intent):
    """Only what provably never reached the gateway is retried at Newton."""
    sent: list[str] = []
    first = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if first.pop() if first else False:
            raise httpx.ConnectError("connection refused")
        sent.append(json.loads(request.content)["id"])
        raise httpx.ReadTimeout("the answer was lost")

    gateway = NewtonGateway(
        "http://127.0.0.1:1", policy_client=POLICY_CLIENT, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(GatewayUnavailable, match="a task may exist"):
        gateway.authorize(intent)
    assert len(sent) == 1  # one refused (retried), one delivered whose answer was lost (not)


def test_simulate_sends_newtons_params_and_reads_its_result(newton, intent):
    newton.answer(Answer(simulate_allow=False))
    with client(newton, policy_id=POLICY_ID) as gateway:
        simulation = gateway.simulate(intent, wasm_args={"k": 1})
    assert simulation.decision == "deny" and simulation.reasons == ("denied",)
    [body] = newton.calls("newt_simulateTask")
    params = body["params"]
    assert set(params) == {"intent", "policy_task_data"}
    assert params["intent"] == intent.wire()
    data = params["policy_task_data"]
    assert data["policyId"] == POLICY_ID and data["policy"] == "0x"
    assert data["policyData"][0]["wasmArgs"].startswith("0x7b")


def test_simulate_without_a_policy_id_is_a_configuration_error(newton, intent):
    from agentguard import ConfigurationError

    with client(newton) as gateway, pytest.raises(ConfigurationError, match="policy id"):
        gateway.simulate(intent)
    assert newton.requests == []


def test_the_async_client_speaks_the_same(newton, intent):
    newton.answer(Answer(casing="snake", encoding="string"), Answer(http=502))

    async def run() -> Any:
        async with AsyncNewtonGateway(
            newton.url, policy_client=POLICY_CLIENT, api_key=API_KEY
        ) as gateway:
            first = await gateway.authorize(intent)
            with pytest.raises(GatewayUnavailable, match="a task may exist"):
                await gateway.authorize(intent)
            return first

    assert asyncio.run(run()).decision == "allow"
    assert [b["params"]["intent_signature"] for b in newton.calls("newt_createTask")] == [None] * 2


def test_the_policy_clients_domain_is_read_from_eip5267(intent):
    """``read_intent_domain`` decodes ``eip712Domain()`` as Newton's docs read it; a client
    without one is a typed error, never a guessed domain."""
    from eth_abi.abi import encode

    from agentguard._intent_signature import read_intent_domain

    answer = encode(
        ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"],
        [b"\x0f", "NewtonPolicyWallet", "1", 8453, POLICY_CLIENT, b"\x00" * 32, []],
    )

    class Eth:
        def __init__(self, raw: bytes | Exception) -> None:
            self.raw = raw

        def call(self, tx: Any) -> bytes:
            assert tx == {"to": POLICY_CLIENT, "data": "0x84b0196e"}
            if isinstance(self.raw, Exception):
                raise self.raw
            return self.raw

    class Web3:
        def __init__(self, raw: bytes | Exception) -> None:
            self.eth = Eth(raw)

    domain = read_intent_domain(Web3(answer), POLICY_CLIENT)  # type: ignore[arg-type]
    assert domain == IntentDomain("NewtonPolicyWallet", "1", 8453, POLICY_CLIENT)
    assert len(intent_signing_digest(intent, domain)) == 32
    for bad in (b"", b"\x00" * 5, ValueError("execution reverted")):
        with pytest.raises(GatewayProtocolError, match="eip712Domain"):
            read_intent_domain(Web3(bad), POLICY_CLIENT)  # type: ignore[arg-type]


def test_an_intent_signer_that_fails_or_returns_junk_sends_nothing(newton: FakeNewton, intent):
    from agentguard import ConfigurationError

    def broken(i: Any) -> bytes:
        raise RuntimeError("0xsecret-key-material")

    for signer in (broken, lambda i: b"\x01" * 64, lambda i: "0x"):
        with client(newton, intent_signer=signer) as gateway:
            with pytest.raises(ConfigurationError, match="intent_signer") as info:
                gateway.authorize(intent)
            assert "secret" not in str(info.value)
    assert newton.requests == []
    other_chain = IntentDomain("NewtonPolicyWallet", "1", 1, POLICY_CLIENT)
    with pytest.raises(ConfigurationError, match="chain"):
        intent_signing_digest(intent, other_chain)
