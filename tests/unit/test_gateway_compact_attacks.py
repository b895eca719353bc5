"""Red team on the compact ``newt_createTask`` answer (``test_gateway_compact`` holds the
forward direction: the same hostile change to a field both forms hold reads the same).

Here the other direction: whatever a gateway puts in the fields only the whole answer holds
(Newton's echo of the task, the intent, the policy configuration) changes nothing the client
makes of it, so no check was lost by not receiving them. And the flag never goes to Newton's
own gateways, however their URL is spelled."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentguard import _gateway
from agentguard.network.gateway._results import compact_result

from ..challenge.test_record_attacks import _paths
from .test_gateway_compact import HOSTILE, _answers, _change, _read


def _dropped(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The paths of the whole answer that the compact one neither holds nor leads to."""
    kept = set(_paths(compact_result(answer)))
    return [path for path in _paths(answer) if path not in kept]


@pytest.mark.parametrize("seed", range(3))
def test_what_only_the_whole_answer_holds_decides_nothing(seed: int) -> None:
    rng = random.Random(2000 + seed)
    tried = set()
    for answer in _answers(seed, 60):
        expected = _read(compact_result(answer))
        assert expected == _read(answer)
        dropped = _dropped(answer)
        for _ in range(12):
            path = rng.choice(dropped)
            delete = rng.random() < 0.25 and not isinstance(path[-1], int)
            value = rng.choice(HOSTILE)
            assert _read(_change(answer, path, value, delete)) == expected, (path, value)
            tried.add(path[:2])
    # the echo of the task, the intent and the policy configuration were all reached
    assert {("task", "intent"), ("task_response", "intent")} <= tried
    assert ("task_response", "policy_config") in tried


@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.newton.xyz",
        "https://gateway.newton.xyz./rpc",  # a fully qualified name: the same host
        "https://GATEWAY.Newton.XYZ/rpc",
        "https://gateway.testnet.newton.xyz:443/",
        "https://user@gateway.newton.xyz/rpc",
        "https://gateway.newt.foundation.",
    ],
)
def test_every_spelling_of_newtons_host_is_newtons(url: str) -> None:
    assert _gateway.is_newton_url(url)


@pytest.mark.parametrize(
    "url", ["https://newton.xyz.example.com", "https://evilnewton.xyz", "http://127.0.0.1:9"]
)
def test_other_hosts_are_not_newtons(url: str) -> None:
    assert not _gateway.is_newton_url(url)


def test_connect_never_asks_newton_for_compact_answers_however_spelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway at Newton's host that answered the probe as a reference network (a lying
    proxy, or a man in the middle) still gets Newton's treatment: no compact flag, no
    bookkeeping calls, and no retry of a task whose answer was lost."""
    from agentguard import Guard, _guard

    offers = {"scheme": "ecdsa", "dedupes": True, "compact_answers": True}
    monkeypatch.setattr(_guard, "probe_network", lambda u, k: offers)
    for url in ("https://gateway.newton.xyz./", "https://Gateway.Testnet.Newton.xyz."):
        guard = Guard.connect(
            url,
            policy_client="0x" + "00" * 19 + "01",
            operators=["0x" + "11" * 20],
            policy_id="0x" + "22" * 32,
        )
        try:
            cfg = guard.authorizer._cfg
            assert (cfg.compact, cfg.dedupe, cfg.bookkeeping) == (False, False, False), url
            assert _gateway.COMPACT_PARAM not in _gateway._task_params(cfg, _intent(), None)
        finally:
            guard.close()


def _intent() -> Any:
    from agentguard import TransactionIntent

    return TransactionIntent(
        **{"from": "0x" + "11" * 20, "to": "0x" + "22" * 20, "value": 1}, chain_id=8453
    )
