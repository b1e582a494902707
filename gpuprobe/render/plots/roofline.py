"""The roofline figure: roofs (DRAM, L2, FP32, tensor), the ridge point, and each op's trajectory over batch."""
from __future__ import annotations

import math
from pathlib import Path


from gpuprobe.render.plots.style import is_major, new_figure, op_color, op_marker
from gpuprobe.roofline.schema import RooflineResult

_MEMORY_STYLE = {"measured": "-", "datasheet": "--", "ncu_peak": ":"}


def _fmt_rate(v: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G")):
        if v >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def plot_roofline(result: RooflineResult, path: str | Path, title: str | None = None) -> Path:
    """Draw ``result`` as a log-log roofline into ``path`` (PNG); returns the path."""
    pts = [p for p in result.points if p.flops and p.flops > 0 and p.dram_bytes and p.dram_bytes > 0 and p.time_s]
    skipped = sorted({p.op for p in result.points} - {p.op for p in pts})
    c = result.ceilings

    intens = [p.intensity for p in pts] or [c.ridge]
    x_lo = 10 ** math.floor(math.log10(max(min(intens + [c.ridge]) / 3, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(intens + [c.ridge]) * 3))

    fig = new_figure(figsize=(10, 6.5), dpi=120)
    ax = fig.subplots()
    mem_roofs = [r for r in result.roofs if r.kind == "memory"]
    # Compute roofs of other dtypes (a report's tf32/fp16 peaks on a bf16 run) would only clutter.
    comp_roofs = [r for r in result.roofs if r.kind == "compute" and r.name in (c.compute_roof, "fp32")]
    top = max([r.value for r in comp_roofs] + [c.flops_per_s])
    # Memory roofs up to the highest compute roof; compute roofs from where the chosen DRAM roof meets them.
    for r in mem_roofs:
        chosen = r.name == c.dram_roof and r.source == c.dram_source
        x_end = min(top / r.value, x_hi)
        ax.plot([x_lo, x_end], [r.value * x_lo, r.value * x_end], _MEMORY_STYLE.get(r.source, "-"),
                color="black" if chosen else "grey", lw=2.2 if chosen else 1.0, zorder=2,
                label=f"{r.name} ({r.source}): {_fmt_rate(r.value, 'B/s')}")
    for r in comp_roofs:
        chosen = r.name == c.compute_roof and r.source == c.compute_source
        x_start = r.value / c.dram_bytes_per_s
        ax.plot([x_start, x_hi], [r.value, r.value], "-" if r.source == "measured" else "--",
                color="black" if chosen else "grey", lw=2.2 if chosen else 1.0, zorder=2,
                label=f"{r.name} ({r.source}): {_fmt_rate(r.value, 'FLOP/s')}")
    ax.axvline(c.ridge, color="black", ls=":", lw=0.8, zorder=1)
    ax.annotate(f"ridge {c.ridge:.0f} FLOP/B", (c.ridge, c.flops_per_s), textcoords="offset points",
                xytext=(4, -14), fontsize=8)

    by_op: dict[str, list] = {}
    for p in pts:
        by_op.setdefault(p.op, []).append(p)
    calibrated = [p for p in pts if p.predicted_s is not None and p.floor_s]
    for p in calibrated:  # the floor each prediction sits under: a faint tick joined to the prediction
        y_floor, y_pred = p.flops / p.floor_s, p.flops / p.time_s
        ax.plot([p.intensity, p.intensity], [y_floor, y_pred], "-", color=op_color(p.op), lw=0.6, alpha=0.35, zorder=3)
        ax.scatter([p.intensity], [y_floor], s=12, marker="_", color=op_color(p.op), alpha=0.6, lw=1.0, zorder=3)
    if calibrated:
        ax.plot([], [], "-", color="grey", lw=0.6, alpha=0.6, label="floor (tick) to calibrated prediction")
    for op, ops_pts in by_op.items():
        ops_pts.sort(key=lambda p: p.batch or 0)
        xs = [p.intensity for p in ops_pts]
        ys = [p.flops / p.time_s for p in ops_pts]
        col, major = op_color(op), is_major(op)
        ax.plot(xs, ys, "-", color=col, lw=1.0 if major else 0.6, alpha=0.7, zorder=3)
        base = 22 if major else 10
        sizes = [base + (8 if major else 3) * math.log2(p.batch) if p.batch else base for p in ops_pts]
        ax.scatter(xs, ys, s=sizes, facecolor=col if op == "attention" or not major else "none",
                   edgecolor=col, marker=op_marker(op), lw=1.2 if major else 0.4,
                   zorder=5 if major else 4, label=op)
        spread = max(xs) / min(xs) if min(xs) > 0 else 1.0
        if major and ops_pts[-1].batch and (op == "attention" or spread > 4):
            ax.annotate(f"B={ops_pts[-1].batch}", (xs[-1], ys[-1]), textcoords="offset points",
                        xytext=(6, -4), fontsize=7, color=col)
            ax.annotate(f"B={ops_pts[0].batch}", (xs[0], ys[0]), textcoords="offset points",
                        xytext=(6, -10), fontsize=7, color=col)

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ys_all = [p.flops / p.time_s for p in pts] or [top]
    ax.set_ylim(10 ** math.floor(math.log10(min(ys_all + [c.dram_bytes_per_s * x_lo]) / 2)), top * 3)
    ax.set_xlabel("arithmetic intensity (FLOP / DRAM byte)")
    ax.set_ylabel("FLOP/s (achieved, or predicted in analytic mode)")
    head = title or (f"{result.model or 'report'} on {result.gpu}: {result.mode} roofline"
                     + (f", {result.dtype}" if result.dtype else "")
                     + (f", context {result.context}" if result.context else ""))
    sub = (f"ceilings: DRAM {c.dram_source}, compute {c.compute_source} ({c.compute_roof});"
           " marker size grows with batch")
    labels = {p.time_source for p in pts if p.predicted_s is not None}
    if labels:
        sub += f"\ntimes: calibrated prediction ({'; '.join(sorted(labels))}), floor as ticks"
    if skipped:
        sub += f"\nnot placeable (zero or unknown FLOPs or DRAM bytes): {', '.join(skipped)}"
    if not pts:
        ax.text(0.5, 0.45, "no point to place: the input has no FLOP or DRAM-byte counters\n"
                "(profile with gpuprobe's `roofline` metric set to get them)", transform=ax.transAxes,
                ha="center", va="center", fontsize=11, color="firebrick",
                bbox={"facecolor": "white", "edgecolor": "firebrick", "alpha": 0.9})
    ax.set_title(head + "\n" + sub, fontsize=10)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
