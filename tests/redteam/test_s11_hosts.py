"""Red team, session 11: operator hosts (one process, several operator keys, one evaluation).

Attacks as a hostile gateway on a host (per-key task claims across keys and methods, address
lists in every shape), as a hostile host or a bad configuration on the gateway (one signer
counted twice, answers for other hosts' keys, mixed answers, failures), on the launcher's key
splitting, and the challenger re-checking what hosts signed. In process where the attack needs
no process (the real ``Gateway`` and ``Operator`` code, only the HTTP hop a function call)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey

from agentguard import TransactionIntent
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._exceptions import ConfigurationError
from agentguard.network._rpc import (
    EVALUATE_FOR_KEYS,
    INVALID_PARAMS,
    MAX_HOST_KEYS,
    POLICY_EVALUATION_ERROR,
    RPCError,
)
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig, OperatorEntry
from agentguard.network.gateway import Gateway
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import open_state, policy_material
from agentguard.policies import policy_id
from tests.network.conftest import (
    NETCHECK,
    RPC,
    UNIT,
    fresh_agent,
    fresh_client,
    params,
    transfer,
)
from tests.network.test_operator import request
from tests.task_ids import colliding

KEY = ApiKeyEntry(sha256="00" * 32, admin=True)
KEYS = [PrivateKey((0x6000 + i).to_bytes(32, "big")) for i in range(300)]
ADDRESSES = [operator_address(k) for k in KEYS]

Answer = Callable[[Operator, str, dict[str, Any]], Any]


def honest(operator: Operator, method: str, params: dict[str, Any]) -> Any:
    if method == EVALUATE_FOR_KEYS:
        return operator.evaluate_for(params)
    return operator.evaluate_and_sign(params)


class Direct:
    """An operator link's HTTP client that hands the body to an in-process operator (or host);
    ``answer`` may bend what it says back."""

    def __init__(self, operator: Operator, answer: Answer = honest) -> None:
        self.operator = operator
        self.answer = answer
        self.calls: list[tuple[str, list[str] | None]] = []
        self.down = False

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        from agentguard.network._http import HTTPError

        if self.down:
            raise HTTPError("connection refused")
        request = json.loads(body)
        self.calls.append((request["method"], request["params"].get("operators")))
        try:
            reply: dict[str, Any] = {
                "result": self.answer(self.operator, request["method"], request["params"])
            }
        except RPCError as exc:
            reply = {"error": {"code": exc.code, "message": exc.message}}
        return 200, json.dumps({"jsonrpc": "2.0", "id": 1, **reply}).encode()

    def close(self) -> None:
        return None


class Net:
    """A real ``Gateway`` over in-process operators. ``layout``: per operator entry, the key
    index and the URL it is listed at; the keys listed at one URL are held by one process."""

    def __init__(
        self,
        folder: Path,
        layout: Sequence[tuple[int, str]],
        *,
        addresses: Sequence[str] | None = None,
        answers: Mapping[str, Answer] | None = None,
        threshold: int = 66,
        liar: str | None = None,
    ) -> None:
        """``liar``: the process that signs allow for every deny (``LyingEngine``)."""
        from tests.challenge.lying_operator import LyingEngine

        token = folder / "operator.token"
        token.write_text("t" * 32)
        held: dict[str, list[PrivateKey]] = {}
        for index, url in layout:
            if KEYS[index] not in held.setdefault(url, []):
                held[url].append(KEYS[index])
        self.processes = {
            _url(name): Direct(
                Operator(keys, Registry(":memory:"), LyingEngine() if name == liar else None),
                (answers or {}).get(name, honest),
            )
            for name, keys in held.items()
        }
        listed = addresses or [ADDRESSES[i] for i, _ in layout]
        self.state_path = str(folder / "state.sqlite3")
        config = NetworkConfig(
            gateway=GatewaySettings(state_db=self.state_path, threshold_percentage=threshold),
            operators=tuple(
                OperatorEntry(address, _url(url), str(token))
                for address, (_, url) in zip(listed, layout, strict=True)
            ),
            api_keys=(KEY,),
        )
        self.gateway = Gateway(config, open_state(self.state_path))
        for link in self.gateway.operators.links:
            link.http.close()
            link.http = self.processes[link.url]  # type: ignore[assignment]
        self.owner = PrivateKey()
        self.loop = asyncio.new_event_loop()
        self.client = fresh_client()
        registration = Registration.sign(
            self.owner, policy_client=self.client, policy=NETCHECK, params=params(),
            expire_after=300, chain_id=8453, version=1,
        )  # fmt: skip
        self.gateway.register(
            {"registration": registration.to_json(), "policy": policy_material(NETCHECK)}
        )

    def create(self, amount: int = UNIT) -> dict[str, Any]:
        body = {"policy_client": self.client, "intent": transfer(fresh_agent(), amount).wire()}
        task = self.gateway._create_task(KEY, str(uuid.uuid4()), body)
        result: dict[str, Any] = self.loop.run_until_complete(task)
        return result

    def close(self) -> None:
        self.loop.close()
        self.gateway.state.close()


def _url(name: str) -> str:
    """``h`` -> ``http://h.invalid:1/rpc``: a URL per process name (never dialled)."""
    return f"http://{name}.invalid:1/rpc"


