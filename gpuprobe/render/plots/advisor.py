"""The advisor's figure: tokens/s and memory against batch, with B_opt and the rule's bar marked."""
from __future__ import annotations

from pathlib import Path


from gpuprobe.render.plots.style import new_figure
from gpuprobe.advise.advisor import Advice

GiB = 1024**3


def plot_advice(advice: Advice, path: str | Path, title: str | None = None) -> Path:
    """Throughput (left axis) and memory (right axis: KV cache, measured peak) against batch (log2),
    B_opt as a vertical line, the threshold of the default rule as a dashed line; returns ``path``."""
    curve, choice, mem = advice.curve, advice.choice, advice.memory
    b = curve.batches
    fig = new_figure(figsize=(9, 5.5), dpi=120)
    ax = fig.subplots()
    ax.plot(b, curve.tokens_per_s, "o-", color="#1f77b4", label="tokens/s")
    outliers = [v for v in choice.verdicts if v.outlier]
    if outliers:
        ax.plot([v.batch for v in outliers], [v.tokens_per_s for v in outliers], "x", color="#d62728",
                markersize=10, label="outlier (ignored)")
    if choice.rule == "default" and choice.b_opt is not None:
        eps = choice.params["epsilon"]
        ax.axhline((1 - eps) * choice.bar_tokens_per_s, ls="--", color="#1f77b4", alpha=0.5,
                   label=f"{1 - eps:.0%} of best sustained")
    if choice.b_opt is not None:
        ax.axvline(choice.b_opt, color="#2ca02c", lw=2,
                   label=f"B_opt = {choice.b_opt} ({choice.rule} rule, "
                         f"{choice.tokens_per_s_at_b_opt / choice.best_tokens_per_s:.0%} of best)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(b)
    ax.set_xticklabels([str(x) for x in b], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("batch (sequences decoded together)")
    ax.set_ylabel("tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="major", ls=":", alpha=0.6)
    handles, labels = ax.get_legend_handles_labels()

    kv = [mem.kv_bytes_by_batch.get(x) for x in b]
    peak = [p.memory_bytes for p in curve.points]
    if any(v is not None for v in kv) or any(v is not None for v in peak):
        ax2 = ax.twinx()
        if any(v is not None for v in kv):
            xs = [x for x, v in zip(b, kv) if v is not None]
            ax2.plot(xs, [v / GiB for v in kv if v is not None], "s--", color="#ff7f0e",
                     label=f"KV cache ({mem.kv_source or 'measured'}, context {mem.context})")
        if any(v is not None for v in peak):
            xs = [x for x, v in zip(b, peak) if v is not None]
            ax2.plot(xs, [v / GiB for v in peak if v is not None], "^:", color="#9467bd", label="peak memory")
        ax2.set_ylabel("GiB")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.set_title(title or _title(advice), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _title(advice: Advice) -> str:
    c = advice.curve
    parts = [c.model or "throughput curve", f"context {c.context}" if c.context else None, c.dtype, c.gpu]
    head = ", ".join(p for p in parts if p)
    m = advice.memory
    if m.memory_freed_bytes is not None and advice.choice.b_opt is not None:
        head += f"\nB_opt frees {m.memory_freed_bytes / GiB:.1f} GiB against batch {m.largest_batch}"
        if m.replicas_that_fit is not None:
            head += f"; {m.replicas_that_fit} replicas fit"
    return head
