"""``agentguard_gatewayStats``: the gateway's own counts of tasks, operator evaluations and
widenings (what ``bench_network`` reports as evaluations per authorization), for the admin
key only: another tenant's traffic is nobody else's business."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentguard.network._rpc import UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway._fanout import FanOut
from tests.redteam._s9_net import KEY, Net, params


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(FanOut, "hedge_delay", lambda self: 60.0)  # never slow: no timings
    net = Net(tmp_path)
    yield net
    net.close()


def _stats(net: Net, key: ApiKeyEntry = KEY) -> dict[str, Any]:
    found: dict[str, Any] = net.run(net.gateway.dispatch(key, "s", "agentguard_gatewayStats", {}))
    return found


def test_a_healthy_quorum_costs_two_evaluations_and_no_widening(net: Net) -> None:
    before = _stats(net)
    for i in range(5):
        net.create(f"t{i}", params(i))
    after = _stats(net)
    assert after["tasks"] - before["tasks"] == 5
    assert after["evaluations"] - before["evaluations"] == 10  # 2 of 3, each task
    assert after["messages"] - before["messages"] == 10  # one after another: none batched
    assert after["widened"] == before["widened"]


def test_a_failing_operator_widens_and_is_counted(net: Net) -> None:
    failed: list[int] = []

    def broken(index: int, reply: dict[str, Any]) -> Any:
        if index:
            return reply
        failed.append(index)
        return b"not json"

    net.tamper = broken
    before = _stats(net)
    for i in range(3):  # the rotation asks operator 0 first in some of them
        net.create(f"t{i}", params(i))
    after = _stats(net)
    widened = after["widened"]["failure"] - before["widened"]["failure"]
    assert widened == len(failed) > 0  # each failure asked the one operator not yet asked
    assert after["evaluations"] - before["evaluations"] == 3 * 2 + widened


def test_a_tenant_key_may_not_read_the_gateway_counts(net: Net) -> None:
    tenant = ApiKeyEntry(sha256="22" * 32)
    with pytest.raises(RPCError) as caught:
        _stats(net, tenant)
    assert caught.value.code == UNAUTHORIZED
