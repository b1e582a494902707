"""The point worker of ``gpuprobe roofline --mode nsys``: one batch size of gpuprobe's own engine,
graph-replayed, timed by Nsight Systems (no counters, no counter permission).

The sweep (:func:`gpuprobe.run.measured.run_measured_roofline`: a child process per point,
``results.jsonl``, ``--resume``) calls :func:`nsys_point`, which traces :mod:`gpuprobe.measure.nsys_target`
under nsys, aligns the graph-replayed kernels with the eager NVTX steps of the same trace, and returns
the per-op median step times as a record of mode ``nsys``; assembly, figures and report.md are those of
every measured roofline.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from gpuprobe.measure.nsys_target import EAGER_STEP_REGEX, GRAPH_STEP_REGEX
from gpuprobe.measure.point import versions
from gpuprobe.nsys import load_trace
from gpuprobe.nsys.runner import run_nsys


def target_command(model: str, batch: int, context: int, dtype: str, attention: str | None,
                   graph_steps: int) -> list[str]:
    cmd = [sys.executable, "-m", "gpuprobe.measure.nsys_target", "--model", model, "--batch", str(batch),
           "--context", str(context), "--dtype", dtype, "--graph-steps", str(graph_steps)]
    return cmd + (["--attention", attention] if attention else [])


def nsys_point(*, model: str, batch: int, context: int, dtype: str = "bf16", attention: str | None = None,
               out_dir: str = ".", graph_steps: int = 10, timeout_s: float | None = 480) -> dict[str, Any]:
    """Trace one batch size and reduce it to a roofline record (raises on failure: the sweep records it)."""
    from gpuprobe.nsys.trace_roofline import trace_records

    stem = Path(out_dir) / "nsys" / f"b{batch}_c{context}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = run_nsys(target_command(model, batch, context, dtype, attention, graph_steps), stem, timeout_s=timeout_s)
    tr = load_trace(run.sqlite, align_eager=run.sqlite, step_regex=EAGER_STEP_REGEX)
    stats = tr.steps(GRAPH_STEP_REGEX)
    rec = trace_records(stats, batch=batch, context=context, device_name=tr.kernels.attrs.get("device_name"),
                        source=str(run.sqlite))[0]["result"]
    align = tr.kernels.attrs.get("alignment") or []
    rec["attention"] = attention
    rec["nsys"].update({"report": str(run.report), "command": run.command, "seconds": round(time.perf_counter() - t0, 3),
                        "nsys_version": tr.kernels.attrs.get("nsys_version"),
                        "aligned": sum(a["paired"] for a in align), "graph_kernels": sum(a["kernels"] for a in align)})
    rec["versions"] = {**versions(), "device_name": tr.kernels.attrs.get("device_name")}
    return rec
