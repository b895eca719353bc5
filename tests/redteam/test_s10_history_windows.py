"""Red team, session 10: ``data.wasm.history`` holds only the windows the params name.

Each test asserts the safe behaviour, so it fails if the attack works: a window cap or rate
limit never allows past its limit whatever shape its window takes, each window is judged on
its own totals, re-registration and retries count every spend once, simulate and create agree,
and the challenger still catches (and survives) a gateway's history whatever keys it sends.
Real engine (regopy), real ReferenceNetwork, real SQLite state."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agentguard._exceptions import AgentGuardError
from agentguard.challenge._history import Candidate, compare, windows_of
from agentguard.network.gateway._registry import _windows
from agentguard.network.gateway._results import wasm_data
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.registration import Registration
from agentguard.network.state._sqlite import SQLiteState
from agentguard.policies import Policy, load
from agentguard.policies._engine import PolicyEngine
from tests.network.conftest import (
    PAYEE,
    RPC,
    TOKEN,
    decision,
    fresh_agent,
    fresh_client,
    network,
    rpc,
    simulation,
    transfer,
)

__all__ = ["network", "rpc"]  # the network package's own network (not the x402 one)

ASSET = TOKEN.lower()
CAP = 10  # atomic units: two spends of 6 exceed it


def _cap(window: Any, max_amount: int = CAP) -> dict[str, Any]:
    return {"asset": ASSET, "window_seconds": window, "max_amount": str(max_amount)}


def _spend(**extra: Any) -> dict[str, Any]:
    return {"max_per_tx": {ASSET: str(10**12)}, "allowed_recipients": [PAYEE], **extra}


def _history(result: dict[str, Any]) -> dict[str, Any]:
    data = result["task_response"]["policy_task_data"]["policyData"][0]["data"]
    seen: dict[str, Any] = json.loads(bytes.fromhex(data[2:]))["history"]
    return seen


def _register(network: ReferenceNetwork, policy: str | Policy, conf: dict[str, Any]) -> str | None:
    """The client's address, or None if the gateway refused the params."""
    client = fresh_client()
    try:
        network.register_policy_client(client, policy, conf)
    except AgentGuardError:  # refused (schema, or JSON the gateway does not accept): typed
        return None
    return client


# -- policy author: window shapes ----------------------------------------------------------


WINDOW_SHAPES: list[Any] = [
    120.0,  # jsonschema's "integer" accepts an integral float; _windows wants an int
    3600.0,  # an old default window, as a float
    86400.0,
    1.2e2,
    True,  # an int subclass
    "120",
    -120,
    0,
    120.5,
    2**64,
    10**80,
    [120],
    {"window_seconds": 120},
]


@pytest.mark.parametrize("window", WINDOW_SHAPES, ids=repr)
@pytest.mark.parametrize("policy", ["agent_spend", "window_cap"])
def test_a_window_cap_in_any_shape_never_allows_past_its_cap(
    network: ReferenceNetwork, rpc: RPC, policy: str, window: Any
) -> None:
    """Whatever shape the cap's window takes, either the gateway refuses the params or two
    spends of 6 under a cap of 10 are not both allowed (the second sees the first)."""
    conf = (
        _spend(window_caps=[_cap(window)])
        if policy == "agent_spend"
        else {"window_caps": [_cap(window)]}
    )
    _never_both(network, rpc, policy, conf, 6)


def _never_both(
    network: ReferenceNetwork, rpc: RPC, policy: str, conf: dict[str, Any], amount: int
) -> None:
    """Two spends of ``amount`` by one agent are not both allowed (or the params are refused)."""
    client = _register(network, policy, conf)
    if client is not None:
        agent = fresh_agent()
        first = decision(rpc.create(client, transfer(agent, amount)))
        second = decision(rpc.create(client, transfer(agent, amount)))
        assert not (first == "allow" and second == "allow"), (conf, first, second)


@pytest.mark.parametrize("window", [60.0, 3600.0, 86400.0, True, "60", -60, 0, 60.5], ids=repr)
def test_a_rate_limit_in_any_shape_never_allows_past_its_count(
    network: ReferenceNetwork, rpc: RPC, window: Any
) -> None:
    conf = {"rate_limits": [{"window_seconds": window, "max_count": 1}]}
    _never_both(network, rpc, "rate_limit", conf, 1)


