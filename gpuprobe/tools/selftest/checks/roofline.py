"""Measured-roofline check of ``gpuprobe selftest --gpu``: a two-point sweep end to end, in ncu mode where
counters can be read, else in timing mode (CUDA events per op with analytic bytes), which checks the
same claims that do not need counters.

The limits of an ncu point are sized from what ncu costs (:mod:`gpuprobe.ncu.cost`: replay passes of the
``roofline`` metric set times the kernels a point profiles, after the profiled program's start); a point
that still runs out of time sends the check to timing mode for both points, the ncu attempt kept in
``ncu_attempt/``. The check's folder holds the sweep's ``roofline.json`` and ``results.jsonl`` (the
calibrated-prediction check reads them there), its logs, and the raw page of the batch-1 ncu report."""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gpuprobe.measure.sweep import read_results
from gpuprobe.ncu.cost import ncu_cost
from gpuprobe.ncu.runner import import_raw_csv
from gpuprobe.roofline.assemble import assemble_result
from gpuprobe.roofline.crosscheck import CrossCheck, failures
from gpuprobe.specs.models import get_model
from gpuprobe.tools.selftest.counters import counter_probe
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check, require_cuda

MODEL, BATCHES, CONTEXT, DTYPE = "qwen2-0.5b", (1, 64), 1024, "bf16"
#: Seconds of the budget kept for the check's own work around the points: starting Python and CUDA, the
#: quick copy-bandwidth measurement, assembly, four figures, report.md and the raw page of one report.
OVERHEAD_S = 20.0
#: CUDA-graph replays timed per point (the sweep's default is 50; 20 keep the figure to a few percent).
GRAPH_ITERS = 20
#: Kernels one ncu-mode point profiles (``layers="one"``): a fused decode layer's 9, plus the bias copy
#: cuBLAS adds for ``F.linear`` with bias at small M, a library split-K reduce and the attention's split-K
#: reduce (12 at most); ``lm_head`` and a possible reduce (2).
POINT_KERNELS = 14
#: Seconds the profiled program (``gpuprobe.measure.target``) takes under ncu to reach its profiled step:
#: python, torch and gpuprobe imports, a CUDA context, the 24-layer engine with random weights, three
#: warm-up steps. An allowance until the first run's ``ncu_s`` figures replace it.
TARGET_START_S = 15.0
#: Seconds a point's worker needs around its ncu run: its own start, loading the report, building the
#: engine again and timing it (eager ops, 20 graph replays).
WORKER_AROUND_NCU_S = 15.0
#: Seconds a timing-mode point takes (no ncu), and the longest it is given in the fallback.
TIMING_POINT_S, TIMING_POINT_LIMIT_S = 15.0, 40.0
#: A report kept whole in the evidence only below this size (a one-layer report embeds the kernels' code:
#: about 17 MB); its raw page (``ncu --import --csv --page raw``) is always kept.
KEEP_REPORT_MAX_BYTES = 4 * 2**20


def point_cost():
    """ncu's cost for one point: :data:`POINT_KERNELS` with the ``roofline`` metric set (gpuprobe.ncu.cost)."""
    return ncu_cost(POINT_KERNELS, "roofline", start_s=TARGET_START_S)


def fallback_reserve_s() -> float:
    """Seconds kept for re-measuring both points in timing mode when an ncu point runs out of time."""
    return len(BATCHES) * TIMING_POINT_S


def limits(budget_s: float) -> tuple[float, float]:
    """(per-point limit, ncu limit inside a point) for the ncu-mode sweep in ``budget_s`` seconds.

    Sized from what ncu costs (:func:`point_cost`: 1.5x the longest the measured pass cost allows), then cut
    so that both points at their limits, the timing-mode fallback (:func:`fallback_reserve_s`) and the
    assembly (:data:`OVERHEAD_S`) fit in the budget: ``roofline.json`` is always written. ncu's own limit
    fires :data:`WORKER_AROUND_NCU_S` before the point's (ncu runs in its own process group, which the
    sweep's per-point limit would not reach)."""
    ncu_s = point_cost().limit_s()
    room = (budget_s - OVERHEAD_S - fallback_reserve_s()) / len(BATCHES)
    point = max(25.0, min(ncu_s + WORKER_AROUND_NCU_S, room))
    return point, point - WORKER_AROUND_NCU_S


