"""The Nsight report notebook is stored with its outputs (readable without running it) and runs top to
bottom on a CPU machine, every figure shown (importing gpuprobe's plots keeps the inline backend)."""
from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_notebook_runs(repo_root):
    path = repo_root / "notebooks" / "nsight_report_analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]

    def figures():
        return sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)

    assert code and figures() == 2, "store the notebook with its outputs (both figures)"
    for c in code:  # run it afresh
        c.outputs, c.execution_count = [], None
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "attention DRAM reads / analytic KV bytes = 1.004" in text
    assert figures() == 2, "a figure went missing: the roofline and the DRAM throughput per op"
    assert not list(path.parent.glob("*.png")), "the notebook must not leave files beside itself"