@pytest.mark.parametrize("window", [120.0, 3600.0, 86400.0])
def test_an_integral_float_window_the_schema_accepts_is_sent(
    network: ReferenceNetwork, rpc: RPC, window: float
) -> None:
    """The schema accepts ``86400.0`` as an integer and the policy reads it as "86400": the
    gateway must send that window (before s10-b 3600.0/86400.0 worked through the defaults;
    without it every action of such a client is denied)."""
    client = _register(network, "agent_spend", _spend(window_caps=[_cap(window)]))
    assert client is not None
    agent = fresh_agent()
    first = rpc.create(client, transfer(agent, 6))
    assert decision(first) == "allow", first["attestation"]
    assert sorted(_history(first)) == [str(int(window))]
    second = rpc.create(client, transfer(agent, 6))
    assert decision(second) == "deny"
    assert _history(second)[str(int(window))]["projected"][ASSET] == "12"


def test_duplicate_and_overlapping_windows_each_judge_their_own_cap(
    network: ReferenceNetwork, rpc: RPC
) -> None:
    """Two caps on one window (the stricter wins), and a loose long window next to a strict
    short one: history has each window once, and the strict cap denies."""
    for caps in (
        [_cap(120, 1000), _cap(120, CAP)],
        [_cap(7200, 1000), _cap(90, CAP)],
        [_cap(90, CAP), {"asset": "0x" + "11" * 20, "window_seconds": 45, "max_amount": "0"}],
    ):
        client = _register(network, "agent_spend", _spend(window_caps=caps))
        assert client is not None
        agent = fresh_agent()
        assert decision(rpc.create(client, transfer(agent, 6))) == "allow", caps
        second = rpc.create(client, transfer(agent, 6))
        assert decision(second) == "deny", caps
        assert sorted(_history(second), key=int) == sorted(
            {str(c["window_seconds"]) for c in caps}, key=int
        )


def test_a_rate_limit_and_a_cap_on_different_windows(network: ReferenceNetwork, rpc: RPC) -> None:
    conf = _spend(
        window_caps=[_cap(300, 10**6)], rate_limits=[{"window_seconds": 75, "max_count": 1}]
    )
    client = _register(network, "agent_spend", conf)
    assert client is not None
    agent = fresh_agent()
    first = rpc.create(client, transfer(agent, 1))
    assert decision(first) == "allow"
    assert sorted(_history(first)) == ["300", "75"]
    second = rpc.create(client, transfer(agent, 1))
    assert decision(second) == "deny"
    assert _history(second)["75"]["count"] == 1


def test_a_window_is_judged_on_its_own_totals(tmp_path: Path) -> None:
    """A spend 100 s ago is in the 3600 s window and outside the 60 s one: the state and
    ``wasm_data`` never hand one window the other's totals (real SQLite state)."""
    state = SQLiteState(tmp_path / "s.db")
    try:
        client, agent = "0x" + "0c" * 20, "0x" + "0a" * 20
        held = state.reserve(
            policy_client=client,
            agent=agent,
            windows=(60, 3600),
            task_id="0x" + "01" * 32,
            asset=ASSET,
            amount=6,
            now=1_000_000,
        )
        state.record(held, expires_at=1_000_300, result={"status": "success"})
        totals = state.totals(policy_client=client, agent=agent, windows=(60, 3600), now=1_000_100)
        for windows in ((60,), (3600,), (60, 3600), ()):
            task: Any = SimpleNamespace(  # only what ``wasm_data`` reads of a TaskInput
                spend_asset=ASSET,
                spend_amount=6,
                client=SimpleNamespace(windows=windows),
                intent=transfer(agent, 6),
                x402=None,
            )
            wasm = wasm_data(task, totals, 1_000_100, "0x" + "00" * 32, approved=False)
            history = wasm["history"]
            assert sorted(history, key=int) == [str(w) for w in windows]
            if 60 in windows:
                assert history["60"]["count"] == 0 and history["60"]["projected"][ASSET] == "6"
            if 3600 in windows:
                assert history["3600"]["count"] == 1
                assert history["3600"]["projected"][ASSET] == "12"
    finally:
        state.close()


# -- hostile agent host: re-registration, retries, simulate --------------------------------


def test_re_registration_that_moves_the_window_still_counts_earlier_spend(
    network: ReferenceNetwork, rpc: RPC
) -> None:
    """v1 caps 10 per 120 s; a spend of 6; v2 caps 10 per 45 s (a window the state never
    tracked for this agent): the earlier 6 counts in it, a further 6 is denied."""
    client = fresh_client()
    network.register_policy_client(client, "agent_spend", _spend(window_caps=[_cap(120)]))
    agent = fresh_agent()
    assert decision(rpc.create(client, transfer(agent, 6))) == "allow"
    network.register_policy_client(client, "agent_spend", _spend(window_caps=[_cap(45)]))
    after = rpc.create(client, transfer(agent, 6))
    assert sorted(_history(after)) == ["45"]
    assert _history(after)["45"]["count"] == 1
    assert decision(after) == "deny"


