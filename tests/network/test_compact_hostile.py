"""A man in the middle of a compact client (``agentguard_compact``) and the real reference
network: whatever it does with the answers (another task's, a replay, a relabelled decision or
tier, the whole form to a compact request, a Newton-shaped one, a stripped one) the client
either gets the operators' own verdict on its own intent, once, or refuses. Verification reads the signed
attestation only; what the compact form leaves out never decided anything."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agentguard import Guard, PolicyDenied
from agentguard._exceptions import (
    GatewayProtocolError,
    UnknownOperator,
    VerificationError,
)
from agentguard.network.gateway._results import COMPACT_PARAM
from agentguard.network.launcher import ReferenceNetwork

from .conftest import POLICY_IDS, UNIT, fresh_agent, transfer

Tamper = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


class Middle:
    """Forwards each call to the gateway. For a task it also asks for the same intent in the
    whole form (another id: another task, the network's allow for the same intent), and
    ``tamper(compact, whole)`` gives what the client gets; both are kept (``compact``,
    ``whole``) as they came."""

    def __init__(self, network: ReferenceNetwork) -> None:
        self.url = network.rpc_url
        self.http = httpx.Client(
            timeout=30.0, headers={"authorization": f"Bearer {network.api_key}"}
        )
        self.tamper: Tamper | None = None
        self.compact: list[dict[str, Any]] = []
        self.whole: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        answer = self.http.post(self.url, json=body).json()
        if body["method"] == "newt_createTask" and "result" in answer:
            assert body["params"].get(COMPACT_PARAM) is True  # the client asked for it
            plain = {k: v for k, v in body["params"].items() if k != COMPACT_PARAM}
            whole = self.http.post(
                self.url, json={**body, "id": body["id"] + "-whole", "params": plain}
            ).json()["result"]
            result = answer["result"]
            if self.tamper is not None:
                answer["result"] = self.tamper(copy.deepcopy(result), copy.deepcopy(whole))
            self.compact.append(result)
            self.whole.append(whole)
        return httpx.Response(200, json=answer)


@pytest.fixture
def middle(network: ReferenceNetwork) -> Middle:
    return Middle(network)


@pytest.fixture
def guard(network: ReferenceNetwork, client: str, middle: Middle) -> Any:
    with Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        policy_id=POLICY_IDS[client],
        api_key=network.api_key,
        transport=httpx.MockTransport(middle),
        compact=True,
        attempts=1,
    ) as g:
        yield g


def test_an_untouched_compact_answer_verifies(guard: Guard, middle: Middle) -> None:
    assert guard.authorize(transfer(fresh_agent())).assurance == "quorum-ecdsa"
    assert "task" not in middle.compact[0] and "task" in middle.whole[0]


def _refused(guard: Guard, intent: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        guard.authorize(intent)


def test_another_tasks_answer_is_refused(guard: Guard, middle: Middle) -> None:
    agent = fresh_agent()
    guard.authorize(transfer(agent, UNIT))
    one = middle.compact[-1], middle.whole[-1]  # the network's allows for 1 unit
    for form in one:  # each answered for 9 units: not the task asked for (its id derives from
        middle.tamper = lambda compact, whole, form=form: form  # another intent and request)
        _refused(guard, transfer(agent, 9 * UNIT), GatewayProtocolError)


def test_the_same_intents_answer_again_is_a_replay(guard: Guard, middle: Middle) -> None:
    intent = transfer(fresh_agent())
    guard.authorize(intent)
    middle.tamper = lambda compact, whole: middle.compact[-1]
    _refused(guard, intent, GatewayProtocolError)  # another request's task, before the replay


def test_the_whole_form_of_a_twin_request_is_not_the_task_asked(
    guard: Guard, middle: Middle
) -> None:
    """A downgrade: the compact request answered in the whole form of a twin request (the same
    intent, asked under another id). Before the task id bound the request id it verified, once;
    now it is another request's task, refused before verification, as is that form again. The
    compact answer of this very request still verifies."""
    intent = transfer(fresh_agent())
    middle.tamper = lambda compact, whole: whole
    _refused(guard, intent, GatewayProtocolError)
    first_whole = middle.whole[-1]
    middle.tamper = lambda compact, whole: first_whole
    _refused(guard, intent, GatewayProtocolError)
    middle.tamper = None
    assert guard.authorize(intent).attestation.task_id.hex() == middle.compact[-1]["task_id"][2:]


def _relabelled(decision: str) -> Tamper:
    def tamper(result: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
        result["attestation"]["decision"] = decision
        word = [0] * 31 + [1 if decision == "allow" else 0]
        result["task_response"]["evaluation_result"] = word
        return result

    return tamper


def test_a_deny_relabelled_allow_is_refused(guard: Guard, middle: Middle) -> None:
    agent = fresh_agent()
    with pytest.raises(PolicyDenied):
        guard.authorize(transfer(agent, 50 * UNIT))  # over max_per_tx: the operators deny
    middle.tamper = _relabelled("allow")
    _refused(guard, transfer(agent, 50 * UNIT), UnknownOperator)


def test_a_relabelled_tier_breaks_every_signature(guard: Guard, middle: Middle) -> None:
    def tamper(result: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
        result["attestation"]["tier"] = 1
        return result

    middle.tamper = tamper
    _refused(guard, transfer(fresh_agent()), UnknownOperator)


def test_a_newton_shaped_answer_is_not_read_as_the_reference_networks(
    guard: Guard, middle: Middle
) -> None:
    """The whole form without its ECDSA attestation is a Newton (BLS) answer: this guard's
    verifier, an ECDSA quorum, refuses it; the compact form without it is no answer at all."""

    def bls(result: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
        whole["attestation"] = None
        return whole

    middle.tamper = bls
    _refused(guard, transfer(fresh_agent()), VerificationError)

    def bare(result: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
        result["attestation"] = None
        return result

    middle.tamper = bare
    _refused(guard, transfer(fresh_agent()), GatewayProtocolError)


def test_a_stripped_compact_answer_is_refused(guard: Guard, middle: Middle) -> None:
    """Only the signed attestation, no status: not read as a success."""

    def stripped(result: dict[str, Any], whole: dict[str, Any]) -> dict[str, Any]:
        return {"attestation": result["attestation"]}

    middle.tamper = stripped
    _refused(guard, transfer(fresh_agent()), GatewayProtocolError)
