"""The study's comparison across GPUs: per-op time and DRAM % of peak, one bar per GPU.

One row of two panels per (model, context, mode), at the largest batch every GPU measured (the title says
which): time per op (µs, log scale) and DRAM throughput as % of each GPU's peak (the peak each row used is in
``comparison.csv``'s ``dram_peak``).
"""
from __future__ import annotations

from pathlib import Path

from gpuprobe.ops import OPS
from gpuprobe.render.plots.style import new_figure

#: GPU colours (distinct from the op colours: here the GPUs are the series).
GPU_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")


def _op_order(op: str) -> tuple[int, str]:
    return (OPS.index(op), op) if op in OPS else (len(OPS), op)


def common_batch(frame) -> int | None:
    """The largest batch that every GPU of ``frame`` measured (None when they share none)."""
    sets = [set(g["batch"]) for _, g in frame.groupby("gpu")]
    shared = set.intersection(*sets) if sets else set()
    return max(shared) if shared else None


def plot_study_comparison(frame, path: str | Path) -> Path:
    """``frame``: the rows of :func:`gpuprobe.run.study.comparison_rows` (model, context, mode, gpu, batch, op,
    time_us, dram_pct_of_peak); writes the figure to ``path``."""
    groups = list(frame.groupby(["model", "context", "mode"], sort=False))
    gpus = list(dict.fromkeys(frame["gpu"]))
    fig = new_figure(figsize=(14, 4.2 * max(len(groups), 1)), dpi=110)
    axes = fig.subplots(max(len(groups), 1), 2, squeeze=False)
    for row, ((model, context, mode), g) in enumerate(groups):
        batch = common_batch(g)
        if batch is None:  # no shared batch: each GPU at its own largest
            batch = int(g["batch"].max())
        sel = g[g["batch"] == batch]
        ops = sorted(set(sel["op"]), key=_op_order)
        width = 0.8 / max(len(gpus), 1)
        for col, (field, label) in enumerate((("time_us", "time per step (µs)"),
                                              ("dram_pct_of_peak", "DRAM throughput, % of peak"))):
            ax = axes[row][col]
            for i, gpu in enumerate(gpus):
                vals = sel[sel["gpu"] == gpu].set_index("op")[field]
                xs = [k + (i - (len(gpus) - 1) / 2) * width for k in range(len(ops))]
                ys = [float(vals[op]) if op in vals.index else float("nan") for op in ops]
                ax.bar(xs, ys, width=width, color=GPU_COLORS[i % len(GPU_COLORS)], label=gpu)
            ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(label)
            ax.grid(axis="y", alpha=0.3)
            if field == "time_us":
                ax.set_yscale("log")
            else:
                ax.axhline(100, color="black", lw=1.0)
            ax.set_title(f"{model}, context {context}, {mode} mode, batch {batch}", fontsize=10)
        axes[row][0].legend(fontsize=8, title="GPU")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    return p
