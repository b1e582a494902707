"""Measured-roofline check of ``gpuprobe selftest --gpu``: a two-point sweep end to end in ncu mode."""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda

MODEL, BATCHES, CONTEXT, DTYPE = "qwen2-0.5b", (1, 64), 1024, "bf16"
#: Seconds of the budget kept for the check's own work: CUDA init and the quick copy-bandwidth
#: measurement, assembly, four figures and report.md.
OVERHEAD_S = 25.0
#: CUDA-graph replays timed per point (the sweep's default is 50; 20 keep the figure to a few percent).
GRAPH_ITERS = 20


def limits(budget_s: float) -> tuple[float, float]:
    """(per-point limit, ncu limit inside a point) for a two-point sweep in ``budget_s`` seconds.

    A point may take up to 62% of what is left after :data:`OVERHEAD_S` (the first one also compiles
    Triton kernels and warms cuBLAS); its ncu run stops 15 s earlier, leaving the worker time to import
    torch, build the engine again and time it (about 12 s). ncu's own limit firing first matters: ncu
    runs in its own process group, which the sweep's per-point limit would not reach.

    Expected on an H100 (docs/measured-roofline.md): 45-75 s for the first point, about 45 s for the
    second, 95-160 s for the check."""
    point = max(30.0, 0.62 * (budget_s - OVERHEAD_S))
    return point, max(15.0, point - 15.0)


def ncu_usable() -> tuple[bool, str]:
    """Whether an ncu mode sweep can run, without profiling anything: ncu found, and the driver does not
    keep the counters from this user (the `ncu_counter_permission` check profiles a kernel for that)."""
    import os

    from gpuprobe.ncu.runner import PERMISSION_FIX, _driver_restricts_profiling, find_ncu

    inst = find_ncu()
    if inst is None:
        return False, "ncu is not installed"
    if _driver_restricts_profiling() and not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return False, "driver has RmProfilingAdminOnly=1 and this user is not root: " + PERMISSION_FIX
    return True, f"ncu {inst.version or '?'} at {inst.path}"


def figures_of(data: dict[str, Any]) -> dict[str, Any]:
    """The check's figures from a roofline.json: attention DRAM/SM % per batch, cross-check ratios."""
    figs: dict[str, Any] = {}
    for p in data["points"]:
        if p["op"] == "attention":
            b = p["batch"]
            figs[f"attention_dram_pct_b{b}"] = None if p["dram_pct_of_measured"] is None else round(p["dram_pct_of_measured"], 1)
            figs[f"attention_sm_pct_b{b}"] = None if p["sm_pct"] is None else round(p["sm_pct"], 1)
    for c in data.get("crosschecks", []):
        if c["name"] in ("attention_dram_read", "gemm_flops"):
            key = "attention_read_ratio" if c["name"] == "attention_dram_read" else f"{c['op']}_padding"
            figs[f"{key}_b{c['batch']}"] = None if c["ratio"] is None else round(c["ratio"], 3)
    return figs


def verify(data: dict[str, Any]) -> list[str]:
    """What is wrong with a two-point ncu roofline (empty when the claims hold)."""
    from gpuprobe.roofline.crosscheck import CrossCheck, failures

    problems = [f"batch {f['batch']}: {f['status']}: {f['reason']}" for f in data.get("failed_points", [])]
    if data["mode"] != "ncu":
        problems.append(f"ran in {data['mode']} mode, not ncu")
    problems += [c.summary + f" ({c.note})" for c in failures(CrossCheck.from_dict(c) for c in data.get("crosschecks", []))]
    att = sorted((p for p in data["points"] if p["op"] == "attention"), key=lambda p: p["batch"])
    if len(att) == 2:
        lo, hi = (p["dram_pct_of_measured"] or 0.0 for p in att)
        if not hi > lo:
            problems.append(f"attention DRAM % did not rise with batch ({lo:.1f}% -> {hi:.1f}%)")
        if att[-1]["bound"] != "memory":
            problems.append(f"attention at batch {att[-1]['batch']} is not memory-bound by intensity")
    else:
        problems.append(f"expected attention points at batches {BATCHES}, got {[p['batch'] for p in att]}")
    return problems


@check("roofline_two_points", owner="roofline", gpu=True, budget_s=170)
def roofline_two_points(ctx: CheckContext) -> dict:
    """Two-point ncu roofline (qwen2-0.5b, B=1 and 64, C=1024): outputs written, attention reads match the KV bytes."""
    require_cuda()
    from gpuprobe.roofline.measured import make_points, measure_sweep, sweep_config
    from gpuprobe.specs.gpus import DEFAULT_GPU, detect_gpu, get_gpu
    from gpuprobe.specs.models import get_model

    ok, why = ncu_usable()  # not ncu_status(): that profiles a torch program (~10 s) the permission check ran
    if not ok:
        raise Skip(f"ncu mode unavailable: {why}")
    point_s, ncu_s = limits(ctx.budget_s)
    ctx.log(f"{why}; per-point limit {point_s:.0f} s, ncu limit {ncu_s:.0f} s")
    det = detect_gpu()
    gpu = det.spec if det is not None and det.spec is not None else get_gpu(DEFAULT_GPU)
    out = ctx.out_dir / "sweep"
    config = sweep_config(MODEL, context=CONTEXT, dtype=DTYPE, attention=None, mode="ncu", layers="one",
                          batches=list(BATCHES))
    points = make_points(MODEL, BATCHES, context=CONTEXT, dtype=DTYPE, attention=None, mode="ncu", layers="one",
                         out_dir=out, keep_reports=False, ncu_timeout_s=ncu_s, graph_iters=GRAPH_ITERS)
    t0 = time.perf_counter()
    with open(ctx.out_dir / "sweep.log", "w") as log, contextlib.redirect_stdout(log):
        rc = measure_sweep(points, out, spec=get_model(MODEL), gpu=gpu, dtype=DTYPE, config=config, progress=False,
                           point_timeout_s=point_s)
    wall = time.perf_counter() - t0
    path = out / "roofline.json"
    if not path.exists():
        raise CheckFailed(f"the sweep wrote no roofline.json (exit {rc}); see {ctx.out_dir / 'sweep.log'}",
                          {"wall_s": round(wall, 1)})
    data = json.loads(path.read_text())
    figures = {**figures_of(data), "wall_s": round(wall, 1),
               **{f"point_s_b{s['batch']}": s.get("seconds") for s in data.get("steps", [])},
               **{f"ncu_s_b{s['batch']}": s.get("ncu_seconds") for s in data.get("steps", [])}}
    missing = [n for n in ("roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png",
                           "report.md") if not (out / n).exists()]
    problems = verify(data) + ([f"missing outputs: {', '.join(missing)}"] if missing else [])
    ctx.log("\n".join(problems) or "all claims hold")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
