"""The measured roofline, end to end: ``records = sweep(...)``, ``result = assemble(records)``, ``write(result)``.

``gpuprobe roofline --model M`` on a GPU lands in :func:`run_measured_roofline` in ``ncu`` or
``timing`` mode. Its stages, one module each:

- :mod:`gpuprobe.roofline.plan`: options, mode, batch list, the points, resume checks;
- :func:`gpuprobe.measure.sweep.run_sweep` with the worker :func:`gpuprobe.measure.point.measure_point`:
  one child process per batch size; an OOM, a crash or an ncu failure costs that point only and is
  recorded with its reason; every finished point is appended to ``results.jsonl`` at once; ``--resume
  DIR`` skips finished points; Ctrl-C keeps every finished point and still writes what finished;
- :mod:`gpuprobe.roofline.assemble`: the records -> one ``roofline.json`` (docs/contracts.md);
- :mod:`gpuprobe.roofline.outputs`: the files (JSON, CSV, figures, report.md) and the terminal summary.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from gpuprobe.ceilings.bandwidth import copy_bandwidth_or_none
from gpuprobe.measure.sweep import latest_records, read_results, run_sweep
from gpuprobe.roofline.assemble import assemble_result
from gpuprobe.roofline.outputs import print_summary, write_outputs
from gpuprobe.roofline.plan import (SWEEP_FILE, RooflineOptions, cached_roofs, check_resume, make_points,
                                    plan_batches, sweep_config)

WORKER = "gpuprobe.measure.point:measure_point"
#: Per-point limits of the child process (ncu's own limit inside is 480 s).
POINT_TIMEOUT_S = {"ncu": 600.0, "timing": 300.0}

__all__ = ["POINT_TIMEOUT_S", "WORKER", "make_points", "measure_sweep", "run_measured_roofline", "sweep_config",
           "sweep_records"]


def _banner(mode: str, why: str, gpu, out: Path) -> str:
    if mode == "ncu":
        return (f"gpuprobe roofline: NCU mode ({why}): Nsight Compute counters per kernel on {gpu.display_name}; "
                f"writing to {out}")
    return (f"gpuprobe roofline: TIMING mode ({why}): CUDA-event time per op with analytic bytes and FLOPs, "
            f"no counters; writing to {out}")


def run_measured_roofline(options: RooflineOptions, *, spec, gpu, mode: str, why: str, out: Path) -> int:
    """``gpuprobe roofline`` with a GPU in ``mode`` (``ncu`` or ``timing``, chosen by
    :func:`gpuprobe.roofline.plan.choose_mode`): plan, sweep, assemble, write; returns the exit status."""
    t_start = time.perf_counter()
    batches, note = plan_batches(options.batches, spec, gpu, options.context, options.dtype,
                                 explicit=options.batches_given)
    config = sweep_config(options.model, context=options.context, dtype=options.dtype, attention=options.attention,
                          mode=mode, layers=options.layers, batches=batches)
    if options.resume:
        check_resume(out, config)
    (out / SWEEP_FILE).write_text(json.dumps(config, indent=2) + "\n")
    print(_banner(mode, why, gpu, out), flush=True)
    if note:
        print(note, flush=True)
    points = make_points(options.model, batches, context=options.context, dtype=options.dtype,
                         attention=options.attention, mode=mode, layers=options.layers, out_dir=out)
    return measure_sweep(points, out, spec=spec, gpu=gpu, dtype=options.dtype, config=config,
                         resume=bool(options.resume), extra_roofs=cached_roofs(gpu, options.dtype,
                                                                                 options.use_cached_roofs),
                         t_start=t_start)


def sweep_records(points: list[dict[str, Any]], out: Path, *, mode: str | None, resume: bool = False,
                  worker: str = WORKER, progress: bool = True, on_record: Callable | None = None,
                  point_timeout_s: float | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Run the points (one child each) and return the records of these points in ``out`` and whether
    Ctrl-C stopped the sweep (every finished point is kept either way)."""
    interrupted = False
    try:
        limit = point_timeout_s if point_timeout_s is not None else POINT_TIMEOUT_S.get(mode, 600.0)
        run_sweep(points, worker, out, resume=resume, timeout_s=limit,
                  label=lambda p: f"batch {p['batch']}", progress=progress, on_record=on_record)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: every finished point is in {out / 'results.jsonl'}; "
              f"continue with --resume {out}", flush=True)
    wanted = {p["batch"] for p in points}
    return [r for r in latest_records(read_results(out)) if r.get("point", {}).get("batch") in wanted], interrupted


def measure_sweep(points: list[dict[str, Any]], out: Path, *, spec, gpu, dtype: str, config: dict[str, Any],
                  resume: bool = False, worker: str = WORKER, copy_bw: float | None = None,
                  copy_source: str | None = None, extra_roofs: Sequence = (), progress: bool = True,
                  on_record=None, t_start: float | None = None, point_timeout_s: float | None = None) -> int:
    """Run the points, then assemble and write every output from what finished; returns the exit status
    (0, 1 when no point finished, 130 after Ctrl-C). ``copy_bw`` None:
    :func:`gpuprobe.ceilings.bandwidth.copy_bandwidth_or_none`; ``point_timeout_s`` None:
    :data:`POINT_TIMEOUT_S` of the mode (keep it above the points' ``ncu_timeout_s``, so that ncu,
    which runs in its own process group, is stopped by its own limit first)."""
    t_start = time.perf_counter() if t_start is None else t_start
    out = Path(out)
    records, interrupted = sweep_records(points, out, mode=config.get("mode"), resume=resume, worker=worker,
                                         progress=progress, on_record=on_record, point_timeout_s=point_timeout_s)
    sweep_s = time.perf_counter() - t_start
    if not any(r["status"] == "ok" for r in records):
        reasons = "; ".join(f"batch {r['point']['batch']}: {r['status']}: {r['reason']}" for r in records[:3])
        print(f"gpuprobe roofline: no point finished{': ' + reasons if reasons else ''}", file=sys.stderr)
        return 130 if interrupted else 1
    if copy_bw is None:
        copy_bw, copy_source = copy_bandwidth_or_none()
        if copy_bw is None:
            print(f"note: {copy_source}; DRAM % of measured uses a cached measured roof when there is one",
                  flush=True)
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, copy_bw=copy_bw, copy_source=copy_source,
                             extra_roofs=extra_roofs,
                             sweep={**config, "wall_s": round(sweep_s, 1), "interrupted": interrupted,
                                    "out": str(out)})
    print_summary(result, write_outputs(result, out))
    print(f"sweep wall time: {sweep_s:.1f} s for {len(points)} points ({config.get('mode')} mode)", flush=True)
    return 130 if interrupted else 0
