"""Every benchmark runs (tiny, ``--quick``), writes the report shape ``benchmarks/report.py``
renders, and renders. The figures themselves are never asserted: benchmarks never fail on a
number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402  (benchmarks/ is not a package)

SCRIPTS = sorted(BENCH.glob("bench_*.py"))
MACHINE = {"cpu", "cores", "ram_gib", "python", "load_start", "load_end", "date"}


def _scalar(value: Any) -> bool:
    if isinstance(value, list):
        return all(_scalar(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def run_quick(script: Path, tmp_path: Path) -> dict[str, Any]:
    if "--quick" not in script.read_text():
        pytest.skip(f"{script.name} has no --quick mode yet (its owner adds it)")
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_runs_quick_and_writes_the_report_shape(script: Path, tmp_path: Path) -> None:
    data = run_quick(script, tmp_path)
    name = script.stem.removeprefix("bench_")
    assert set(data) >= {"name", "command", "machine", "rows", "notes"}
    assert data["name"] == name
    assert (
        data["command"].startswith(".venv/bin/python benchmarks/")
        and "--json" not in data["command"]
    )
    assert set(data["machine"]) >= MACHINE
    assert isinstance(data["notes"], str)
    assert data["rows"] and all(isinstance(row, dict) for row in data["rows"])
    assert all(_scalar(v) for row in data["rows"] for v in row.values())
    section = report.BY_NAME.get(name) or report.Section(name, name, "")
    text = report.render_section(section, data, "")
    assert text.startswith(f"## {section.title}") and "\n|---|" in text
    if name == "network":
        assert "failed" not in data["notes"], data["notes"]
        assert all(
            {"setup", "figure", "baseline", "current", "ratio"} <= set(r) for r in data["rows"]
        )
        assert {"3 operators, 2 checks", "3 operators, 13 keys"} <= {
            r["setup"] for r in data["rows"]
        }
        assert all(r["current"] is not None for r in data["rows"])


def test_a_benchmark_that_fails_is_reported_not_hidden(tmp_path: Path) -> None:
    """A crashed benchmark leaves a section that says it was not measured, and no figures."""
    section = report.Section("ghost", "Ghost", "Nothing.")
    text = report.render_section(section, None, "exited with status 2: boom")
    assert "Not measured in this run" in text and "boom" in text and "|---|" not in text


def test_render_rebuilds_the_markdown_from_the_json_alone(tmp_path: Path) -> None:
    """``--render`` runs nothing: the Markdown comes from ``performance.json`` as it stands."""
    row = {"setup": "3 operators, 2 checks", "figure": report.P50, "baseline": 4.0}
    row |= {"current": 2.0, "ratio": 0.5}
    bench = {"name": "network", "command": "c", "machine": {}, "rows": [row], "notes": "n"}
    overall = {
        "command": "make bench",
        "machine": {k: "?" for k in ("cpu", "cores", "ram_gib", "python", "platform", "date")}
        | {"load_start": 1.0, "load_end": 1.0},
        "commit": "0" * 40,
        "seconds": 60.0,
        "benchmarks": [bench],
        "failures": {"bls": "exited with status 1: boom"},
        "reruns": [
            {"only": ["x402"], "date": "d1", "commit": "1" * 40, "dirty": False},
            {"only": ["network"], "date": "d2", "commit": "2" * 40, "dirty": True}
            | {"cpu": "Some CPU", "load_start": 3.5, "load_end": 4.25},
        ],
    }
    (tmp_path / "performance.json").write_text(json.dumps(overall))
    done = subprocess.run(
        [sys.executable, str(BENCH / "report.py"), "--render", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1  # a benchmark failed in that run: still said at the end
    text = (tmp_path / "performance.md").read_text()
    assert "| sequential authorize p50 ≤ 2 ms | 2.00 ms | 4.00 ms | met |" in text
    assert "**Not measured in this run**: `benchmarks/bench_bls.py` exited with status 1" in text
    assert "Re-run since with `--only x402`: d1 at commit `111111111111`." in text
    assert (
        "Re-run since with `--only network`: d2 at commit `222222222222` (with uncommitted "
        "changes) on Some CPU, load average 3.5 at the start, 4.25 at the end." in text
    )