def expected_seconds() -> float:
    """The check's estimate on a healthy node: both points in ncu mode at ncu's expected cost, and the assembly."""
    return OVERHEAD_S + len(BATCHES) * (point_cost().expected_s + WORKER_AROUND_NCU_S)


def needed_budget_s() -> float:
    """The check's own budget: both ncu points at their cost-sized limits, the fallback, the assembly."""
    ncu_s = point_cost().limit_s()
    return OVERHEAD_S + len(BATCHES) * (ncu_s + WORKER_AROUND_NCU_S) + fallback_reserve_s()


def measured() -> SimpleNamespace:
    """The measured roofline's sweep functions (``make_points``, ``sweep_config``, ``measure_sweep``): from the
    run layer (``gpuprobe.run.plan``, ``gpuprobe.run.measured``), else from where they lived before it
    (``gpuprobe.roofline.measured``)."""
    try:
        from gpuprobe.run.measured import measure_sweep
        from gpuprobe.run.plan import make_points, sweep_config
    except ImportError:
        from gpuprobe.roofline.measured import make_points, measure_sweep, sweep_config  # type: ignore[no-redef]
    return SimpleNamespace(make_points=make_points, measure_sweep=measure_sweep, sweep_config=sweep_config)


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

    path = out / "roofline.json"
    if path.exists():
        return path
    records = read_results(out) if (out / "results.jsonl").exists() else []
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, sweep={**config, "out": str(out)})
    result.write(out)
    return path


def ncu_ran_out(record: dict[str, Any]) -> bool:
    """A point whose ncu run (or the point itself) ran out of time, not one that failed otherwise."""
    reason = record.get("reason") or ""
    return record.get("status") == "timeout" or "ran past" in reason


def _sweep(ctx: CheckContext, mode: str, point_s: float, ncu_s: float | None, *, spec, gpu) -> tuple[Any, float]:
    """One two-point sweep into the check's folder; (the sweep's exit status or error, its wall seconds)."""
    m = measured()
    out = ctx.out_dir
    config = m.sweep_config(MODEL, context=CONTEXT, dtype=DTYPE, attention=None, mode=mode, layers="one",
                            batches=list(BATCHES))
    points = m.make_points(MODEL, BATCHES, context=CONTEXT, dtype=DTYPE, attention=None, mode=mode, layers="one",
                           out_dir=out, keep_reports=False, ncu_timeout_s=ncu_s if mode == "ncu" else None,
                           graph_iters=GRAPH_ITERS)
    if mode == "ncu":
        points[0].pop("keep_report", None)  # the first point's report stays: its raw page goes into the evidence
    (out / "sweep.json").write_text(json.dumps({**config, "point_timeout_s": point_s, "ncu_timeout_s": ncu_s},
                                               indent=2) + "\n")
    t0 = time.perf_counter()
    rc: int | str
    try:
        with open(out / f"sweep_{mode}.log", "w") as log, contextlib.redirect_stdout(log):
            rc = m.measure_sweep(points, out, spec=spec, gpu=gpu, dtype=DTYPE, config=config, progress=False,
                                 point_timeout_s=point_s)
    except Exception as e:  # noqa: BLE001 - the points that finished are still assembled
        rc = f"{type(e).__name__}: {e}"[:300]
    return rc, time.perf_counter() - t0


def keep_raw_page(out: Path, batch: int = BATCHES[0]) -> str | None:
    """The raw page (base units) of the kept report of ``batch`` as ``ncu_raw_b<batch>.csv``; the report itself
    only when small. Returns the CSV's name, or why there is none."""

    reports = sorted((out / "ncu").glob(f"b{batch}_*.ncu-rep"))
    if not reports:
        return None
    rep = reports[0]
    try:
        name = f"ncu_raw_b{batch}.csv"
        (out / name).write_text(import_raw_csv(rep, timeout_s=60))
        return name
    except Exception as e:  # noqa: BLE001 - evidence, not the claim
        return f"not exported: {type(e).__name__}: {e}"[:200]
    finally:
        if rep.stat().st_size > KEEP_REPORT_MAX_BYTES:
            rep.unlink(missing_ok=True)


