"""Pareto figure: throughput against joules per token (and against step latency), optimal configurations marked."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


from gpuprobe.render.plots.style import new_figure
from gpuprobe.advise.pareto import ENERGY_OBJECTIVES, pareto_mask


def plot_pareto(configs: Sequence[Mapping[str, Any]], path: str | Path, label_key: str = "label",
                title: str | None = None) -> Path:
    """Each configuration needs ``tokens_per_s`` and ``joules_per_token`` (others are left out);
    with ``step_latency_s`` a second panel shows throughput against latency. Returns ``path``."""
    usable = [c for c in configs if c.get("tokens_per_s") is not None and c.get("joules_per_token") is not None]
    if not usable:
        raise ValueError("no configuration has both tokens_per_s and joules_per_token")
    with_latency = [c for c in usable if c.get("step_latency_s") is not None]
    panels = 2 if with_latency else 1
    fig = new_figure(figsize=(6.5 * panels, 5), dpi=120)
    axes = fig.subplots(1, panels, squeeze=False)
    _panel(axes[0][0], usable, "joules_per_token", "joules per token", ENERGY_OBJECTIVES, label_key)
    if with_latency:
        _panel(axes[0][1], with_latency, "step_latency_s", "step latency (s)",
               {"tokens_per_s": "max", "step_latency_s": "min"}, label_key)
    fig.suptitle(title or "Pareto-optimal configurations (filled) among those measured", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _panel(ax, configs, x_key, x_label, objectives, label_key) -> None:
    mask = pareto_mask(configs, objectives)
    front = sorted((c for c, m in zip(configs, mask) if m), key=lambda c: c[x_key])
    ax.plot([c[x_key] for c in front], [c["tokens_per_s"] for c in front], "-", color="#2ca02c", alpha=0.6)
    for c, m in zip(configs, mask):
        ax.plot(c[x_key], c["tokens_per_s"], "o", color="#2ca02c" if m else "white",
                markeredgecolor="#2ca02c" if m else "#7f7f7f", markersize=8)
        if c.get(label_key) is not None:
            ax.annotate(str(c[label_key]), (c[x_key], c["tokens_per_s"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel("tokens/s")
    ax.grid(True, ls=":", alpha=0.6)