def signers(result: dict[str, Any]) -> list[str]:
    return [s["operator"].lower() for s in result["attestation"]["signatures"]]


# -- a hostile gateway against a host ------------------------------------------------------


def test_a_single_key_shares_its_task_claims_between_both_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A single-key operator answers both methods; a task id it signed through one names the
    same intent through the other, in both orders (reached through colliding derivations:
    ``tests.task_ids.colliding``)."""
    alone = Operator(KEYS[0], Registry(":memory:"))
    first, third = request(UNIT), request(UNIT)
    colliding(monkeypatch, first, third)
    assert alone.evaluate_and_sign(first)["decision"] == "allow"
    other = _twin(first, 2 * UNIT)
    [refused] = alone.evaluate_for({**other, "operators": [ADDRESSES[0]]})["answers"]
    assert "different intent" in refused["error"]["message"]
    [signed] = alone.evaluate_for({**third, "operators": [ADDRESSES[0].lower()]})["answers"]
    assert signed["decision"] == "allow" and signed["operator"] == ADDRESSES[0]
    with pytest.raises(RPCError, match="different intent"):
        alone.evaluate_and_sign(_twin(third, 3 * UNIT))


def _twin(body: dict[str, Any], amount: int) -> dict[str, Any]:
    """A request for another intent under ``body``'s task and request id."""
    return request(amount, task_id=body["task_id"], request_id=body["request_id"])


