"""The notebooks run in a real Jupyter kernel (nbclient + ipykernel), and keep their outputs.

Each notebook is executed top to bottom in a fresh ``python3`` kernel, from a temporary
directory, as a reader would run it; an exception in any cell fails the test. The committed
file must carry the outputs of such a run (every code cell executed, the same kinds of output,
no error output), so that a reader on GitHub sees what it does without running it. Values may
differ between runs (operator keys are made fresh), so kinds are compared, not text.

To refresh the committed outputs after editing a notebook:
``AGENTGUARD_UPDATE_NOTEBOOKS=1 .venv/bin/pytest tests/test_notebooks.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
UPDATE = os.environ.get("AGENTGUARD_UPDATE_NOTEBOOKS") == "1"


def _kinds(cell: Any) -> list[tuple[str, tuple[str, ...]]]:
    """What a code cell showed: each output's type and, for rich outputs, its MIME types."""
    return [
        (out["output_type"], tuple(sorted(out.get("data", {}))) or (out.get("name", ""),))
        for out in cell.get("outputs", [])
    ]


def _run(notebook: Path, workdir: Path) -> Any:
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    return nb


@pytest.mark.integration
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs_in_a_kernel_and_its_outputs_are_committed(
    notebook: Path, tmp_path: Path
) -> None:
    ran = _run(notebook, tmp_path)
    if UPDATE:
        nbformat.write(ran, notebook)
    committed = nbformat.read(notebook, as_version=4)
    code_ran = [c for c in ran.cells if c.cell_type == "code"]
    code_kept = [c for c in committed.cells if c.cell_type == "code"]
    assert [c.source for c in code_ran] == [c.source for c in code_kept]
    for index, (fresh, kept) in enumerate(zip(code_ran, code_kept, strict=True)):
        assert kept.get("execution_count") is not None, (
            f"{notebook.name} cell {index} was committed without running it; see this "
            "module's docstring to refresh the outputs"
        )
        assert not any(o["output_type"] == "error" for o in kept.outputs), index
        assert _kinds(kept) == _kinds(fresh), (
            f"{notebook.name} cell {index}: committed outputs {_kinds(kept)} differ from a "
            f"fresh run's {_kinds(fresh)}; refresh them (see this module's docstring)"
        )


def test_one_notebook_plots_spend_against_the_cap() -> None:
    nb = nbformat.read(NOTEBOOKS[0].parent / "spend_over_time.ipynb", as_version=4)
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 1
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "axhline(20" in source and "ledger.usage" in source


def test_a_real_kernel_is_installed() -> None:
    """The kernel the notebooks declare exists here (ipykernel in this environment)."""
    from jupyter_client.kernelspec import KernelSpecManager

    assert "python3" in KernelSpecManager().find_kernel_specs()


def test_there_are_notebooks() -> None:
    assert {n.name for n in NOTEBOOKS} >= {"quickstart.ipynb", "spend_over_time.ipynb"}
