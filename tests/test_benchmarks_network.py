"""The network benchmark's own parts: the soak driver sends the SDK's request with a fresh id
and amount each time and reads what the gateway answers, the per-process CPU split adds up to
the all-process figure, and ``--profile`` writes and prints a profile per process. Figures are
never asserted: benchmarks never fail on a number."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _soak_driver  # noqa: E402  (benchmarks/ is not a package)
import bench_network  # noqa: E402
import report  # noqa: E402

from agentguard import NewtonGateway  # noqa: E402

KEY = "0x" + "be" * 20


def test_the_driver_sends_the_sdks_own_request_with_a_fresh_id_and_amount_each() -> None:
    """A soak whose requests repeated an id would hit the gateway's idempotency (and measure
    nothing); one whose body differed from the SDK's would measure another path."""
    path, template = _soak_driver.capture_request(
        lambda url: NewtonGateway(url, policy_client=KEY, api_key="k")
    )
    assert path.endswith("/rpc")
    sent = json.loads(template)
    assert sent["method"] == "newt_createTask" and sent["params"]["policy_client"] == KEY
    made = [json.loads(b) for b in _soak_driver.bodies(template, [1, 2, 3])]
    assert len({m["id"] for m in made}) == 3 and sent["id"] not in {m["id"] for m in made}
    for amount, m in zip([1, 2, 3], made, strict=True):
        assert m["params"]["intent"]["data"].endswith(f"{amount:064x}")
        m["params"]["intent"]["data"] = sent["params"]["intent"]["data"]
        assert m["params"] == sent["params"]  # nothing else changed


@pytest.mark.parametrize("chunked", [False, True])
def test_the_driver_counts_results_errors_and_checked_denials(chunked: bool) -> None:
    """Every answer is checked to be a JSON-RPC result; an error or a 500 counts as failed;
    one answer in 100 is decoded and a deny there is counted (the soak's notes say so)."""
    allow = b'{"jsonrpc":"2.0","id":"x","result":{"status":"success","attestation":{"decision":"allow"}}}'
    deny = allow.replace(b"allow", b"deny")
    error = b'{"jsonrpc":"2.0","id":"x","error":{"code":-32602,"message":"no"}}'
    template = json.dumps(
        {"jsonrpc": "2.0", "id": "u", "params": {"amount": f"{_soak_driver.MARK:064x}"}}
    ).encode()

    async def main() -> dict[str, int]:
        seen = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal seen
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen += 1
                body = deny if seen == 1 else error if seen == 2 else allow
                status = b"500 Internal Server Error" if seen == 3 else b"200 OK"
                if chunked:
                    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                    framing = b"Transfer-Encoding: chunked"
                else:
                    payload, framing = body, b"Content-Length: %d" % len(body)
                writer.write(b"HTTP/1.1 " + status + b"\r\n" + framing + b"\r\n\r\n" + payload)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _soak_driver.drive(
                f"http://127.0.0.1:{port}", "k", ("/rpc", template), range(0, 250), 1
            )

    counts = asyncio.run(main())
    # answer 1 (the first checked one, amount 0) is a deny; 2 an error; 3 an HTTP 500
    assert counts == {"n": 248, "failed": 2, "denied": 1}


def _concurrent(cpu: dict[str, float], n: int = 100) -> dict[str, Any]:
    return {
        "n": n,
        "failed": 0,
        "denied": 0,
        "signatures": 2 * n,
        "elapsed_s": 1.0,
        "cpu_client_s": cpu["client"],
        "cpu_network_s": sum(v for k, v in cpu.items() if k != "client"),
        "cpu_s": cpu,
    }


def test_the_cpu_split_is_the_median_rounds_and_adds_up_to_the_headline() -> None:
    fig = bench_network.Figures()
    for scale in (3.0, 1.0, 2.0):  # the median round is the 2.0 one
        fig.add_concurrent(
            _concurrent(
                {"client": 0.03 * scale, "gateway": 0.1 * scale, "operator 1": 0.05 * scale}
            )
        )
    summary = fig.summary()
    total = summary["CPU per authorization under load, all processes (ms)"]
    assert total == pytest.approx(3.6)
    parts = ("client process", "gateway", "operators, together")
    assert sum(summary[f"of which the {p} (ms)"] or 0 for p in parts) == pytest.approx(total)
    row = bench_network.split_rows("s", {"current": fig})[0]
    assert row["all processes"] == pytest.approx(total) and row["each operator"] == [1.0]
    assert summary["signatures per attestation"] == 2.0