def test_re_registration_to_no_window_and_back(network: ReferenceNetwork, rpc: RPC) -> None:
    """A client drops every window (its history is empty), spends, then names a window
    again: what it spent meanwhile counts."""
    client = fresh_client()
    agent = fresh_agent()
    network.register_policy_client(client, "agent_spend", _spend())
    bare = rpc.create(client, transfer(agent, 6))
    assert decision(bare) == "allow" and _history(bare) == {}
    network.register_policy_client(client, "agent_spend", _spend(window_caps=[_cap(150)]))
    capped = rpc.create(client, transfer(agent, 6))
    assert _history(capped)["150"]["projected"][ASSET] == "12"
    assert decision(capped) == "deny"


def test_an_idempotent_retry_across_re_registration_is_counted_once(
    network: ReferenceNetwork, rpc: RPC
) -> None:
    """The same rpc id retried after the windows changed returns the first answer and counts
    nothing more; a new task under the new windows sees the first one exactly once."""
    client = fresh_client()
    agent = fresh_agent()
    network.register_policy_client(client, "agent_spend", _spend(window_caps=[_cap(120, 100)]))
    rpc_id = str(uuid.uuid4())
    first = rpc.create(client, transfer(agent, 6), rpc_id=rpc_id)
    assert decision(first) == "allow"
    network.register_policy_client(client, "agent_spend", _spend(window_caps=[_cap(50, 100)]))
    again = rpc.create(client, transfer(agent, 6), rpc_id=rpc_id)
    assert again["attestation"] == first["attestation"]
    after = rpc.create(client, transfer(agent, 6))
    assert _history(after)["50"]["count"] == 1
    assert _history(after)["50"]["projected"][ASSET] == "12"


def test_simulate_and_create_see_the_same_windows(network: ReferenceNetwork, rpc: RPC) -> None:
    """The simulate path builds ``data.wasm`` from the same client windows: its decision is
    the create path's, for a client with windows and one without."""
    for conf in (
        _spend(window_caps=[_cap(130)]),
        _spend(),
        _spend(rate_limits=[{"window_seconds": 3600, "max_count": 1}]),
    ):
        client = fresh_client()
        pid = network.register_policy_client(client, "agent_spend", conf)
        agent = fresh_agent()
        for _ in range(2):
            intent = transfer(agent, 6)
            simulated = rpc.call("newt_simulateTask", simulation(intent.wire(), pid))
            created = rpc.create(client, intent)
            assert simulated["result"]["decision"] == decision(created), (conf, simulated)


# -- hostile gateway: what operators and the challenger see --------------------------------


def _engine_decision(
    policy: str, conf: dict[str, Any], history: dict[str, Any], amount: int
) -> str:
    intent = transfer(fresh_agent(), amount)
    wasm = {
        "now": 1_700_000_000,
        "intent_hash": "0x" + intent.intent_hash.hex(),
        "approved": False,
        "spend": intent.spend.wasm(),
        "history": history,
    }
    got = PolicyEngine().evaluate(load(policy), input=intent.parsed(), params=conf, wasm=wasm)
    return str(got.decision)


def _entry(count: int, spent: int, amount: int) -> dict[str, Any]:
    return {
        "count": count,
        "spent": {ASSET: str(spent)} if spent else {},
        "projected": {ASSET: str(spent + amount)},
    }


@pytest.mark.parametrize(
    "sent",
    [
        {},  # every window dropped
        {"3600": "low", "86400": "low"},  # the old defaults instead of the named window
        {"0120": "low", "120.0": "low", " 120": "low", "120 ": "low"},  # lookalike keys
    ],
    ids=["none", "old-defaults", "lookalikes"],
)
@pytest.mark.parametrize("policy", ["agent_spend", "window_cap", "rate_limit"])
def test_a_gateway_that_drops_the_named_window_gets_a_deny(
    policy: str, sent: dict[str, str]
) -> None:
    """A gateway that leaves out the named window (sending others, at zero totals) never
    gets an allow: the bundled policies refuse a missing window (real engine)."""
    if policy == "rate_limit":
        conf: dict[str, Any] = {"rate_limits": [{"window_seconds": 120, "max_count": 5}]}
    elif policy == "window_cap":
        conf = {"window_caps": [_cap(120, 10**6)]}
    else:
        conf = _spend(
            window_caps=[_cap(120, 10**6)], rate_limits=[{"window_seconds": 120, "max_count": 5}]
        )
    honest = {"120": _entry(0, 0, 1)}
    assert _engine_decision(policy, conf, honest, 1) == "allow"
    lying = {key: _entry(0, 0, 1) for key in sent}
    assert _engine_decision(policy, conf, lying, 1) == "deny"


