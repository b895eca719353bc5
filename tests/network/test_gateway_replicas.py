"""Two real gateway processes behind one PostgreSQL, with the same operators and API keys.

Many concurrent clients race one policy client's daily cap through both replicas: exactly as
many units are allowed as the cap holds. A client registered through replica 1 is usable
through replica 2, and replica 2 answers a retry of replica 1's task with the same answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard.network.gateway._registry import CLIENT_REFRESH
from agentguard.network.launcher import ReferenceNetwork
from tests.ledger.conftest import base_url
from tests.ledger.servers import ServerUnavailable, _free_port, start_postgres

from .conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

CAP_UNITS = 12


class Replica:
    def __init__(self, config: Path, logs: Path, name: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/rpc"
        self.log = (logs / f"{name}.log").open("ab")
        argv = ["-m", "agentguard.network.gateway", "--config", str(config)]
        self.proc = subprocess.Popen(
            [sys.executable, *argv, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"replica exited with {self.proc.returncode}"
            try:
                if httpx.get(self.url.replace("/rpc", "/health"), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("replica did not become healthy")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _config(net: ReferenceNetwork, state_db: str, path: Path) -> Path:
    """The network's gateway config with its state in ``state_db``."""
    config = json.loads(net.config_file.read_text())
    config["gateway"]["state_db"] = state_db
    config["policy_clients"] = []
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Any]:
    url = f"{base_url('postgres', request)}?namespace=g{uuid.uuid4().hex[:16]}"
    with ReferenceNetwork(
        operators=3, threshold_percentage=66, timeout=10.0, startup_timeout=180.0
    ) as net:
        folder = tmp_path_factory.mktemp("replicas")
        path = _config(net, url, folder / "gateway.json")
        started = [Replica(path, folder, f"replica-{i}") for i in range(2)]
        try:
            for replica in started:
                replica.wait()
            yield net, started
        finally:
            for replica in started:
                replica.stop()