@pytest.mark.parametrize(
    "operators",
    [
        [ADDRESSES[0], ADDRESSES[0].lower()],  # one key twice, in two cases
        [ADDRESSES[0].lower(), "0x" + ADDRESSES[0][2:].upper()],
        [ADDRESSES[0], ADDRESSES[1], ADDRESSES[0]],
        {ADDRESSES[0]: True},  # not a list
        ADDRESSES[0],
        [],
        [ADDRESSES[0] + "\n"],  # `$` would let a newline through
        [ADDRESSES[0][:-1]],
        [ADDRESSES[0], 7],
        ["0x" + f"{i:040x}" for i in range(257)] + [ADDRESSES[0]],  # over the bound
    ],
)
def test_a_host_refuses_a_bent_address_list_whole_and_claims_nothing(
    operators: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Operator(KEYS[:2], Registry(":memory:"))
    body = request(UNIT)
    colliding(monkeypatch, body)
    with pytest.raises(RPCError) as refused:
        host.evaluate_for({**body, "operators": operators})
    assert refused.value.code == INVALID_PARAMS
    # nothing was claimed: the same task id still signs another intent for every key
    other = _twin(body, 2 * UNIT)
    answers = host.evaluate_for({**other, "operators": ADDRESSES[:2]})["answers"]
    assert [a["decision"] for a in answers] == ["allow", "allow"]


def test_a_thousand_unheld_addresses_cost_no_evaluation_and_no_claim() -> None:
    host = Operator(KEYS[:2], Registry(":memory:"))
    body = request(UNIT, wasm={"bent": True})  # would be refused, were it evaluated
    strangers = ["0x" + f"{i:040x}" for i in range(1, 257)]
    answers = host.evaluate_for({**body, "operators": strangers})["answers"]
    assert len(answers) == 256 and all("does not hold" in a["error"]["message"] for a in answers)


def test_the_host_answers_each_key_in_the_order_asked_whatever_the_case() -> None:
    host = Operator(KEYS[:3], Registry(":memory:"))
    wanted = [ADDRESSES[2].lower(), ADDRESSES[0], "0x" + ADDRESSES[1][2:].upper()]
    answers = host.evaluate_for({**request(UNIT), "operators": wanted})["answers"]
    assert [a["operator"] for a in answers] == [ADDRESSES[2], ADDRESSES[0], ADDRESSES[1]]
    assert len({a["signature"] for a in answers}) == 3


# -- one signer counted twice ----------------------------------------------------------------


def _refusing(operator: Operator, method: str, params: dict[str, Any]) -> Any:
    raise RPCError(INVALID_PARAMS, "down for maintenance")


@pytest.mark.parametrize(
    ("layout", "addresses"),
    [
        # key 0 twice at its host's URL; the separate operator between them fails, so the
        # fan-out asks the host twice, once per entry
        ([(0, "h"), (1, "x"), (0, "h")], None),
        # key 0 at its host's URL and again at another URL that reaches a process holding it
        ([(0, "h"), (1, "x"), (0, "h2")], None),
        # the same key in two spellings (checksummed and lower case)
        ([(0, "h"), (1, "x"), (0, "h")], [ADDRESSES[0], ADDRESSES[1], ADDRESSES[0].lower()]),
    ],
)
def test_one_signer_listed_twice_never_counts_twice(
    tmp_path: Path, layout: list[tuple[int, str]], addresses: list[str] | None
) -> None:
    """Before the fix the gateway started with one operator listed twice (any spelling, any
    URL) and counted its signature twice: here key 0 alone made a 2-of-3 quorum while the
    only other operator refused. The verifier refuses such an attestation (a duplicate
    signature), but the gateway recorded the task as allowed and reserved its spend."""
    with pytest.raises(ConfigurationError, match="listed twice"):
        Net(tmp_path, layout, addresses=addresses, answers={"x": _refusing})


def test_a_host_of_more_keys_than_one_call_may_name_still_reaches_its_quorum(
    tmp_path: Path,
) -> None:
    """Before the fix a 90% quorum of a 300-key host never came: the gateway named 270 keys
    in one call and the host refuses more than ``MAX_HOST_KEYS`` (every key failed)."""
    net = Net(tmp_path, [(i, "h") for i in range(300)], threshold=90)
    result = net.create()
    assert result["status"] == "success", result.get("error", "")[:200]
    assert len(set(signers(result))) == len(signers(result)) == 270
    calls = net.processes[_url("h")].calls
    assert all(len(named or ()) <= MAX_HOST_KEYS for _, named in calls)
    named = [a.lower() for _, n in calls for a in n or ()]
    assert len(named) == len(set(named))  # each key asked once
    net.close()


# -- a hostile host's answers at the gateway --------------------------------------------------


def _digest(params: dict[str, Any], *, allow: bool) -> bytes:
    intent = TransactionIntent.from_wire(params["intent"])
    return attestation_digest(
        chain_id=params["chain_id"],
        policy_client=bytes.fromhex(params["policy_client"][2:]),
        task_id=bytes.fromhex(params["task_id"][2:]),
        policy_id=policy_id(params["policy_client"], NETCHECK, params["params"], 300),
        intent_hash=intent.intent_hash,
        allow=allow,
        expires_at=params["expires_at"],
    )


def _key(address: str) -> PrivateKey:
    return KEYS[[a.lower() for a in ADDRESSES].index(address.lower())]


def _bent(bend: Callable[[list[dict[str, Any]], dict[str, Any]], Any]) -> Answer:
    """A host that evaluates honestly, then hands ``bend(answers, params)`` back."""

    def answer(operator: Operator, method: str, params: dict[str, Any]) -> Any:
        result = honest(operator, method, params)
        bent = bend(result["answers"], params)
        return {"answers": result["answers"] if bent is None else bent}

    return answer


def _reordered(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    return [{**a, "operator": a["operator"].lower()} for a in reversed(answers)]


def _deny_for_the_second(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    if len(answers) > 1:  # validly signed by the key it names: the host holds it
        signature = sign_attestation(_key(answers[1]["operator"]), _digest(params, allow=False))
        answers[1] = {**answers[1], "decision": "deny", "signature": "0x" + signature.hex()}
    return answers


def _for_a_key_of_another_process(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    signature = sign_attestation(KEYS[2], _digest(params, allow=True))  # key 2 runs at "x"
    stolen = {**answers[0], "operator": ADDRESSES[2], "signature": "0x" + signature.hex()}
    return [*answers[:-1], stolen]


def _under_the_wrong_name(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    signature = sign_attestation(KEYS[2], _digest(params, allow=True))
    return [{**a, "signature": "0x" + signature.hex()} for a in answers]


def _policy_failed(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    failed = {"code": POLICY_EVALUATION_ERROR, "message": "policy evaluation failed: no"}
    return [{"operator": a["operator"], "error": failed} for a in answers]


def _error_and_signature(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    return [{**a, "error": {"code": 1, "message": "but signed"}} for a in answers]


def _not_a_list(answers: list[dict[str, Any]], params: dict[str, Any]) -> Any:
    return {a["operator"]: a for a in answers}


HOST_AND_ONE = [(0, "h"), (1, "h"), (2, "x")]  # a host of keys 0 and 1, key 2 alone


def test_a_host_answer_in_another_order_and_case_counts_each_key_once(tmp_path: Path) -> None:
    net = Net(tmp_path, HOST_AND_ONE, answers={"h": _bent(_reordered)})
    results = [net.create() for _ in range(3)]
    for result in results:
        assert result["status"] == "success" and result["attestation"]["decision"] == "allow"
        assert len(set(signers(result))) == len(signers(result)) == 2
    net.close()


@pytest.mark.parametrize(
    ("bend", "error_type", "counted"),
    [
        (_for_a_key_of_another_process, "invalid_response", 1),
        (_under_the_wrong_name, "bad_signature", 1),
        (_error_and_signature, "rpc_1", 1),
        (_not_a_list, "invalid_response", 1),
        (_deny_for_the_second, None, 2),
    ],
)
def test_a_hostile_host_gets_no_vote_it_did_not_sign_as_its_own_key(
    tmp_path: Path, bend: Any, error_type: str | None, counted: int
) -> None:
    """The host holds keys 0 and 1; key 2 runs alone and answers honestly. Whatever the host
    says, a vote counts only for a key asked, signed by that very key, over this task."""
    net = Net(tmp_path, HOST_AND_ONE, answers={"h": _bent(bend)})
    for _ in range(3):  # the rotation starts at each entry once
        result = net.create()
        host_errors = {
            e["operator_address"].lower(): e["error_type"]
            for e in result["operator_errors"]
            if e["operator_address"] != ADDRESSES[2]
        }
        if error_type is None:  # allow for key 0, deny for key 1: each its own vote
            assert result["status"] == "success" and result["attestation"]["decision"] == "allow"
            assert len(set(signers(result))) == len(signers(result)) == 2
            assert ADDRESSES[2].lower() in signers(result)  # the host's deny never joins it
            continue
        assert result["status"] == "failed" and result["attestation"] is None
        assert result["error"].startswith("quorum_not_reached")
        assert "got allow/standard: 1" in result["error"]  # key 2's, nobody else's
        assert set(host_errors.values()) == {error_type} and len(host_errors) >= counted
    net.close()


def test_one_hosts_errors_forge_neither_a_policy_error_nor_a_deny(tmp_path: Path) -> None:
    """A host of two of three keys answers ``policy evaluation failed`` for both: that is two
    operators' errors, not the network's verdict (every operator must say so for the task to
    fail as a policy error), and no error is ever a vote."""
    net = Net(tmp_path, HOST_AND_ONE, answers={"h": _bent(_policy_failed)})
    result = net.create()
    assert result["status"] == "failed" and "quorum_not_reached" in result["error"]
    assert "got allow/standard: 1" in result["error"]
    assert len(result["operator_errors"]) == 2
    net.close()


def test_a_host_down_mid_fan_out_is_one_failure_per_key_and_the_rest_still_decide(
    tmp_path: Path,
) -> None:
    layout = [(0, "h"), (1, "h"), (2, "x"), (3, "y")]  # 3 of 4 needed
    net = Net(tmp_path, layout)
    assert net.create()["status"] == "success"
    net.processes[_url("h")].down = True
    down = net.create()
    assert down["status"] == "failed" and "got allow/standard: 2" in down["error"]
    failed = sorted(e["operator_address"] for e in down["operator_errors"])
    assert failed == sorted(ADDRESSES[:2])  # once each, not once per call or per widening
    net.processes[_url("h")].down = False
    result = net.create()
    assert result["status"] == "success" and len(set(signers(result))) == 3
    net.close()


def test_a_host_restarted_between_tasks_is_sent_the_policy_again_once_per_call(
    tmp_path: Path,
) -> None:
    """The keys of a host share what the gateway knows the host holds: after a restart (no
    policy code held) one call asks for it, gets it, and every key of that call answers."""
    net = Net(tmp_path, [(0, "h"), (1, "h"), (2, "h")])
    assert net.create()["status"] == "success"
    process = net.processes[_url("h")]
    process.operator = Operator(KEYS[:3], Registry(":memory:"))  # restarted: holds no code
    process.calls.clear()
    result = net.create()
    assert result["status"] == "success" and len(set(signers(result))) == 2
    assert [method for method, _ in process.calls] == [EVALUATE_FOR_KEYS] * 2  # ask, resend
    assert process.calls[0][1] == process.calls[1][1]
    net.close()


# -- the launcher's key splitting, in real processes -----------------------------------------


def _served(net: ReferenceNetwork) -> dict[str, int]:
    """Each operator address a live process answers for, and on which port."""
    served: dict[str, int] = {}
    for port in {op.port for op in net.operators}:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).json()
        except httpx.HTTPError:
            continue
        for address in health.get("operators") or [health["operator"]]:
            assert address.lower() not in served, f"{address} is served twice"
            served[address.lower()] = port
    return served


def test_every_key_runs_in_exactly_one_process_through_stops_and_restarts(
    tmp_path: Path,
) -> None:
    with ReferenceNetwork(operators=5, hosts=3, state_dir=tmp_path) as net:
        everyone = {a.lower() for a in net.operator_addresses}
        assert [op.name for op in net.operators] == [
            "host-0", "host-0", "host-2", "host-2", "operator-4"
        ]  # fmt: skip
        assert set(_served(net)) == everyone
        assert len({op.process.pid for op in net.operators if op.process}) == 3
        net.stop_operator(3)  # its host: keys 2 and 3, nothing else
        assert set(_served(net)) == everyone - {a.lower() for a in net.operator_addresses[2:4]}
        net.start_operator(3)
        net.start_operator(2)  # already running: no second process for the same keys
        assert set(_served(net)) == everyone
        assert net.operators[2].process is net.operators[3].process
        assert len({op.process.pid for op in net.operators if op.process}) == 3
        client = fresh_client()
        net.register_policy_client(client, NETCHECK, params())
        rpc = RPC(net, net.api_key)
        for _ in range(5):
            result = rpc.create(client, transfer(fresh_agent()))
            assert result["status"] == "success"
            assert len(set(signers(result))) == len(signers(result)) >= 4  # 66% of 5


def test_a_state_folder_keeps_its_operator_layout_so_no_key_forgets_what_it_held(
    tmp_path: Path,
) -> None:
    """Before the fix a state folder restarted with another ``hosts`` gave each key a fresh
    registry file (``operators/host-<i>.sqlite3`` instead of ``operator-<i>.sqlite3``): the
    host no longer knew the approvals its keys had used (nor the registrations they held),
    so a gateway that kept a used approval could spend it on a second task."""
    with ReferenceNetwork(operators=3, state_dir=tmp_path):
        pass
    now = int(time.time())
    used, first, second = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    for i in range(3):  # each operator used this approval for the first task
        registry = Registry(str(tmp_path / "operators" / f"operator-{i}.sqlite3"))
        assert registry.claim_approval(used, first, now + 600, now)
        registry.close()
    for hosts in (1, 2):
        with (
            pytest.raises(ConfigurationError, match="hosts"),
            ReferenceNetwork(operators=3, hosts=hosts, state_dir=tmp_path),
        ):
            pass
    assert not (tmp_path / "operators" / "host-0.sqlite3").exists()
    with ReferenceNetwork(operators=3, hosts=3, state_dir=tmp_path) as net:  # the same layout
        assert {op.name for op in net.operators} == {"operator-0", "operator-1", "operator-2"}
    registry = Registry(str(tmp_path / "operators" / "operator-0.sqlite3"))
    assert not registry.claim_approval(used, second, now + 600, now)  # still remembered
    registry.close()


# -- the challenger re-checks what hosts signed -----------------------------------------------


def test_the_challenger_checks_a_hosts_attestations_and_names_its_lying_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host of keys 0 and 1 that signs allow for a deny makes a 2-of-3 quorum on its own:
    its attestations verify like any other (the digest names no operator), so the
    challenger re-evaluates them, finds the lie and names both of the host's keys."""
    from agentguard.cli import main

    net = Net(tmp_path, HOST_AND_ONE, liar="h")
    honest_ids = [net.create(UNIT)["task_id"] for _ in range(3)]
    lied = net.create(50 * UNIT)  # max_per_tx is 10: the policy denies it
    assert lied["status"] == "success" and lied["attestation"]["decision"] == "allow"
    assert set(signers(lied)) == {a.lower() for a in ADDRESSES[:2]}
    net.close()
    operators = [a for address in ADDRESSES[:3] for a in ("--operator", address)]
    assert main(["challenge", "run", "--state", net.state_path, *operators, "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    found = {f["task_id"]: f["wrong_signers"] for f in summary["findings"]}
    assert found == {lied["task_id"]: sorted(a.lower() for a in ADDRESSES[:2])}
    assert summary["checked"] == 4 and not set(honest_ids) & set(found)
