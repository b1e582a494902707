"""The Nsight report notebook is stored without outputs and runs top to bottom on a CPU machine."""
from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_notebook_runs(repo_root):
    path = repo_root / "notebooks" / "nsight_report_analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "store the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "attention DRAM reads / analytic KV bytes = 1.004" in text
    assert not list(path.parent.glob("*.png")), "the notebook must not leave files beside itself"
