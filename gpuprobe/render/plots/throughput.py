"""Throughput figures: tokens/s against batch, one line per series (CUDA-graph replay, eager, compiled).

:func:`plot_throughput` draws rows of ``gpuprobe throughput`` (:func:`gpuprobe.measure.throughput.rows_from_records`)
and of a measured roofline (:func:`gpuprobe.roofline.assemble.throughput_rows`); the one throughput plot
of the project.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuprobe.render.plots.style import new_figure
from gpuprobe.roofline.assemble import throughput_rows
from gpuprobe.roofline.schema import RooflineResult


def series(row: dict[str, Any]) -> str:
    """A row's line in tables and plots: ``graph``, ``eager``, ``graph+compile``, ``eager+compile``, and
    ``+unfused`` for steps run with the PyTorch elementwise ops outside ``--compile``."""
    unfused = row.get("kernels") == "unfused" and not row.get("compiled")
    return f"{row.get('mode') or ''}{'+compile' if row.get('compiled') else ''}{'+unfused' if unfused else ''}"


def plot_throughput(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Tokens/s against batch (log-log), one line per :func:`series`; out-of-memory batches marked on the axis."""
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for line in sorted({series(r) for r in rows if r["mode"]}):
        ok = [r for r in rows if series(r) == line and r["status"] == "ok"]
        if ok:
            ax.plot([r["batch"] for r in ok], [r["tokens_per_s"] for r in ok], marker="o", label=line)
        bad = [r for r in rows if series(r) == line and r["status"] != "ok"]
        for r in bad:
            ax.axvline(r["batch"], color="tab:red", alpha=0.3, ls="--")
            ax.annotate(r["status"], (r["batch"], 0.02), xycoords=("data", "axes fraction"), color="tab:red",
                        fontsize=8, rotation=90)
    first = rows[0] if rows else {}
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("tokens / s")
    ax.set_title(f"{first.get('model')}  context {first.get('context')}  {first.get('dtype')}  "
                 f"attention {first.get('attention')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_result_throughput(result: RooflineResult, path: str | Path) -> Path | None:
    """``throughput.png`` of a measured roofline; None when it recorded no step times."""
    rows = throughput_rows(result)
    if not any(r["status"] == "ok" for r in rows):
        return None
    return plot_throughput(rows, path)