def _registration(conf: dict[str, Any]) -> Registration:
    """``windows_of`` reads the params and the policy's code hash (here: bundled agent_spend,
    so only the named windows are sent)."""
    spend = load("agent_spend").code_hash
    return cast(Registration, SimpleNamespace(params=conf, policy_code_hash=spend))


def _earlier(now: int, amount: int = 6) -> Candidate:
    return Candidate(
        task_id="0x" + uuid.uuid4().hex * 2,
        policy_client="0x" + "0c" * 20,
        agent="0x" + "0a" * 20,
        asset=ASSET,
        amount=amount,
        now=now,
        expires_at=now + 300,
        intent={},
        attestation={},
        status="attested",
    )


HOSTILE_KEYS = ["²", "٣", "9" * 5000, "1" * 30, "-5", "", "0", "00120", "3600", "86400"]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k[:12]))
def test_the_challenger_survives_any_history_key_and_still_catches_under_reporting(
    key: str,
) -> None:
    """A gateway records a task whose history has an extra key (any text: the operators only
    check that history is an object). The challenger must neither crash on it nor lose the
    named window: an earlier live spend of 6 that the record leaves out of "120" is found."""
    registration = _registration(_spend(window_caps=[_cap(120)]))
    recorded = {"120": _entry(0, 0, 6), key: _entry(0, 0, 6)}
    windows = windows_of(registration, recorded)
    assert 120 in windows
    assert max(windows) <= 86400  # a key no honest gateway sends cannot stretch the horizon
    check = compare(
        recorded, [_earlier(1_000)], task_id="0x" + "02" * 32, at=1_010, windows=windows
    )
    assert 120 in check.under


def test_old_records_with_the_default_windows_still_read_right() -> None:
    """A record from before s10-b holds 3600 and 86400 besides the named window: they are
    still compared (an under-reported named window is found) and an under-reported default
    window that no policy reads proves nothing against the gateway."""
    registration = _registration(_spend(window_caps=[_cap(120)]))
    old = {"120": _entry(0, 0, 6), "3600": _entry(0, 0, 6), "86400": _entry(0, 0, 6)}
    windows = windows_of(registration, old)
    assert windows == [120, 3600, 86400]
    check = compare(old, [_earlier(1_000)], task_id="0x" + "02" * 32, at=1_010, windows=windows)
    assert check.under == (120, 3600, 86400)
    honest_120 = {**old, "120": _entry(1, 6, 6)}
    check = compare(
        honest_120, [_earlier(1_000)], task_id="0x" + "02" * 32, at=1_010, windows=windows
    )
    assert check.under == (3600, 86400)


def test_windows_are_found_wherever_the_params_put_them() -> None:
    """Nested, duplicated and under any key: every positive integer ``window_seconds`` is
    found (integral floats too, as the schema accepts them); nothing else is."""
    conf = {
        "window_caps": [_cap(120), _cap(120.0), _cap(3600.0)],
        "rate_limits": [{"window_seconds": 75, "max_count": 1}],
        "x": {"y": [{"window_seconds": 9}]},
        "bad": [
            {"window_seconds": v} for v in (True, False, "60", -1, 0, 60.5, float("inf"), None)
        ],
    }
    assert _windows(conf) == (9, 75, 120, 3600)
    assert all(type(w) is int for w in _windows(conf))


PROBE = Policy(
    name="probe",
    entrypoint="probe.allow",
    modules={
        "probe.rego": "package probe\nimport rego.v1\n"
        "allow if {\n\tsome w in data.params.w\n"
        "\tdata.wasm.history[format_int(w.window_seconds, 10)].count < 1\n}\n"
    },
)


@pytest.mark.parametrize("window", [10**19, 10**77, 1e300, 2**63 - 1], ids=repr)
def test_a_custom_policy_with_a_huge_window_fails_closed_and_harms_no_other_client(
    network: ReferenceNetwork, rpc: RPC, window: Any
) -> None:
    """A policy with no schema (an owner's own) names a window far beyond any clock: its
    tasks are answered (not an internal error from the state's 64-bit SQL integers), its
    second action is not allowed, and another client is served."""
    client = _register(network, PROBE, {"w": [{"window_seconds": window}]})
    if client is not None:
        agent = fresh_agent()
        for _ in range(2):
            answer = rpc.raw(
                "newt_createTask",
                {"policy_client": client, "intent": transfer(agent, 1).wire(), "timeout": 5},
            ).json()
            if "error" in answer:  # typed (the policy's own failure), not an internal error
                assert answer["error"]["code"] != -32603, answer
                last = "error"
            else:
                last = answer["result"]["attestation"]["decision"]
        assert last != "allow"
    other = _register(network, "agent_spend", _spend(window_caps=[_cap(120)]))
    assert other is not None
    assert decision(rpc.create(other, transfer(fresh_agent(), 6))) == "allow"
