"""For a bundled policy ``data.wasm.history`` holds exactly the windows the params name (no
default 3600/86400 any more): the gateway sends only those, and no bundled policy decides
differently for it, which the golden cases show by adding the old default windows with extreme
totals (real engine). A custom policy keeps the two defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Signer
from agentguard.challenge._history import Candidate, compare, windows_of
from agentguard.network._rpc import RPCError
from agentguard.network.config import ApiKeyEntry, GatewaySettings
from agentguard.network.gateway._registry import MAX_WINDOW, Clients, _windows, history_windows
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.registration import Registration
from agentguard.network.state import PolicyClientRecord, State, open_state
from agentguard.policies import Policy, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from tests.policies import golden

from .conftest import (
    NETCHECK,
    PAYEE,
    RPC,
    TOKEN,
    decision,
    fresh_agent,
    fresh_client,
    params,
    transfer,
)

OLD_DEFAULTS = ("3600", "86400")


def test_windows_are_every_window_seconds_in_the_params_and_no_other() -> None:
    assert _windows({"max_per_tx": {"0xa": "1"}}) == ()
    assert _windows(params()) == (60, 86400)
    nested = {"a": [{"b": {"window_seconds": 7}}, {"window_seconds": 7}], "window_seconds": 5}
    assert _windows(nested) == (5, 7)
    refused = {"window_seconds": 0, "x": [{"window_seconds": True}, {"window_seconds": "60"}]}
    assert _windows(refused) == ()


def _with_old_defaults(wasm: dict[str, Any], filler: dict[str, Any]) -> dict[str, Any]:
    history = wasm.get("history", {})
    return {**wasm, "history": {**{w: filler for w in OLD_DEFAULTS}, **history}}


def _answer(engine: PolicyEngine, *args: Any, **kwargs: Any) -> Any:
    try:
        result = engine.evaluate(*args, **kwargs)
    except PolicyEngineError as exc:
        return ("error", str(exc))
    return result


FILLERS = [
    {"count": 10**9, "spent": {}, "projected": {}},  # everything exhausted, no asset
    {"count": 0, "spent": {}, "projected": {a: golden.HUGE for a in golden.ASSETS}},
    {"count": "x", "projected": 5},  # malformed
]


def test_no_bundled_policy_reads_a_window_its_params_do_not_name() -> None:
    """Every golden case whose params name neither 3600 nor 86400 (the history restricted to
    the params' windows, as the gateway now sends it) answers the same with the old default
    windows added, whatever they hold (one compile per params: every case of a config)."""
    engine = PolicyEngine(max_bundles=8)
    policies = {name: load(name) for name in golden.POLICIES}
    compared = 0
    for name, schema, conf, document, wasm in golden.cases():
        named = {str(w) for w in _windows(conf)}
        if named & set(OLD_DEFAULTS) or not schema:
            continue
        history = wasm.get("history")
        sent = dict(wasm)
        if isinstance(history, dict):
            sent["history"] = {k: v for k, v in history.items() if k in named}
        policy = policies[name]
        now = _answer(engine, policy, input=document, params=conf, wasm=sent)
        for filler in FILLERS:
            old = _with_old_defaults(sent, filler)
            assert _answer(engine, policy, input=document, params=conf, wasm=old) == now, (
                name,
                conf,
                sent,
                filler,
            )
        compared += 1
    assert compared > 1000


def _history_seen(result: dict[str, Any]) -> dict[str, Any]:
    data = result["task_response"]["policy_task_data"]["policyData"][0]["data"]
    seen: dict[str, Any] = json.loads(bytes.fromhex(data[2:]))["history"]
    return seen


def test_the_gateway_sends_only_the_params_windows(network: ReferenceNetwork) -> None:
    rpc = RPC(network, network.api_key)
    agent = fresh_agent()
    windowed = fresh_client()
    network.register_policy_client(windowed, "agent_spend", {**_spend_params(), **_caps()})
    bare = fresh_client()
    network.register_policy_client(bare, "agent_spend", _spend_params())
    first = rpc.create(windowed, transfer(agent))
    assert decision(first) == "allow"
    assert sorted(_history_seen(first)) == ["120"]
    second = rpc.create(windowed, transfer(agent))
    assert _history_seen(second)["120"]["count"] == 1  # the first one counts
    plain = rpc.create(bare, transfer(agent))
    assert decision(plain) == "allow"
    assert _history_seen(plain) == {}


def _spend_params() -> dict[str, Any]:
    return {"max_per_tx": {TOKEN.lower(): str(10**12)}, "allowed_recipients": [PAYEE]}


def _caps() -> dict[str, Any]:
    return {
        "window_caps": [{"asset": TOKEN.lower(), "window_seconds": 120, "max_amount": "10" * 9}]
    }


def test_the_challenger_compares_a_history_without_windows() -> None:
    """A client whose params name no window has an empty history; the challenger's bound
    over no window finds nothing under- or over-reported (and does not fail)."""
    earlier = Candidate(
        task_id="0x" + "01" * 32,
        policy_client="0x" + "0c" * 20,
        agent="0x" + "0a" * 20,
        asset=TOKEN.lower(),
        amount=5,
        now=1_000,
        expires_at=1_300,
        intent={},
        attestation={},
        status="attested",
    )
    check = compare({}, [earlier], task_id="0x" + "02" * 32, at=1_010, windows=[])
    assert (check.windows, check.under, check.over, check.bound) == ((), (), (), {})
    with_window = compare({}, [earlier], task_id="0x" + "02" * 32, at=1_010, windows=[60])
    assert with_window.under == (60,)  # the same record with a window: the bound counts it


def test_a_custom_policy_keeps_the_windows_earlier_gateways_always_sent(
    network: ReferenceNetwork,
) -> None:
    """A policy that is not bundled may read 3600/86400 without naming them (and, written like
    ``spend_cap``, would allow on a missing value): it still gets both, beside its own."""
    rpc = RPC(network, network.api_key)
    custom = fresh_client()
    configured = {**params(), **_caps()}
    network.register_policy_client(custom, NETCHECK, configured)
    seen = _history_seen(rpc.create(custom, transfer(fresh_agent())))
    named = {str(w) for w in _windows(configured)}
    assert "3600" not in named and "120" in named
    assert set(seen) == named | set(OLD_DEFAULTS)
    bundled_client = fresh_client()
    network.register_policy_client(bundled_client, "agent_spend", {**_spend_params(), **_caps()})
    assert sorted(_history_seen(rpc.create(bundled_client, transfer(fresh_agent())))) == ["120"]


# A custom policy (no schema) that reads every window its params name.
PROBE = Policy(
    name="window_probe",
    entrypoint="window_probe.allow",
    modules={
        "window_probe.rego": "package window_probe\nimport rego.v1\n"
        "allow if {\n\tsome w in data.params.w\n"
        "\tdata.wasm.history[format_int(w.window_seconds, 10)].count >= 0\n}\n"
    },
)


@pytest.mark.parametrize(
    "windows",
    [[MAX_WINDOW + 1], [float(MAX_WINDOW + 1)], [120, 2**62], [2**63 - 1], [1e300]],
    ids=repr,
)
def test_a_window_longer_than_ten_years_is_refused_at_registration(
    network: ReferenceNetwork, windows: list[Any]
) -> None:
    """Before: up to 2^62 s was registered, and the challenger's watch kept every record of
    every client for that long (its horizon is the longest window of any client)."""
    conf = {"w": [{"nested": {"window_seconds": w}} for w in windows]}
    request = network.sign_registration(fresh_client(), PROBE, conf)
    error = RPC(network, network.admin_key).raw("agentguard_registerPolicyClient", request)
    body = error.json()["error"]
    assert body["code"] == -32602
    assert f"longer than {MAX_WINDOW} s (10 years)" in body["message"]


def test_ten_years_is_a_window(network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, PROBE, {"w": [{"window_seconds": MAX_WINDOW}]})
    seen = _history_seen(RPC(network, network.api_key).create(client, transfer(fresh_agent())))
    assert str(MAX_WINDOW) in seen


def _stored(state: State, key: str, windows: list[int]) -> str:
    """A registration saved as one registered before the bound was."""
    client = Signer.from_key(key).address
    registration = Registration.sign(
        PrivateKey(bytes.fromhex(key[2:])),
        policy_client=client,
        policy=PROBE,
        params={"w": [{"window_seconds": w} for w in windows]},
        expire_after=300,
        chain_id=8453,
        version=1,
    )
    state.save_policy_client(PolicyClientRecord(registration, PROBE))
    return client


def test_a_stored_registration_with_a_longer_window_is_refused_tasks(tmp_path: Path) -> None:
    """One registered before the bound gets no history for that window, so a policy written to
    allow on a missing value would fail open: its tasks are refused (nothing reserved), and the
    challenger's horizon does not follow it. A client within the bound is served."""
    state = open_state(tmp_path / "state.sqlite3")
    long = _stored(state, "0x" + "42" * 32, [MAX_WINDOW + 1, 120])
    fine = _stored(state, "0x" + "43" * 32, [MAX_WINDOW, 120])
    clients = Clients(GatewaySettings(), state, None)
    key = ApiKeyEntry(sha256="00" * 32)
    with pytest.raises(RPCError, match=r"longer than 315360000 s \(10 years\)") as refused:
        clients.usable(key, long)
    assert refused.value.code == -32602
    assert clients.usable(key, fine).windows == (120, 3600, 86400, MAX_WINDOW)
    registration = clients.registered(long).registration
    assert history_windows(registration) == (120, 3600, 86400)
    assert windows_of(registration, {str(MAX_WINDOW + 1): {}}) == [120, 3600, 86400]
