"""The notebooks run top to bottom: quickstart (KPIs, a post-mortem, plots) and prediction."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path: Path) -> None:
    """Every cell runs without error, in a scratch folder.

    The outputs hold the KPI table, a post-mortem and at least one figure.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = [o["data"].get("text/markdown", "") for o in outputs if "data" in o]
    assert any("| metric | value |" in text for text in markdown)
    assert any(text.lstrip().startswith("#") for text in markdown)
    assert any("image/png" in o.get("data", {}) for o in outputs)


PREDICTION = NOTEBOOK.parent / "failure_prediction.ipynb"


def test_failure_prediction_notebook_executes(tmp_path: Path) -> None:
    """Every cell runs; it shows the held-out table of every model and its four figures."""
    nb = nbformat.read(PREDICTION, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    for model in ("lstm", "threshold", "logistic", "gboost"):
        assert f"| {model} | " in markdown
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 4  # training curve, PR curves, lead times, NAB scores
