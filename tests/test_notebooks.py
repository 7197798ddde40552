"""The notebooks run top to bottom on tiny settings, and are committed without outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from conftest import CACHE
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# The quickstart runs in the default suite; the others (15-20 s each) in the slow one.
RUNS = [pytest.param(p, marks=() if p.stem.startswith("01_") else pytest.mark.slow) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("GAN_ZOO_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("GAN_ZOO_CACHE", str(CACHE))  # the session's domain classifier, trained once
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert code and all(c.execution_count for c in code), "not every code cell ran"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"
    )


def test_the_readme_names_every_notebook():
    """The README's Notebooks section lists exactly the notebooks there are."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Notebooks") :].split("\n## ")[0]
    named = set(re.findall(r"`(\d\d_\w+)`", section))
    assert NOTEBOOKS and named == {p.stem for p in NOTEBOOKS}
