"""Red team of session 9's gateway answer path: the answer joined from per-client fragments
(``PreEncoded``), votes read by the fast signature path and an address table, and the
idempotency cache that rebuilds an allow's retry from the durable record.

Each attack runs a real ``Gateway`` on a real SQLite state with real operators
(``tests/redteam/_s9_net.py``). Held: every test asserts the refusal or the exact bytes and
totals the slow path would give.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import recover_signer as slow_recover
from agentguard._exceptions import MalformedSignature
from agentguard.network._rpc import RPCError, encode
from agentguard.network.gateway import Gateway
from agentguard.network.gateway._fanout import _signature_bytes
from agentguard.network.gateway._fanout import recover_signer as fast_recover
from agentguard.network.registration import Registration
from agentguard.network.state import open_state
from agentguard.policies import load
from tests.network.test_gateway_memory import CLIENT, OWNER, PARAMS, USDC
from tests.redteam._s9_net import KEY, OTHER_KEY, UNIT, Net, _Direct, agent, params


@pytest.fixture
def net(tmp_path: Path) -> Any:
    network = Net(tmp_path)
    yield network
    network.close()


def _same_everywhere(net: Net, rpc_id: str, request: dict[str, Any], first: bytes) -> None:
    """The first answer is the encoding of its own dict, of the durable record, of a cached
    retry, of a retry after the cache forgot it, and of a retry on a restarted gateway."""
    result = json.loads(first)
    assert encode(result) == first
    stored = net.state.stored_result(result["task_id"])
    assert stored is not None and encode(stored) == first
    assert net.create(rpc_id, request) == first  # the cache: rebuilt from the record
    net.gateway.idempotency.drop((KEY.sha256, rpc_id))
    assert net.create(rpc_id, request) == first  # the durable record, found by task id
    restarted = Gateway(net.gateway.config, open_state(net.path))
    try:
        again = net.run(restarted.dispatch(KEY, rpc_id, "newt_createTask", request))
        assert again.data == first
    finally:
        net.run(restarted.close())
        restarted.state.close()


HOSTILE_SIGNATURES: dict[str, Callable[[str], str]] = {
    "v 27/28": lambda s: s,
    "uppercase hex": lambda s: "0x" + s[2:].upper(),
    "no 0x": lambda s: s[2:],
}
# The same signature spelled in ways the vault (v 0/1: OpenZeppelin's ECDSA refuses them) or a
# strict reader (a final newline) would not take: a vote so spelled does not count.
REFUSED_SIGNATURES: dict[str, Callable[[str], str]] = {
    "v 0/1": lambda s: "0x" + s[2:-2] + f"{int(s[-2:], 16) - 27:02x}",
    "trailing newline": lambda s: s + "\n",
}


@pytest.mark.parametrize("shape", sorted(HOSTILE_SIGNATURES))
def test_odd_but_valid_signature_spellings_give_one_consistent_answer(net: Net, shape: str) -> None:
    """What the slow path accepted, the fast one accepts, and the answer carries the normal
    form; the bytes are the same from every source."""
    spell = HOSTILE_SIGNATURES[shape]
    net.tamper = lambda i, reply: {**reply, "signature": spell(reply["signature"])}
    request = params(1)
    first = net.create(f"sig-{shape}", request)
    result = json.loads(first)
    assert result["attestation"]["decision"] == "allow", result
    for entry in result["attestation"]["signatures"]:
        assert entry["signature"] == entry["signature"].lower().strip()
        assert len(entry["signature"]) == 132
    _same_everywhere(net, f"sig-{shape}", request, first)
    assert net.spent(agent(1)) == (1, UNIT)


@pytest.mark.parametrize("shape", sorted(REFUSED_SIGNATURES))
def test_a_vote_spelled_as_the_vault_would_refuse_does_not_count(net: Net, shape: str) -> None:
    spell = REFUSED_SIGNATURES[shape]

    def tamper(i: int, reply: dict[str, Any]) -> Any:
        return {**reply, "signature": spell(reply["signature"])} if i == 0 else reply

    net.tamper = tamper
    request = params(1)
    first = net.create(f"refused-{shape}", request)
    result = json.loads(first)
    assert result["attestation"]["decision"] == "allow", result
    signers = {s["operator"] for s in result["attestation"]["signatures"]}
    assert net.operators[0].address not in signers
    assert [(e["operator_address"], e["error_type"]) for e in result["operator_errors"]] == [
        (net.operators[0].address, "bad_signature")
    ]
    _same_everywhere(net, f"refused-{shape}", request, first)
    assert net.spent(agent(1)) == (1, UNIT)


REASONS = [
    ["é", "日本", "\u2028\u2029", '"quoted" \\ back', "</script>", "\x00\x1f\x7f", "🦀" * 3],
    ["x" * 2000] * 40,  # cut to 32 reasons of 500 characters
    [],
]


@pytest.mark.parametrize("n", range(len(REASONS)))
def test_hostile_reasons_are_encoded_like_the_dict(net: Net, n: int) -> None:
    """The reasons a liar writes (not covered by its signature) go through the fragment
    joiner; the bytes must still be ``encode`` of the dict the record holds."""
    net.tamper = lambda i, reply: {**reply, "reasons": REASONS[n]}
    request = params(2)
    first = net.create(f"reasons-{n}", request)
    result = json.loads(first)
    assert result["attestation"]["decision"] == "allow"
    assert all(len(r) <= 500 for r in result["attestation"]["reasons"])
    assert len(result["attestation"]["reasons"]) <= 32
    _same_everywhere(net, f"reasons-{n}", request, first)


def test_a_lone_surrogate_in_reasons_is_refused_and_the_others_make_quorum(net: Net) -> None:
    def tamper(i: int, reply: dict[str, Any]) -> Any:
        if i != 0:
            return reply
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {**reply, "reasons": ["R"]}})
        return body.replace('"R"', '"\\ud800"').encode()

    net.tamper = tamper
    request = params(3)
    first = net.create("surrogate", request)
    result = json.loads(first)
    assert result["attestation"]["decision"] == "allow"
    signers = {s["operator"] for s in result["attestation"]["signatures"]}
    assert net.operators[0].address not in signers
    errors = result["operator_errors"]
    assert [(e["operator_address"], e["error_type"]) for e in errors] == [
        (net.operators[0].address, "invalid_response")
    ]
    _same_everywhere(net, "surrogate", request, first)  # an allow with operator errors


def test_a_vote_copied_from_another_operator_or_signed_by_a_stranger_is_refused(
    net: Net,
) -> None:
    """Operator 1 replays operator 0's signed reply, operator 2 signs with a key nobody
    registered: neither counts, so a 2-of-3 quorum fails and nothing is recorded."""
    stranger = PrivateKey(b"\x77" * 32)

    def tamper(i: int, reply: dict[str, Any]) -> Any:
        if i == 1:
            return net.operators[0].evaluate_and_sign(tamper.request)  # type: ignore[attr-defined]
        if i == 2:
            digest_holder = reply  # re-sign the same fields with a stranger's key
            raw = bytes.fromhex(digest_holder["signature"][2:])
            forged = stranger.sign_recoverable(raw[:32], hasher=None)  # any 65 bytes of its own
            return {**reply, "signature": "0x" + forged[:64].hex() + "1b"}
        return reply

    original_post = net.gateway.operators.links[1].http.post

    async def post(body: bytes, timeout: float) -> tuple[int, bytes]:
        tamper.request = json.loads(body)["params"]  # type: ignore[attr-defined]
        return await original_post(body, timeout)

    net.gateway.operators.links[1].http.post = post  # type: ignore[method-assign]
    net.tamper = tamper
    result = json.loads(net.create("liars", params(4)))
    assert result["status"] == "failed" and result["attestation"] is None
    errors = {e["operator_address"]: e["error_type"] for e in result["operator_errors"]}
    assert errors == {
        net.operators[1].address: "bad_signature",
        net.operators[2].address: "bad_signature",
    }
    assert net.spent(agent(4)) == (0, 0)
    assert net.state.stored_result(result["task_id"]) is None


@pytest.mark.parametrize("v", [0, 1, 27, 28, 2, 26, 29, 255])
def test_fast_recovery_refuses_and_accepts_exactly_what_the_slow_one_does(v: int) -> None:
    key = PrivateKey(b"\x33" * 32)
    digest = bytes(range(32))
    signature = bytearray(key.sign_recoverable(digest, hasher=None))
    signature[64] = v
    outcomes: list[Any] = []
    for recover in (slow_recover, fast_recover):
        try:
            outcomes.append(recover(digest, bytes(signature)))
        except MalformedSignature as exc:
            outcomes.append(exc.message)
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "text",
    [
        "0x" + "ab" * 65,
        "0x" + "AB" * 65,
        "0x" + "ab" * 64 + "zz",
        "0x" + "ab" * 64 + "\u0660\u0661",  # Arabic-Indic digits: isalnum, not hex
        "0x" + "ab" * 64 + "\uff21\uff22",  # fullwidth letters
        "0x" + "ab" * 65 + "\n",
        "0x" + "ab" * 65 + " ",
        "0X" + "ab" * 65,
        "0x" + "ab" * 64 + "a",
        "",
        "0x",
    ],
)
def test_the_signature_fast_read_refuses_what_the_regex_refused(text: str) -> None:
    from agentguard.network.gateway._params import HEX

    try:
        fast: Any = _signature_bytes(text)
    except MalformedSignature:
        fast = "refused"
    slow: Any = "refused"
    if HEX.match(text):
        try:
            slow = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            slow = "refused"
    assert fast == slow


def test_a_reused_id_with_other_params_is_refused_and_counts_nothing(net: Net) -> None:
    first = net.create("reuse", params(5))
    with pytest.raises(RPCError, match="already used for a different request"):
        net.create("reuse", params(5, amount=2 * UNIT))
    assert net.create("reuse", params(5)) == first
    assert net.spent(agent(5)) == (1, UNIT)


def test_the_same_id_from_two_keys_at_once_is_one_task_counted_once(net: Net) -> None:
    """Same policy client, intent and id from two API keys: one task id, one record; both
    keys get the same bytes (the loser of the race is answered from the record)."""

    async def both() -> list[bytes]:
        return list(
            await asyncio.gather(
                net.ask("twin", params(6), KEY),
                net.ask("twin", params(6), OTHER_KEY),
                net.ask("twin", params(6), KEY),
            )
        )

    answers = net.run(both())
    assert answers[0] == answers[1] == answers[2]
    assert net.spent(agent(6)) == (1, UNIT)


def test_racing_tasks_never_pass_the_window_cap(net: Net) -> None:
    """agent_spend's cap is 12 USDC a day; twelve concurrent 5 USDC tasks (distinct ids):
    at most two are allowed, and the books, the file and a restart agree."""

    async def flood() -> list[bytes]:
        return list(
            await asyncio.gather(*(net.ask(f"race-{n}", params(7, 5 * UNIT)) for n in range(12)))
        )

    answers = [json.loads(a) for a in net.run(flood())]
    allowed = [a for a in answers if (a.get("attestation") or {}).get("decision") == "allow"]
    assert 1 <= len(allowed) <= 2
    assert net.spent(agent(7)) == (len(allowed), 5 * UNIT * len(allowed))
    reopened = open_state(net.path)  # a restart: the books rebuilt from the file
    try:
        totals = reopened.totals(
            policy_client=CLIENT, agent=agent(7), windows=(86400,), now=int(net.gateway._clock())
        )
    finally:
        reopened.close()
    assert totals[86400].count == len(allowed)
    assert totals[86400].spent.get(USDC.lower(), 0) == 5 * UNIT * len(allowed)


def test_flooding_the_cache_does_not_give_a_second_attestation(tmp_path: Path) -> None:
    """A tiny cache (one entry) flooded by other ids: the retry of an evicted allow is
    answered from the durable record, never evaluated and signed again."""
    network = Net(tmp_path, idempotency_bytes=1)
    try:
        first = network.create("victim", params(8))
        asked = 0

        def count(i: int, reply: dict[str, Any]) -> Any:
            nonlocal asked
            asked += 1
            return reply

        for n in range(20):
            network.create(f"flood-{n}", params(100 + n))
        network.tamper = count
        assert network.create("victim", params(8)) == first
        assert asked == 0
        assert network.spent(agent(8)) == (1, UNIT)
    finally:
        network.close()


def test_a_re_registration_with_new_params_changes_the_fragments(net: Net) -> None:
    """The joined answer reads the policy client's params, expiry and policy id from
    fragments kept per client: after a re-registration (new params, new expiry, a new
    version) the answer must carry the new ones, exactly as ``encode`` of its dict."""
    before = json.loads(net.create("v1", params(9)))
    new_params = {**PARAMS, "max_per_tx": {k: "4000000" for k in PARAMS["max_per_tx"]}}
    registration = Registration.sign(
        OWNER,
        policy_client=before["task"]["policyClient"],
        policy=load("agent_spend"),
        params=new_params,
        expire_after=120,
        chain_id=8453,
        version=2,
    )
    net.gateway.register({"registration": registration.to_json(), "policy": "agent_spend"})
    raw = net.create("v2", params(10))
    after = json.loads(raw)
    assert encode(after) == raw
    config = after["task_response"]["policy_config"]
    assert config["expireAfter"] == 120
    assert config["policyParams"] != before["task_response"]["policy_config"]["policyParams"]
    assert after["attestation"]["policy_id"] == "0x" + registration.policy_id.hex()
    assert after["attestation"]["policy_id"] != before["attestation"]["policy_id"]
    assert after["expiration"] - after["timestamp"] == 120


def test_the_cap_edge_is_exact_and_survives_a_restart(net: Net) -> None:
    """12 USDC a day: 5 + 5 + 2 reach it exactly (allowed), one more atomic unit does not,
    also after a restart rebuilds the books from the file."""
    for n, amount in enumerate((5 * UNIT, 5 * UNIT, 2 * UNIT)):
        answer = json.loads(net.create(f"edge-{n}", params(11, amount)))
        assert answer["attestation"]["decision"] == "allow", n
    over = json.loads(net.create("edge-over", params(11, 1)))
    assert over["attestation"]["decision"] == "deny"
    assert net.spent(agent(11)) == (3, 12 * UNIT)
    restarted = Gateway(net.gateway.config, open_state(net.path))
    for i, link in enumerate(restarted.operators.links):
        link.http = _Direct(net, i)  # type: ignore[assignment]
    try:
        again = json.loads(
            net.run(restarted.dispatch(KEY, "edge-over-2", "newt_createTask", params(11, 1))).data
        )
        assert again["attestation"]["decision"] == "deny"
    finally:
        net.run(restarted.close())
        restarted.state.close()
