"""``throughput.png`` of a measured roofline: tokens/s against batch, CUDA-graph replay and eager steps.

The figure itself is the decode engine's (:func:`gpuprobe.measure.throughput.plot_throughput`, the one
throughput plot of the project); this module turns roofline.json's ``steps`` into its rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuprobe.roofline.schema import RooflineResult

_MODES = (("graph", "graph_tokens_per_s", "graph_step_s"), ("eager", "eager_tokens_per_s", "eager_step_s"))


def throughput_rows(result: RooflineResult) -> list[dict[str, Any]]:
    """One row per batch and mode (``graph``, ``eager``) that was measured; failed points as failed rows."""
    rows: list[dict[str, Any]] = []
    common = {"model": result.model, "context": result.context, "dtype": result.dtype,
              "attention": result.extra.get("attention")}
    steps = sorted(result.extra.get("steps", []), key=lambda s: s.get("batch") or 0)
    for mode, tps_key, step_key in _MODES:
        if not any(s.get(tps_key) for s in steps):
            continue
        for s in steps:
            ok = s.get("status") == "ok" and s.get(tps_key)
            rows.append({**common, "batch": s.get("batch"), "mode": mode,
                         "tokens_per_s": s.get(tps_key) if ok else None,
                         "step_latency_s": s.get(step_key) if ok else None,
                         "status": "ok" if ok else (s.get("status") or "failed"), "reason": s.get("reason")})
    return rows


def plot_result_throughput(result: RooflineResult, path: str | Path) -> Path | None:
    """The throughput figure of a measured roofline; None when it recorded no step times."""
    from gpuprobe.measure.throughput import plot_throughput

    rows = throughput_rows(result)
    if not any(r["status"] == "ok" for r in rows):
        return None
    return plot_throughput(rows, path)
