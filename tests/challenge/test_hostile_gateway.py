"""The gateway a challenger reads from may lie. Only what the signatures and hashes prove is
used: an edited decision field hides nothing, signatures that do not recover to a known
operator blame no one (they are reported), a registration that is not the attested
configuration is not used, and a malformed answer is a clean error."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address, sign_attestation
from agentguard.cli import main
from agentguard.network.state import open_state, policy_material
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

from .inprocess import InProcessNetwork

Edit = Callable[[list[dict[str, Any]]], list[Any]]


@pytest.fixture(scope="module")
def lied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessNetwork, str]]:
    """Two lying operators of three (in process): one honest allow, then a deny allowed."""
    net = InProcessNetwork(tmp_path_factory.mktemp("net"), liars=2)
    client = fresh_client()
    net.register(client, NETCHECK, params())
    agent = fresh_agent()
    assert net.create(client, transfer(agent, UNIT))["attestation"]["decision"] == "allow"
    assert net.create(client, transfer(agent, 50 * UNIT))["attestation"]["decision"] == "allow"
    yield net, client
    net.close()


class _Gateway(BaseHTTPRequestHandler):
    state_path = ""
    edit: Edit = staticmethod(lambda tasks: list(tasks))
    registration: Callable[[dict[str, Any]], Any] = staticmethod(lambda answer: answer)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        state = open_state(self.state_path)
        try:
            if request["method"] == "agentguard_tasks":
                after = request["params"].get("after", 0)
                tasks = [t.to_json() for t in state.tasks(after=after)]
                result: Any = {"tasks": self.edit(tasks), "next": 0}
            else:
                found = state.policy_version(request["params"]["policy_id"])
                assert found is not None
                result = self.registration(
                    {"registration": found.registration.to_json(),
                     "policy": policy_material(found.policy)}
                )  # fmt: skip
        finally:
            state.close()
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(net: InProcessNetwork, edit: Edit, registration: Any = None) -> Iterator[str]:
    handler = type(
        "Handler", (_Gateway,), {
            "state_path": net.state_path, "edit": staticmethod(edit),
            "registration": staticmethod(registration or (lambda answer: answer)),
        },
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _challenge(
    net: InProcessNetwork,
    edit: Edit,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    registration: Any = None,
) -> tuple[int, dict[str, Any]]:
    pinned = [a for op in net.operator_addresses for a in ("--operator", op)]
    for url in _serve(net, edit, registration):
        code = main(
            ["challenge", "run", "--gateway", url, "--api-key", "k", *pinned, "--json", *extra]
        )
        out = capsys.readouterr()
        return code, json.loads(out.out) if code != 2 else {"error": out.err}
    raise AssertionError("unreachable")


def _liars(net: InProcessNetwork) -> list[str]:
    return sorted(a.lower() for a in net.operator_addresses[:2])


def test_an_honest_copy_finds_the_lie(
    lied: tuple[InProcessNetwork, str], capsys: pytest.CaptureFixture[str]
) -> None:
    net, _ = lied
    code, summary = _challenge(net, list, capsys)
    assert code == 1 and summary["checked"] == 2
    assert [f["wrong_signers"] for f in summary["findings"]] == [_liars(net)]


def test_an_edited_decision_field_hides_nothing(
    lied: tuple[InProcessNetwork, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway reports the lied task as a deny: what the operators signed is read from
    their signatures, and the record carries the attestation as they signed it."""

    def deny(tasks: list[dict[str, Any]]) -> list[Any]:
        for task in tasks:
            task["result"]["attestation"]["decision"] = "deny"
        return tasks

    code, summary = _challenge(net := lied[0], deny, capsys, "--out", str(tmp_path))
    assert code == 1 and [f["wrong_signers"] for f in summary["findings"]] == [_liars(net)]
    (record,) = summary["records_written"]
    assert main(["challenge", "verify", record]) == 0


def test_signatures_of_unknown_keys_blame_no_one(
    lied: tuple[InProcessNetwork, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway swaps in signatures of keys that are not operators (named as themselves,
    or under a real operator's name): reported as unverifiable, never a discrepancy."""
    net, _ = lied
    stranger = PrivateKey(b"\x77" * 32)

    def forge(tasks: list[dict[str, Any]]) -> list[Any]:
        for task in tasks:
            att = task["result"]["attestation"]
            fake = "0x" + sign_attestation(stranger, b"\x01" * 32).hex()
            att["signatures"] = [
                {"operator": operator_address(stranger), "signature": fake},
                {"operator": net.operator_addresses[0], "signature": fake},
            ]
        return tasks

    code, summary = _challenge(net, forge, capsys)
    assert code == 0 and summary["discrepancies"] == 0
    assert summary["unverifiable"] == 2
    assert all("no signature recovers" in f["unverifiable"] for f in summary["findings"])


def test_a_registration_that_is_not_the_attested_one_is_not_used(
    lied: tuple[InProcessNetwork, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway hands out a registration with looser params (signed by another key): its
    policy id is not the attestation's, so it is refused and nobody is blamed or cleared."""
    net, client = lied
    from agentguard.network.registration import Registration

    def looser(answer: dict[str, Any]) -> Any:
        other = Registration.sign(
            PrivateKey(b"\x78" * 32), policy_client=client, policy=NETCHECK,
            params=params(max_per_tx=100 * UNIT), expire_after=300, chain_id=8453, version=9,
        )  # fmt: skip
        return {**answer, "registration": other.to_json()}

    code, summary = _challenge(net, list, capsys, registration=looser)
    assert code == 0 and summary["discrepancies"] == 0 and summary["unverifiable"] == 2
    assert all("not the attestation's" in f["unverifiable"] for f in summary["findings"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda tasks: [{"seq": t["seq"], "result": "garbage"} for t in tasks],
        lambda tasks: [{"seq": t["seq"], "result": {"attestation": {}}} for t in tasks],
    ],
    ids=["result not an object", "result without a task"],
)
def test_garbage_tasks_are_skipped_and_reported(
    lied: tuple[InProcessNetwork, str], capsys: pytest.CaptureFixture[str], edit: Edit
) -> None:
    code, summary = _challenge(lied[0], edit, capsys)
    assert code == 0 and summary["checked"] == 0 and summary["skipped"] == 2


@pytest.mark.parametrize(
    "edit",
    [
        lambda tasks: [{**t, "seq": 5} for t in tasks],
        lambda tasks: "not a list",
        lambda tasks: [{**t, "seq": "1"} for t in tasks],
    ],
    ids=["cursor not increasing", "no list", "seq as text"],
)
def test_a_broken_task_list_is_a_clean_error(
    lied: tuple[InProcessNetwork, str], capsys: pytest.CaptureFixture[str], edit: Edit
) -> None:
    code, summary = _challenge(lied[0], edit, capsys)
    assert code == 2 and summary["error"].startswith("agentguard: ")
    assert "Traceback" not in summary["error"]
