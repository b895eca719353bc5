"""The fan-out's wake-ups (``_fanout._Arrivals``) and the link queue's futures
(``LinkQueue.submit``), against operators that answer honestly, late, never, with a bad
signature or with another task's signed answer, in seeded mixes: a task is attested iff a
quorum of honest answers arrives in time, with only honest operators' signatures over this
task's own digest; every queue ends idle (no message counted in flight for ever, nothing
left queued); and two racing identical requests are one task, counted once."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from agentguard._attestation import attestation_digest, recover_signer
from agentguard.network.gateway._batching import LinkQueue
from tests.network.test_gateway_memory import CLIENT
from tests.redteam._s9_net import KEY, Net, _Direct, agent, params

KINDS = ("ok", "late", "lost", "bad_signature", "other_task")
TIMEOUT = 0.3


class _Scripted:
    """An operator link's HTTP client that answers as ``kinds[task]`` says."""

    def __init__(self, net: Net, index: int, kinds: dict[str, str], stolen: list[Any]) -> None:
        self._direct = _Direct(net, index)
        self._kinds, self._stolen, self.index = kinds, stolen, index

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        request = json.loads(body)
        if request["method"] == "agentguard_evaluateBatch":  # each task as its own message
            answers = []
            for task in request["params"]["tasks"]:
                one = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x", "params": task})
                _, reply = await self.post(one.encode(), timeout)
                answers.append({"task_id": task["task_id"], **json.loads(reply)})
                answers[-1].pop("jsonrpc"), answers[-1].pop("id")
            result = {"answers": answers}
            return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()
        kind = self._kinds[request["params"]["intent"]["from"].lower()][self.index]
        if kind == "lost":  # as the HTTP client gives up on it
            await asyncio.sleep(timeout)
            raise TimeoutError
        if kind == "late":
            await asyncio.sleep(TIMEOUT / 4)
        status, reply = await self._direct.post(body, timeout)
        answer = json.loads(reply)
        result = answer.get("result")
        if isinstance(result, dict) and kind == "bad_signature":
            signature = bytearray.fromhex(result["signature"][2:])
            signature[5] ^= 1
            result["signature"] = "0x" + signature.hex()
        elif isinstance(result, dict) and kind == "other_task":
            if self._stolen:  # a valid signature, but over another task's digest
                result["signature"] = self._stolen[0]
            else:
                self._stolen.append(result["signature"])
                result["signature"] = "0x" + "11" * 65
        return status, json.dumps(answer).encode()

    def close(self) -> None:
        return None


@pytest.fixture
def net(tmp_path: Path) -> Any:
    net = Net(tmp_path)
    yield net
    net.close()


def _signers(net: Net, answer: dict[str, Any]) -> list[str]:
    """The operators whose signatures recover over this task's own digest (all must)."""
    attestation = answer["attestation"]
    digest = attestation_digest(
        chain_id=8453,
        policy_client=bytes.fromhex(CLIENT[2:]),
        task_id=bytes.fromhex(attestation["task_id"][2:]),
        policy_id=bytes.fromhex(attestation["policy_id"][2:]),
        intent_hash=bytes.fromhex(attestation["intent_hash"][2:]),
        allow=attestation["decision"] == "allow",
        expires_at=attestation["expires_at"],
        tier=attestation["tier"],
    )
    out = []
    for entry in attestation["signatures"]:
        signer = recover_signer(digest, bytes.fromhex(entry["signature"][2:]))
        assert "0x" + signer.hex() == entry["operator"].lower()
        out.append(entry["operator"].lower())
    return out


def test_seeded_mixes_of_hostile_and_lost_answers(net: Net) -> None:
    rng = random.Random(1313)
    kinds: dict[str, list[str]] = {}
    stolen: list[Any] = []
    links = net.gateway.operators.links
    for i, link in enumerate(links):
        link.http = _Scripted(net, i, kinds, stolen)  # type: ignore[assignment]
    addresses = [link.address.lower() for link in links]
    jobs = []
    for n in range(40):
        mix = [rng.choice(KINDS) for _ in links]
        kinds[agent(n).lower()] = mix
        jobs.append((n, mix))

    async def one(n: int) -> dict[str, Any]:
        request = {**params(n), "timeout": TIMEOUT}
        answer = await net.gateway.dispatch(KEY, f"mix-{n}", "newt_createTask", request)
        result: dict[str, Any] = json.loads(answer.data)
        return result

    async def all_of_them() -> list[dict[str, Any]]:
        answers = [await one(n) for n, _ in jobs]  # one at a time: each has its own deadline
        await asyncio.sleep(TIMEOUT)  # the lost calls are given up by now
        return answers

    answers = net.run(all_of_them())
    attested = refused = 0
    for (_, mix), answer in zip(jobs, answers, strict=True):
        honest = {addresses[i] for i, kind in enumerate(mix) if kind in ("ok", "late")}
        if len(honest) >= 2:
            assert answer["status"] == "success", (mix, answer["error"])
            signers = _signers(net, answer)
            assert len(signers) >= 2 and len(set(signers)) == len(signers)
            assert set(signers) <= honest, mix  # no liar's signature was ever attested
            attested += 1
        else:
            assert answer["status"] == "failed" and answer["attestation"] is None, mix
            assert "quorum_not_reached" in answer["error"]
            refused += 1
    assert attested > 5 and refused > 5
    queues: list[LinkQueue] = list(net.gateway.operators._queues.values())
    assert all(q._busy == 0 and not q._queue for q in queues)  # nothing left in flight


def test_a_call_given_up_before_it_started_leaves_its_queue_idle(net: Net) -> None:
    """The queue counts a message sent at once from its submit: a call cancelled before its
    task first ran must still give that count back, or the link would queue for ever."""
    queue = next(iter(net.gateway.operators._queues.values()))

    async def scenario() -> tuple[int, int]:
        net.gateway.operators.links[0].http = _Scripted(net, 0, {}, [])  # type: ignore[assignment]
        from agentguard.network.gateway._operators import Bodies

        client = net.gateway.clients.get(CLIENT)
        assert client is not None
        call = queue.submit(client.code_hash, Bodies(client, b'"x":1', b"\x01" * 32), 1.0)
        during = queue._busy
        call.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return during, queue._busy

    during, after = net.run(scenario())
    assert (during, after) == (1, 0)


def test_two_racing_identical_requests_are_one_task(net: Net) -> None:
    async def race() -> list[bytes]:
        request = params(7)
        calls = [net.gateway.dispatch(KEY, "same-id", "newt_createTask", request) for _ in "ab"]
        return [a.data for a in await asyncio.gather(*calls)]

    first, second = net.run(race())
    assert first == second and json.loads(first)["status"] == "success"
    assert net.spent(agent(7)) == (1, 1_000_000)
