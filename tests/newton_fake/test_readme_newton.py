"""The README's Newton block runs as written against the recorded (synthesized) Newton exchange,
and a recording tampered with in transit signs nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentguard.newton import BN254Certificate, Task, TaskResponse
from tests.newton_fake.recorded import API_KEY, load, readme_block, setup


def test_the_readme_newton_block_runs_as_written_against_the_recording() -> None:
    doc = load()
    with setup(doc) as s:
        done = s.run_block()
        assert done.returncode == 0, done.stderr[-3000:]
        task_id = doc["newt_createTask"]["response"]["result"]["task_id"]
        assert done.stdout.split() == ["newton-bls", task_id]
        # the block sent exactly the recorded request (the fake refuses any other), once
        [sent] = s.fake.calls("newt_createTask")
        assert sent["params"] == doc["newt_createTask"]["request"]["params"]
        assert all(h.get("authorization") == f"Bearer {API_KEY}" for h in s.fake.headers)


def test_the_block_shows_what_a_team_moving_to_newton_changes() -> None:
    block = readme_block()
    assert "https://gateway.newton.xyz/rpc" in block and "api_key=" in block
    assert "web3=base" in block and "operators=" not in block.replace("was operators=", "")


def test_the_recording_is_in_newtons_shape_and_says_it_is_synthesized() -> None:
    doc = load()
    assert "Synthesized, not captured" in doc["note"]
    result = doc["newt_createTask"]["response"]["result"]
    task, response = Task.parse(result["task"]), TaskResponse.parse(result["task_response"])
    assert set(result["task"]) >= {"taskId", "taskCreatedBlock", "quorumThresholdPercentage"}
    [data] = response.policy_task_data.policy_data
    assert data.policy_data_address != bytes(20) and data.expire_block > task.task_created_block
    cert = BN254Certificate.decode(bytes.fromhex(result["signature_data"][2:]))
    assert cert.message_hash == response.consensus_digest()


def _pay_more(result: dict[str, Any]) -> None:
    """The gateway changes the attested amount (in task and response alike), keeping the
    certificate: the local intent no longer matches, nor does the signed digest."""
    for part in (result["task"], result["task_response"]):
        data = part["intent"]["data"]
        part["intent"]["data"] = data[:-1] + ("1" if data[-1] != "1" else "2")


def _longer_life(result: dict[str, Any]) -> None:
    """The gateway stretches the signed lifetime (``expireAfter``) and the block expiry."""
    result["task_response"]["policy_config"]["expireAfter"] += 10**6
    result["expiration"] += 10**6


@pytest.mark.parametrize(
    ("tamper", "error"),
    [(_pay_more, "IntentMismatch"), (_longer_life, "VerificationError")],
    ids=["another amount", "longer lifetime"],
)
def test_a_tampered_recording_signs_nothing(tamper: Any, error: str) -> None:
    """The replayed answer is changed after the operators signed it: the block must stop at
    ``guard.authorize`` (no ticket, so ``sign_transaction`` is never reached)."""
    doc = copy.deepcopy(load())
    tamper(doc["newt_createTask"]["response"]["result"])
    with setup(doc) as s:
        done = s.run_block()
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith(f"agentguard._exceptions.{error}:")
