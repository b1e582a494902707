"""The measured roofline, end to end, in every measured mode (``timing``, ``ncu``, ``nsys``):
``records = sweep(...)``, ``result = assemble(records)``, ``write(result)``.

``gpuprobe roofline --model M`` on a GPU lands in :func:`run_measured_roofline`. Its stages, one module each:

- :mod:`gpuprobe.run.plan`: the batch list, the points, resume checks (one preamble for every mode);
- :func:`gpuprobe.measure.sweep.run_sweep` with the mode's worker (:data:`WORKERS`): one child process
  per batch size, here or as a job of the options' executor; an OOM, a crash or an ncu failure costs that
  point only and is recorded with its reason; every finished point is appended to ``results.jsonl`` at
  once; ``--resume DIR`` skips finished points; Ctrl-C keeps every finished point and still writes what
  finished;
- :mod:`gpuprobe.roofline.assemble`: the records -> one ``roofline.json`` (docs/contracts.md);
- :mod:`gpuprobe.render.outputs`: the files (JSON, CSV, figures, report.md) and the terminal summary.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from gpuprobe.ceilings.bandwidth import copy_bandwidth_or_none
from gpuprobe.measure.sweep import latest_records, read_results, run_sweep
from gpuprobe.nsys.runner import require_nsys
from gpuprobe.render.outputs import print_summary, write_outputs
from gpuprobe.roofline.assemble import assemble_result
from gpuprobe.run.options import RooflineOptions
from gpuprobe.run.plan import SWEEP_FILE, cached_roofs, check_resume, make_points, plan_batches, sweep_config

#: The child-process worker of each measured mode.
WORKERS = {"ncu": "gpuprobe.measure.point:measure_point", "timing": "gpuprobe.measure.point:measure_point",
           "nsys": "gpuprobe.measure.nsys_point:nsys_point"}
WORKER = WORKERS["ncu"]
#: Per-point limits of the child process (ncu's own limit inside is 480 s; nsys traces whole steps).
POINT_TIMEOUT_S = {"ncu": 600.0, "timing": 300.0, "nsys": 600.0}

__all__ = ["POINT_TIMEOUT_S", "WORKER", "WORKERS", "measure_sweep", "run_measured_roofline", "sweep_records"]


def _banner(mode: str, why: str, gpu, out: Path) -> str:
    if mode == "ncu":
        return (f"gpuprobe roofline: NCU mode ({why}): Nsight Compute counters per kernel on {gpu.display_name}; "
                f"writing to {out}")
    if mode == "nsys":
        return ("gpuprobe roofline: NSYS mode: kernel times of graph-replayed steps traced by Nsight Systems, "
                f"analytic bytes and FLOPs, no counters; writing to {out}")
    return (f"gpuprobe roofline: TIMING mode ({why}): CUDA-event time per op with analytic bytes and FLOPs, "
            f"no counters; writing to {out}")


def run_measured_roofline(options: RooflineOptions, *, spec, gpu, mode: str, why: str, out: Path) -> int:
    """``gpuprobe roofline`` with a GPU in ``mode`` (``ncu``, ``timing`` or ``nsys``, chosen by
    :func:`gpuprobe.run.plan.choose_mode`): plan, sweep, assemble, write; returns the exit status."""
    t_start = time.perf_counter()
    if mode == "nsys":
        require_nsys()
    layers = "all" if mode == "nsys" else options.layers
    batches, note = plan_batches(options.batches, spec, gpu, options.context, options.dtype,
                                 explicit=options.batches_given)
    config = sweep_config(options.model, context=options.context, dtype=options.dtype, attention=options.attention,
                          mode=mode, layers=layers, batches=batches)
    if options.resume:
        check_resume(out, config)
    (out / SWEEP_FILE).write_text(json.dumps(config, indent=2) + "\n")
    print(_banner(mode, why, gpu, out), file=sys.stderr, flush=True)
    if note:
        print(note, file=sys.stderr, flush=True)
    points = make_points(options.model, batches, context=options.context, dtype=options.dtype,
                         attention=options.attention, mode=mode, layers=layers, out_dir=out)
    return measure_sweep(points, out, spec=spec, gpu=gpu, dtype=options.dtype, config=config,
                         resume=bool(options.resume), worker=WORKERS[mode], executor=options.executor,
                         extra_roofs=cached_roofs(gpu, options.dtype, options.use_cached_roofs),
                         t_start=t_start, on_result=_calibration_writer(options, gpu), fmt=options.fmt,
                         as_json=options.as_json)


def _calibration_writer(options: RooflineOptions, gpu) -> Callable[[Path], None] | None:
    """With ``--write-calibration FILE``: a function that fits the run's calibration into FILE."""
    if not options.write_calibration:
        return None

    def write(out: Path) -> None:
        from gpuprobe.calibration import calibration_from_results, save_calibration  # only when asked for

        target = Path(options.write_calibration)
        save_calibration(calibration_from_results(out, gpu=gpu.name, dtype=options.dtype), target)
        print(f"wrote {target} (calibration of {gpu.display_name}, {options.dtype}, from {out})", file=sys.stderr,
              flush=True)

    return write


