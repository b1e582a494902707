"""Measured-roofline check of ``gpuprobe selftest --gpu``: a two-point sweep end to end, in ncu mode where
counters can be read, else in timing mode (CUDA events per op with analytic bytes), which checks the
same claims that do not need counters."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from gpuprobe.tools.selftest.counters import counter_probe
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check, require_cuda

MODEL, BATCHES, CONTEXT, DTYPE = "qwen2-0.5b", (1, 64), 1024, "bf16"
#: Seconds of the budget kept for the check's own work around the two points: starting Python and
#: CUDA, the quick copy-bandwidth measurement, assembly, four figures and report.md.
OVERHEAD_S = 20.0
#: CUDA-graph replays timed per point (the sweep's default is 50; 20 keep the figure to a few percent).
GRAPH_ITERS = 20
#: Seconds a point's worker needs around its ncu run: import torch, build the engine, time it.
WORKER_AROUND_NCU_S = 15.0


def limits(budget_s: float) -> tuple[float, float]:
    """(per-point limit, ncu limit inside a point) for a two-point sweep in ``budget_s`` seconds: each
    point gets half of what :data:`OVERHEAD_S` leaves, so two points that run to their limits still
    leave the assembly its time and ``roofline.json`` is written. ncu's own limit fires
    :data:`WORKER_AROUND_NCU_S` earlier (ncu runs in its own process group, which the sweep's
    per-point limit would not reach).

    Expected on an H100 in ncu mode (docs/measured-roofline.md): 45-55 s a point; in timing mode
    about 15 s a point."""
    point = max(25.0, (budget_s - OVERHEAD_S) / len(BATCHES))
    return point, point - WORKER_AROUND_NCU_S


def ncu_usable() -> tuple[bool, str]:
    """Whether an ncu-mode sweep may run, without profiling anything: ncu found, and the driver does not
    keep the counters from this user. Whether counters can really be read is this run's counter probe
    (:func:`gpuprobe.tools.selftest.counters.counter_probe`)."""
    import os

    from gpuprobe.ncu.runner import PERMISSION_FIX, _driver_restricts_profiling, find_ncu

    inst = find_ncu()
    if inst is None:
        return False, "ncu is not installed"
    if _driver_restricts_profiling() and not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return False, "driver has RmProfilingAdminOnly=1 and this user is not root: " + PERMISSION_FIX
    return True, f"ncu {inst.version or '?'} at {inst.path}"


def choose_mode(ctx: CheckContext) -> tuple[str, str]:
    """``ncu`` where ncu is installed and this run's probe read a counter, else ``timing``; and why."""
    ok, why = ncu_usable()
    if not ok:
        return "timing", why
    probe = counter_probe(ctx, timeout_s=max(10.0, min(60.0, ctx.budget_s / 4)))
    return ("ncu", why) if probe.usable else ("timing", probe.skip_reason())


def figures_of(data: dict[str, Any]) -> dict[str, Any]:
    """The check's figures from a roofline.json: attention DRAM/SM % per batch, cross-check ratios."""
    figs: dict[str, Any] = {"mode": data.get("mode")}
    for p in data["points"]:
        if p["op"] == "attention":
            b = p["batch"]
            figs[f"attention_dram_pct_b{b}"] = None if p["dram_pct_of_measured"] is None else round(p["dram_pct_of_measured"], 1)
            figs[f"attention_sm_pct_b{b}"] = None if p.get("sm_pct") is None else round(p["sm_pct"], 1)
    for c in data.get("crosschecks", []):
        if c["name"] in ("attention_dram_read", "gemm_flops"):
            key = "attention_read_ratio" if c["name"] == "attention_dram_read" else f"{c['op']}_padding"
            figs[f"{key}_b{c['batch']}"] = None if c["ratio"] is None else round(c["ratio"], 3)
    return figs


