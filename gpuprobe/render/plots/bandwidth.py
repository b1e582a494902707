"""``bandwidth_vs_batch.png``: DRAM throughput (% of the measured copy bandwidth) per op against batch,
with the SM (or tensor) utilisation beside it: the figure that shows what limits each op.

Attention's DRAM share rising toward 100% while its SM share stays low is the memory-bound
signature; the GEMMs' DRAM share falls as batch grows and their intensity rises.
"""
from __future__ import annotations

from pathlib import Path


from gpuprobe.render.plots.style import is_major, new_figure, op_color, op_marker
from gpuprobe.roofline.schema import LIMITER_RULE, RooflineResult


def _series(result: RooflineResult, field: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for op, pts in result.points_by_op().items():
        xy = [(p.batch, getattr(p, field)) for p in pts if p.batch and getattr(p, field) is not None]
        if xy:
            out[op] = ([x for x, _ in xy], [y for _, y in xy])
    return out


def _draw(ax, series: dict[str, tuple[list[int], list[float]]], minor: bool) -> None:
    for op, (xs, ys) in sorted(series.items(), key=lambda kv: (not is_major(kv[0]), kv[0])):
        major = is_major(op)
        if not major and not minor:
            continue
        ax.plot(xs, ys, "-", marker=op_marker(op), color=op_color(op), lw=2.2 if op == "attention" else
                (1.3 if major else 0.7), ms=8 if op == "attention" else (5 if major else 3),
                alpha=1.0 if major else 0.6, label=op, zorder=4 if major else 3)


def plot_bandwidth_vs_batch(result: RooflineResult, path: str | Path, *, minor_ops: bool = True) -> Path:
    """Two panels against batch (log2): DRAM % of the measured copy bandwidth (ncu's own peak when no
    measured figure exists) and SM % (ncu mode) or achieved FLOP/s % of the tensor roof (timing mode)."""
    dram_field = "dram_pct_of_measured"
    dram = _series(result, dram_field)
    if not dram:
        dram_field, dram = "dram_pct_of_ncu_peak", _series(result, "dram_pct_of_ncu_peak")
    if result.mode == "ncu":
        right_field, right_label = "sm_pct", "SM throughput, % of peak (ncu sm__throughput)"
    else:
        right_field, right_label = "tensor_pct", "useful FLOP/s, % of the tensor roof (analytic FLOPs / time)"
    right = _series(result, right_field)

    fig = new_figure(figsize=(13, 5.5), dpi=120)
    (ax1, ax2) = fig.subplots(1, 2, sharex=True)
    _draw(ax1, dram, minor_ops)
    _draw(ax2, right, minor_ops)
    thr = LIMITER_RULE["threshold_pct"]
    batches = sorted({b for xs, _ in list(dram.values()) + list(right.values()) for b in xs})
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        if batches:
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
        ax.axhline(100, color="black", lw=1.0)
        ax.axhline(thr, color="grey", ls=":", lw=0.8)
        ax.set_ylim(0, 110)
        ax.set_xlabel("batch size")
        ax.grid(True, lw=0.4, alpha=0.5)
    bw = (result.extra.get("copy_bandwidth") or {}).get("bytes_per_s")
    if dram_field == "dram_pct_of_measured" and bw:
        ylab = f"DRAM throughput, % of measured copy bandwidth ({bw / 1e12:.2f} TB/s)"
    elif dram_field == "dram_pct_of_measured":
        ylab = "DRAM throughput, % of the measured DRAM roof"
    else:
        ylab = "DRAM throughput, % of ncu's peak (no measured copy bandwidth)"
    ax1.set_ylabel(ylab)
    ax2.set_ylabel(right_label)
    ax1.text(1.0, thr + 1.5, f"limiter threshold {thr:.0f}%", transform=ax1.get_yaxis_transform(),
             ha="right", fontsize=7, color="grey")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.9)
    basis = ("counters, cold caches" if result.mode == "ncu" else "analytic minimum bytes over CUDA-event time")
    fig.suptitle(f"{result.model} on {result.gpu}, {result.mode} mode"
                 + (f", context {result.context}" if result.context else "")
                 + f": DRAM vs compute utilisation per op ({basis})", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