def sweep_records(points: list[dict[str, Any]], out: Path, *, mode: str | None, resume: bool = False,
                  worker: str = WORKER, progress: bool = True, on_record: Callable | None = None,
                  point_timeout_s: float | None = None, executor: Any = None) -> tuple[list[dict[str, Any]], bool]:
    """Run the points (one child each) and return the records of these points in ``out`` and whether
    Ctrl-C stopped the sweep (every finished point is kept either way)."""
    interrupted = False
    try:
        limit = point_timeout_s if point_timeout_s is not None else POINT_TIMEOUT_S.get(mode, 600.0)
        run_sweep(points, worker, out, resume=resume, timeout_s=limit, label=lambda p: f"batch {p['batch']}",
                  progress=progress, on_record=on_record, **({"executor": executor} if executor is not None else {}))
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: every finished point is in {out / 'results.jsonl'}; "
              f"continue with --resume {out}", file=sys.stderr, flush=True)
    wanted = {p["batch"] for p in points}
    return [r for r in latest_records(read_results(out)) if r.get("point", {}).get("batch") in wanted], interrupted


def assemble_and_write(records: Sequence[dict[str, Any]], out: Path, *, spec, gpu, dtype: str,
                       config: dict[str, Any], copy_bw: float | None = None, copy_source: str | None = None,
                       extra_roofs: Sequence = (), sweep_extra: dict[str, Any] | None = None):
    """One results folder's records -> its ``roofline.json``, figures and report.md; returns the result and
    the files written. ``copy_bw`` None: :func:`gpuprobe.ceilings.bandwidth.copy_bandwidth_or_none` (on the
    GPU that ran the points; a driver elsewhere passes its own figure or source)."""
    if copy_bw is None and copy_source is None:
        copy_bw, copy_source = copy_bandwidth_or_none()
        if copy_bw is None:
            print(f"note: {copy_source}; DRAM % of measured uses a cached measured roof when there is one",
                  file=sys.stderr, flush=True)
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, copy_bw=copy_bw, copy_source=copy_source,
                             extra_roofs=extra_roofs, sweep={**config, **(sweep_extra or {}), "out": str(out)})
    return result, write_outputs(result, out)


def measure_sweep(points: list[dict[str, Any]], out: Path, *, spec, gpu, dtype: str, config: dict[str, Any],
                  resume: bool = False, worker: str = WORKER, copy_bw: float | None = None,
                  copy_source: str | None = None, extra_roofs: Sequence = (), progress: bool = True,
                  on_record=None, t_start: float | None = None, point_timeout_s: float | None = None,
                  executor: Any = None, on_result: Callable[[Path], None] | None = None, fmt: str | None = None,
                  as_json: bool = False) -> int:
    """Run the points, then assemble and write every output from what finished; returns the exit status
    (0, 1 when no point finished, 130 after Ctrl-C). ``copy_bw`` None:
    :func:`gpuprobe.ceilings.bandwidth.copy_bandwidth_or_none`; ``point_timeout_s`` None:
    :data:`POINT_TIMEOUT_S` of the mode (keep it above the points' ``ncu_timeout_s``, so that ncu,
    which runs in its own process group, is stopped by its own limit first). ``fmt``, ``as_json``: the
    output contract (docs/cli.md): the table in that format, or ``roofline.json``, on stdout; every
    message on stderr. ``on_result(out)`` runs once the files are written (``--write-calibration``)."""
    t_start = time.perf_counter() if t_start is None else t_start
    out = Path(out)
    records, interrupted = sweep_records(points, out, mode=config.get("mode"), resume=resume, worker=worker,
                                         progress=progress, on_record=on_record, point_timeout_s=point_timeout_s,
                                         executor=executor)
    sweep_s = time.perf_counter() - t_start
    if not any(r["status"] == "ok" for r in records):
        reasons = "; ".join(f"batch {r['point']['batch']}: {r['status']}: {r['reason']}" for r in records[:3])
        print(f"gpuprobe roofline: no point finished{': ' + reasons if reasons else ''}", file=sys.stderr)
        return 130 if interrupted else 1
    result, files = assemble_and_write(records, out, spec=spec, gpu=gpu, dtype=dtype, config=config, copy_bw=copy_bw,
                                       copy_source=copy_source, extra_roofs=extra_roofs,
                                       sweep_extra={"wall_s": round(sweep_s, 1), "interrupted": interrupted})
    print_summary(result, files, fmt=fmt, as_json=as_json)
    if on_result is not None:
        on_result(out)
    print(f"sweep wall time: {sweep_s:.1f} s for {len(points)} points ({config.get('mode')} mode)",
          file=sys.stderr, flush=True)
    return 130 if interrupted else 0
