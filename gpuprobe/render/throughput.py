"""Files of ``gpuprobe throughput``: ``throughput.csv``, ``throughput.json`` and ``throughput.png``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpuprobe.measure.throughput import COLUMNS, EXTRA_COLUMNS
from gpuprobe.render.plots.throughput import plot_throughput


def write_results(rows: list[dict[str, Any]], out_dir: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """``throughput.csv``, ``throughput.json`` and ``throughput.png`` in ``out_dir``."""
    import pandas as pd


    out = Path(out_dir)
    df = pd.DataFrame(rows, columns=list(COLUMNS + EXTRA_COLUMNS))
    paths = {"csv": out / "throughput.csv", "json": out / "throughput.json", "png": out / "throughput.png"}
    df.to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps({"meta": meta or {}, "rows": rows}, indent=2, default=str))
    plot_throughput(rows, paths["png"])
    return paths
