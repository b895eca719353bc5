"""Policy text with a lone surrogate (what JSON's ``"\\ud800"`` decodes to in Python) has no
UTF-8 form: every entry point refuses it with a typed error (``PolicyError``, the RPC's
``INVALID_PARAMS`` or ``PARSE_ERROR``), never an untyped ``UnicodeEncodeError`` from a hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import ConfigurationError
from agentguard._exceptions import AgentGuardError
from agentguard.network._rpc import INVALID_PARAMS, PARSE_ERROR, RPCError, parse_request
from agentguard.network.config import GatewaySettings, NetworkConfig
from agentguard.network.gateway import Gateway
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from agentguard.network.state import State, policy_from_material, policy_from_spec
from agentguard.policies import Policy, PolicyError

from .conftest import fresh_client
from .test_hostile_gateway import attackers_registration
from .test_policy_probe import hostile_task

LONE = "\ud800"
GOOD = Policy("fine", "t.allow", {"p.rego": "package t\nallow := true\n# surrogates\n"})


def _with_lone(where: str) -> dict[str, Any]:
    material: dict[str, Any] = {
        "name": "t",
        "entrypoint": "t.allow",
        "modules": {"p.rego": "package t\nallow := true\n"},
        "params_schema": {"type": "object"},
    }
    if where == "module":
        material["modules"]["p.rego"] += f"# {LONE}\n"
    elif where == "module name":
        material["modules"] = {f"p{LONE}.rego": "package t\nallow := true\n"}
    elif where == "entrypoint":
        material["entrypoint"] = f"t.allow{LONE}"
    elif where == "schema":
        material["params_schema"] = {"description": LONE}
    else:
        material[where] = LONE
    return material


WHERE = ["module", "module name", "entrypoint", "schema", "name", "description"]


@pytest.mark.parametrize("where", WHERE)
def test_a_policy_with_a_lone_surrogate_is_a_typed_error(where: str) -> None:
    material = _with_lone(where)
    with pytest.raises(PolicyError) as refused:
        Policy(
            name=material["name"],
            entrypoint=material["entrypoint"],
            modules=material["modules"],
            params_schema=material["params_schema"],
            description=material.get("description", ""),
        )
    assert isinstance(refused.value, AgentGuardError) and isinstance(refused.value, ValueError)
    assert "lone surrogate" in refused.value.message
    refused.value.message.encode()  # the message itself has a UTF-8 form
    with pytest.raises(ValueError, match="lone surrogate"):
        policy_from_material(material)
    with pytest.raises(ConfigurationError, match="lone surrogate"):
        policy_from_spec(material)


def test_a_schema_that_is_not_json_is_still_left_to_the_engine() -> None:
    """The check refuses only text without a UTF-8 form: what was accepted before still is."""
    policy = Policy("t", "t.allow", {"p.rego": "package t\n"}, {"x": float("nan")})
    assert len(policy.code_hash) == 32


def test_the_operator_refuses_it_as_invalid_params() -> None:
    operator = Operator(PrivateKey(), Registry(":memory:"))
    body = hostile_task(GOOD)
    body["policy"]["modules"]["p.rego"] += f"# {LONE}\n"
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(body)
    assert refused.value.code == INVALID_PARAMS and "lone surrogate" in refused.value.message


def test_the_gateway_refuses_its_registration_as_invalid_params(tmp_path: Path) -> None:
    state = State(tmp_path / "state.sqlite3")
    gateway = Gateway(NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=()), state)
    try:
        client = fresh_client()
        request = {
            "registration": attackers_registration(client, GOOD),
            "policy": _with_lone("module"),
        }
        with pytest.raises(RPCError) as refused:
            gateway.register(request)
        assert refused.value.code == INVALID_PARAMS and "lone surrogate" in refused.value.message
    finally:
        state.close()


def test_the_rpc_layer_lets_no_lone_surrogate_through() -> None:
    """JSON ``"\\ud800"`` is legal JSON that decodes to a lone surrogate: refused on parsing."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"policy": {"name": "x"}}}
    raw = json.dumps(body).replace('"x"', '"\\ud800"').encode()
    assert b"\\ud800" in raw and json.loads(raw)["params"]["policy"]["name"] == LONE
    with pytest.raises(RPCError) as refused:
        parse_request(raw)
    assert refused.value.code == PARSE_ERROR and "surrogate" in refused.value.message
