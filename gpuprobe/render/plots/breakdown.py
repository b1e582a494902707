"""``time_breakdown.png``: each op's share of the decode step's time against batch (stacked bars).

Shares come from the per-op CUDA-event times of the warm eager step (``steps[].per_op_s`` in
roofline.json, every op of every layer) when the sweep recorded them; otherwise from the points'
``time_s`` (in ncu mode: cold-cache kernel times of the ops profiled, scaled to the step).
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.colors import to_rgb

from gpuprobe.ops import op_order
from gpuprobe.render.plots.style import new_figure, op_color
from gpuprobe.roofline.schema import RooflineResult


def op_times_by_batch(result: RooflineResult) -> tuple[dict[int, dict[str, float]], str]:
    """``{batch: {op: seconds}}`` and a words-long name of where the times came from."""
    steps = {s["batch"]: s.get("per_op_s") for s in result.extra.get("steps", []) if s.get("status") == "ok"}
    if steps and all(steps.values()):
        return {int(b): dict(v) for b, v in steps.items()}, "CUDA-event time per op, warm eager step"
    out: dict[int, dict[str, float]] = {}
    for p in result.points:
        if p.batch is not None and p.time_s:
            out.setdefault(int(p.batch), {})[p.op] = out.get(int(p.batch), {}).get(p.op, 0.0) + p.time_s
    src = "ncu kernel time (cold caches), ops profiled" if result.mode == "ncu" else "time per op"
    return out, src


def _text_color(color: str) -> str:
    r, g, b = to_rgb(color)
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def plot_time_breakdown(result: RooflineResult, path: str | Path) -> Path:
    """Stacked shares (0-100%) per batch, one colour per op; the step time (ms) above each bar."""
    times, source = op_times_by_batch(result)
    batches = sorted(times)
    ops = sorted({op for t in times.values() for op in t}, key=op_order)
    fig = new_figure(figsize=(11, 5.5), dpi=120)
    ax = fig.subplots()
    xs = list(range(len(batches)))
    bottom = [0.0] * len(batches)
    for op in ops:
        shares = []
        for b in batches:
            total = sum(times[b].values())
            shares.append(100.0 * times[b].get(op, 0.0) / total if total else 0.0)
        ax.bar(xs, shares, bottom=bottom, color=op_color(op), edgecolor="white", lw=0.3, label=op, width=0.75)
        for i, (s, b0) in enumerate(zip(shares, bottom)):
            if s >= 6:
                ax.text(xs[i], b0 + s / 2, f"{s:.0f}%", ha="center", va="center", fontsize=6.5,
                        color=_text_color(op_color(op)))
        bottom = [a + s for a, s in zip(bottom, shares)]
    for i, b in enumerate(batches):
        total = sum(times[b].values())
        ax.text(xs[i], 101, f"{total * 1e3:.2f} ms", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("share of step time (%)")
    ax.set_ylim(0, 108)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), framealpha=0.9)
    ax.set_title(f"{result.model} on {result.gpu}: where a decode step's time goes ({source}; "
                 "sum of op times above each bar)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