def _fallback(out: Path) -> None:
    """Set the ncu attempt's files aside (``ncu_attempt/``) so the timing-mode sweep starts afresh."""
    keep = out / "ncu_attempt"
    keep.mkdir(exist_ok=True)
    for name in ("results.jsonl", "roofline.json", "sweep.json", "report.md"):
        if (out / name).exists():
            (out / name).replace(keep / name)


@check("roofline_two_points", owner="roofline", gpu=True, budget_s=round(needed_budget_s() + 4.5, -1),
       estimate_s={"default": round(expected_seconds(), -1), "a100": round(expected_seconds() * 1.25, -1)})
def roofline_two_points(ctx: CheckContext) -> dict:
    """Two-point roofline (qwen2-0.5b, B=1 and 64, C=1024), ncu mode where counters can be read (timing mode
    if an ncu point runs out of time), else timing mode: outputs written, attention reads match the KV bytes
    (ncu), attention DRAM % rises with batch. Leaves roofline.json and results.jsonl in its folder."""
    require_cuda()
    from gpuprobe.specs.gpus import DEFAULT_GPU, detect_gpu, get_gpu

    t_check = time.perf_counter()
    mode, why = choose_mode(ctx)
    point_s, ncu_s = limits(ctx.budget_s)
    cost = point_cost()
    ctx.log(f"{mode} mode ({why}); per-point limit {point_s:.0f} s, ncu limit {ncu_s:.0f} s "
            f"(ncu cost of {cost.kernels} kernels x {cost.passes} passes: expected {cost.expected_s:.0f} s, "
            f"at most {cost.upper_s:.0f} s)")
    det = detect_gpu()
    gpu = det.spec if det is not None and det.spec is not None else get_gpu(DEFAULT_GPU)
    spec = get_model(MODEL)
    out = ctx.out_dir
    rc, wall = _sweep(ctx, mode, point_s, ncu_s, spec=spec, gpu=gpu)
    extra: dict[str, Any] = {}
    if mode == "ncu":
        extra["ncu_raw_page"] = keep_raw_page(out)

        ran_out = [r for r in read_results(out) if ncu_ran_out(r)] if (out / "results.jsonl").exists() else []
        if ran_out:
            left = ctx.budget_s - (time.perf_counter() - t_check) - OVERHEAD_S / 2
            timing_s = min(TIMING_POINT_LIMIT_S, left / len(BATCHES))
            first = ran_out[0]
            reason = (first["reason"] or "")[:160]
            extra["ncu_ran_out"] = f"batch {first['point']['batch']}: {first['status']}: {reason}"
            ctx.log(f"an ncu point ran out of time ({extra['ncu_ran_out']}): timing mode, {timing_s:.0f} s a point")
            if timing_s >= TIMING_POINT_S:
                _fallback(out)
                extra["ncu_wall_s"] = round(wall, 1)
                mode, why = "timing", f"fallback: an ncu point ran out of time ({why})"
                rc, wall = _sweep(ctx, "timing", timing_s, None, spec=spec, gpu=gpu)
    config = measured().sweep_config(MODEL, context=CONTEXT, dtype=DTYPE, attention=None, mode=mode, layers="one",
                                     batches=list(BATCHES))
    path = ensure_roofline_json(out, spec=spec, gpu=gpu, dtype=DTYPE, config=config)
    data = json.loads(path.read_text())
    figures = {**figures_of(data), "wall_s": round(wall, 1), "sweep_exit": rc, "point_limit_s": round(point_s),
               "ncu_limit_s": round(ncu_s) if data.get("mode") == "ncu" or "ncu_ran_out" in extra else None,
               "mode_reason": why, **extra,
               **{f"point_s_b{s['batch']}": s.get("seconds") for s in data.get("steps", [])},
               **{f"ncu_s_b{s['batch']}": s.get("ncu_seconds") for s in data.get("steps", []) if mode == "ncu"}}
    wanted = ["report.md"] + (["roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png"]
                              if data.get("points") else [])
    missing = [n for n in wanted if not (out / n).exists()]
    problems = verify(data, mode) + ([f"missing outputs: {', '.join(missing)}"] if missing else [])
    if "ncu_ran_out" in extra and mode == "ncu":
        problems.insert(0, f"an ncu point ran out of time and no time was left for timing mode: {extra['ncu_ran_out']}")
    ctx.log("\n".join(problems) or "all claims hold")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