def _call(url: str, key: str, method: str, params: Any, rpc_id: str | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": rpc_id or str(uuid.uuid4()), "method": method}
    response = httpx.post(
        url,
        json={**body, "params": params},
        headers={"authorization": f"Bearer {key}"},
        timeout=60,
    )
    return response.json()


def _create(url: str, key: str, client: str, agent: str, rpc_id: str | None = None) -> Any:
    request = {"policy_client": client, "intent": transfer(agent).wire(), "timeout": 10}
    return _call(url, key, "newt_createTask", request, rpc_id)


def test_replicas_share_clients_totals_and_answers(replicas: Any) -> None:
    net, (one, two) = replicas
    client, agent = fresh_client(), fresh_agent()
    signed = net.sign_registration(client, NETCHECK, params(daily_cap=CAP_UNITS * UNIT))
    registered = _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    assert "result" in registered, registered
    # registered through replica 1, used first through replica 2
    first_id = str(uuid.uuid4())
    first = _create(two.url, net.api_key, client, agent, first_id)
    assert first["result"]["attestation"]["decision"] == "allow", first
    # a retry of that task through replica 1 gets the same answer, counted once
    again = _create(one.url, net.api_key, client, agent, first_id)
    assert again["result"] == first["result"]

    answers: list[Any] = []
    lock = threading.Lock()
    attempts = iter(range(3 * CAP_UNITS))

    def worker(index: int) -> None:
        url = (one, two)[index % 2].url
        while True:
            with lock:
                n = next(attempts, None)
            if n is None:
                return
            answer = _create(url, net.api_key, client, agent)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 3 * CAP_UNITS
    assert all("result" in a and a["result"]["status"] == "success" for a in answers), [
        a for a in answers if "result" not in a
    ][:2]
    decisions = [a["result"]["attestation"]["decision"] for a in answers]
    allowed_units = sum(
        int(a["result"]["task"]["intent"]["data"][-64:], 16) // UNIT
        for a in answers
        if a["result"]["attestation"]["decision"] == "allow"
    )
    # the first task took one unit of the cap; the race gets exactly the rest
    assert decisions.count("allow") == CAP_UNITS - 1
    assert allowed_units == CAP_UNITS - 1
    assert decisions.count("deny") == 2 * CAP_UNITS + 1


def test_bursts_through_both_replicas_never_pass_a_cap(replicas: Any) -> None:
    """Attack: release many requests at the same instant through both replicas, round after
    round, each round against a fresh agent whose cap holds ``ROOM`` units: exactly ``ROOM``
    are allowed per round. (With the advisory lock removed this test saw rounds allow more.)"""
    net, (one, two) = replicas
    client, rounds, room, workers = fresh_client(), 15, 2, 8
    signed = net.sign_registration(client, NETCHECK, params(daily_cap=room * UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    agents = [fresh_agent() for _ in range(rounds)]
    start = threading.Barrier(workers)
    allowed = [0] * rounds
    failures: list[Any] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        url = (one, two)[index % 2].url
        with httpx.Client(timeout=60) as http:
            for r, agent in enumerate(agents):
                start.wait()
                request = {"policy_client": client, "intent": transfer(agent).wire(), "timeout": 10}
                body = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "newt_createTask"}
                answer = http.post(
                    url,
                    json={**body, "params": request},
                    headers={"authorization": f"Bearer {net.api_key}"},
                ).json()
                with lock:
                    if "result" not in answer or answer["result"]["status"] != "success":
                        failures.append(answer)
                    elif answer["result"]["attestation"]["decision"] == "allow":
                        allowed[r] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert allowed == [room] * rounds


def test_a_database_outage_answers_errors_never_an_allow(replicas: Any, tmp_path: Path) -> None:
    """The replica's PostgreSQL stops: every task is answered with an error and no
    attestation; it starts again: the same replica allows again, with nothing repaired."""
    net, _ = replicas
    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL on this machine: {exc}")
    replica = Replica(_config(net, server.url, tmp_path / "gateway.json"), tmp_path, "alone")
    try:
        replica.wait()
        client, agent = fresh_client(), fresh_agent()
        signed = net.sign_registration(client, NETCHECK, params())
        assert "result" in _call(
            replica.url, net.admin_key, "agentguard_registerPolicyClient", signed
        )
        allowed = _create(replica.url, net.api_key, client, agent)
        assert allowed["result"]["attestation"]["decision"] == "allow"
        server.stop()
        for _ in range(3):
            down = _create(replica.url, net.api_key, client, agent)
            assert "result" not in down and "error" in down, down
        server.start()
        back = _create(replica.url, net.api_key, client, agent)
        assert back["result"]["attestation"]["decision"] == "allow", back
    finally:
        replica.stop()
        server.close()


def test_a_cap_lowered_through_one_replica_holds_on_the_other(replicas: Any) -> None:
    """The owner lowers a client's cap through replica 1 after replica 2 cached the client.
    Before replicas re-read a shared state's clients, replica 2 kept sending the old
    registration: the operators (holding the newer one) refused every task of the client
    there, and a gateway whose operators took the old one would have judged the old cap."""
    net, (one, two) = replicas
    client, agent = fresh_client(), fresh_agent()
    signed = net.sign_registration(client, NETCHECK, params(daily_cap=3 * UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    first = _create(two.url, net.api_key, client, agent)
    assert first["result"]["attestation"]["decision"] == "allow", first
    lowered = net.sign_registration(client, NETCHECK, params(daily_cap=UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", lowered)
    time.sleep(CLIENT_REFRESH + 0.5)
    after = _create(two.url, net.api_key, client, agent)
    assert after["result"]["status"] == "success", after
    assert after["result"]["attestation"]["decision"] == "deny"
    same = _create(one.url, net.api_key, client, agent)["result"]["attestation"]
    assert same["policy_id"] == after["result"]["attestation"]["policy_id"]  # the new params