def verify(data: dict[str, Any], mode: str = "ncu") -> list[str]:
    """What is wrong with a two-point roofline made in ``mode`` (empty when the claims hold): every point
    finished, the cross-checks hold (ncu mode), attention's share of DRAM bandwidth rises with batch
    and attention at the larger batch is memory-bound."""
    from gpuprobe.roofline.crosscheck import CrossCheck, failures

    problems = [f"batch {f['batch']}: {f['status']}: {f['reason']}" for f in data.get("failed_points", [])]
    if data["mode"] != mode:
        problems.append(f"ran in {data['mode']} mode, not {mode}")
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


def ensure_roofline_json(out: Path, *, spec, gpu, dtype: str, config: dict[str, Any]) -> Path:
    """``out/roofline.json`` from whatever the sweep recorded (failed points listed with their reasons),
    when the sweep itself did not write it (no point finished, or its assembly failed)."""
    from gpuprobe.measure.sweep import read_results
    from gpuprobe.roofline.assemble import assemble_result

    path = out / "roofline.json"
    if path.exists():
        return path
    records = read_results(out) if (out / "results.jsonl").exists() else []
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, sweep={**config, "out": str(out)})
    result.write(out)
    return path


@check("roofline_two_points", owner="roofline", gpu=True, budget_s=170,
       estimate_s={"default": 110, "a100": 140})
def roofline_two_points(ctx: CheckContext) -> dict:
    """Two-point roofline (qwen2-0.5b, B=1 and 64, C=1024), ncu mode where counters can be read, else timing
    mode: outputs written, attention reads match the KV bytes (ncu), attention DRAM % rises with batch."""
    require_cuda()
    from gpuprobe.roofline.measured import make_points, measure_sweep, sweep_config
    from gpuprobe.specs.gpus import DEFAULT_GPU, detect_gpu, get_gpu
    from gpuprobe.specs.models import get_model

    mode, why = choose_mode(ctx)
    point_s, ncu_s = limits(ctx.budget_s)
    ctx.log(f"{mode} mode ({why}); per-point limit {point_s:.0f} s, ncu limit {ncu_s:.0f} s")
    det = detect_gpu()
    gpu = det.spec if det is not None and det.spec is not None else get_gpu(DEFAULT_GPU)
    spec = get_model(MODEL)
    out = ctx.out_dir / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    config = sweep_config(MODEL, context=CONTEXT, dtype=DTYPE, attention=None, mode=mode, layers="one",
                          batches=list(BATCHES))
    points = make_points(MODEL, BATCHES, context=CONTEXT, dtype=DTYPE, attention=None, mode=mode, layers="one",
                         out_dir=out, keep_reports=False, ncu_timeout_s=ncu_s if mode == "ncu" else None,
                         graph_iters=GRAPH_ITERS)
    t0 = time.perf_counter()
    rc: int | str
    try:
        with open(ctx.out_dir / "sweep.log", "w") as log, contextlib.redirect_stdout(log):
            rc = measure_sweep(points, out, spec=spec, gpu=gpu, dtype=DTYPE, config=config, progress=False,
                               point_timeout_s=point_s)
    except Exception as e:  # noqa: BLE001 - the points that finished are still assembled below
        rc = f"{type(e).__name__}: {e}"[:300]
    wall = time.perf_counter() - t0
    path = ensure_roofline_json(out, spec=spec, gpu=gpu, dtype=DTYPE, config=config)
    data = json.loads(path.read_text())
    figures = {**figures_of(data), "wall_s": round(wall, 1), "sweep_exit": rc, "point_limit_s": round(point_s),
               "mode_reason": why,
               **{f"point_s_b{s['batch']}": s.get("seconds") for s in data.get("steps", [])},
               **{f"ncu_s_b{s['batch']}": s.get("ncu_seconds") for s in data.get("steps", []) if mode == "ncu"}}
    wanted = ["report.md"] + (["roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png"]
                              if data.get("points") else [])
    missing = [n for n in wanted if not (out / n).exists()]
    problems = verify(data, mode) + ([f"missing outputs: {', '.join(missing)}"] if missing else [])
    ctx.log("\n".join(problems) or "all claims hold")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