def test_scaling_sets_the_same_run_ratio_beside_the_setups_measured_apart() -> None:
    cpu = "CPU per authorization under load, all processes (ms)"
    rows = [
        {"setup": "3 operators, 2 checks", "figure": cpu, "current": 2.0},
        {"setup": "3 operators, 13 keys", "figure": cpu, "current": 5.0},
        {"setup": "7 operators, 2 checks", "figure": cpu, "current": 8.0},
    ]
    apart = bench_network.scaling(rows, ["current"])
    assert [r["current / 3 operators"] for r in apart] == [1.0, 2.5, 4.0]
    assert all("current, same run: CPU (ms)" not in r for r in apart)
    same = bench_network.scaling(rows, ["current"], {3: 3.0, 7: 6.3})
    assert [r["current, same run: CPU (ms)"] for r in same] == [3.0, None, 6.3]
    assert [r["current, same run: / 3 operators"] for r in same] == [1.0, None, 2.1]
    assert [r["linear bound"] for r in same] == [1.0, None, 2.5]


def test_the_scaling_target_is_judged_on_the_same_run_ratio_when_there_is_one() -> None:
    cpu, X = report.CPU, report.X
    rows = [
        {"setup": "3 operators, 2 checks", "figure": cpu, "current": 2.0, "baseline": 4.0},
        {"setup": "7 operators, 2 checks", "figure": cpu, "current": 6.0, "baseline": 14.0},
    ]

    def seven(scaling: Any) -> tuple[str, str, str, bool | None]:
        found = [t for t in report.network_targets(rows, scaling) if "with 7 operators" in t[0]]
        assert len(found) == 1
        return found[0]

    _, measured, base, met = seven(None)  # 3.00x apart, over 2.50x
    assert (measured, base, met) == (f"3.00{X} of 3 operators'", f"3.50{X}", False)
    same = bench_network.scaling(rows, ["current"], {3: 2.0, 7: 4.6})
    _, measured, base, met = seven(same)
    assert measured == f"2.30{X} of 3 operators', same run (3.00{X} measured apart)"
    assert (base, met) == (f"3.50{X}", True)
    _, _, _, met = seven(bench_network.scaling(rows, ["current"], {3: 2.0, 7: 5.2}))
    assert met is False  # 2.60x in the same run: missed


def test_profile_writes_and_prints_one_profile_per_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_network.py"), "--quick", "--profile", str(tmp_path)],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    roles = {p.name.split("-")[0] for p in tmp_path.glob("*.prof")}
    assert roles >= {"client", "gateway", "operator"}
    for header in ("== client", "== gateway", "== operator 1", "== operator 3"):
        assert header in done.stdout
    # the operator's hot path (checks and evaluation, ``Operator._evaluate``) is in its top list
    assert "network/operator.py" in done.stdout and "(_evaluate)" in done.stdout


def test_sampled_profile_is_the_cpu_split_by_samples(tmp_path: Path) -> None:
    """``--profile-mode sample``: pstats files whose own times add up to the process's CPU
    while profiled (every sample holds the outermost frame, so its inclusive time is that
    whole), with the gateway's task flow in them."""
    import pstats

    command = [sys.executable, str(BENCH / "bench_network.py"), "--profile", str(tmp_path)]
    command += ["--profile-mode", "sample", "--requests", "400", "--concurrency", "8"]
    done = subprocess.run(command, cwd=BENCH.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(sample, which adds its own cost)" in done.stdout
    for header in ("== client", "== gateway", "== operator 1", "== operator 3"):
        assert header in done.stdout
    [gateway] = tmp_path.glob("gateway-*.prof")
    stats = pstats.Stats(str(gateway)).stats  # type: ignore[attr-defined]
    own = sum(v[2] for v in stats.values())
    assert own > 0
    assert max(v[3] for v in stats.values()) == pytest.approx(own)
    flow = [v for (_, _, name), v in stats.items() if name == "_create_task"]
    assert flow and 0 < flow[0][3] < own
