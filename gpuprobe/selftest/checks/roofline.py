"""Measured-roofline check of ``gpuprobe selftest --gpu``: a two-point sweep end to end in ncu mode."""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from gpuprobe.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda

MODEL, BATCHES, CONTEXT, DTYPE = "qwen2-0.5b", (1, 64), 1024, "bf16"


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
    from gpuprobe.crosscheck import CrossCheck, failures

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


@check("roofline_two_points", owner="roofline", gpu=True, budget_s=180)
def roofline_two_points(ctx: CheckContext) -> dict:
    """Two-point ncu roofline (qwen2-0.5b, B=1 and 64, C=1024): outputs written, attention reads match the KV bytes."""
    require_cuda()
    from gpuprobe.roofline_measured import make_points, measure_sweep, ncu_status, sweep_config
    from gpuprobe.specs.gpus import DEFAULT_GPU, detect_gpu, get_gpu
    from gpuprobe.specs.models import get_model

    ok, why = ncu_status()
    if not ok:
        raise Skip(f"ncu mode unavailable: {why}")
    det = detect_gpu()
    gpu = det.spec if det is not None and det.spec is not None else get_gpu(DEFAULT_GPU)
    out = ctx.out_dir / "sweep"
    config = sweep_config(MODEL, context=CONTEXT, dtype=DTYPE, attention=None, mode="ncu", layers="one",
                          batches=list(BATCHES))
    points = make_points(MODEL, BATCHES, context=CONTEXT, dtype=DTYPE, attention=None, mode="ncu", layers="one",
                         out_dir=out, keep_reports=False)
    t0 = time.perf_counter()
    with open(ctx.out_dir / "sweep.log", "w") as log, contextlib.redirect_stdout(log):
        rc = measure_sweep(points, out, spec=get_model(MODEL), gpu=gpu, dtype=DTYPE, config=config, progress=False)
    wall = time.perf_counter() - t0
    path = out / "roofline.json"
    if not path.exists():
        raise CheckFailed(f"the sweep wrote no roofline.json (exit {rc}); see {ctx.out_dir / 'sweep.log'}",
                          {"wall_s": round(wall, 1)})
    data = json.loads(path.read_text())
    figures = {**figures_of(data), "wall_s": round(wall, 1)}
    missing = [n for n in ("roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png",
                           "report.md") if not (out / n).exists()]
    problems = verify(data) + ([f"missing outputs: {', '.join(missing)}"] if missing else [])
    ctx.log("\n".join(problems) or "all claims hold")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
