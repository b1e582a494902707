"""The measured roofline, end to end: a sweep over batch sizes, one child process per point.

``gpuprobe roofline --model M`` on a GPU lands here (``run_measured_roofline``) in ``ncu`` or
``timing`` mode. Each batch size is one point of :func:`gpuprobe.measure.sweep.run_sweep` with the worker
:func:`gpuprobe.measure.point.measure_point`: an OOM, a crash or an ncu failure costs that point
only and is recorded with its reason; every finished point is appended to ``results.jsonl`` at
once; ``--resume DIR`` skips finished points; Ctrl-C keeps every finished point and still writes
the outputs of what finished.

:func:`assemble_result` turns the records into one :class:`~gpuprobe.roofline.RooflineResult`
(roofline.json, CONTRACTS.md section 2): per op and batch, counter figures (ncu mode) or CUDA-event
times with analytic bytes and FLOPs (timing mode), ``flops_useful`` from the cost model,
``dram_pct_of_measured`` over :func:`gpuprobe.ceilings.copy_bandwidth`, ``limiter``; the per-batch
step figures (eager and CUDA-graph tokens/s, NVML readings, throttling) and the cross-checks of
:mod:`gpuprobe.roofline.crosscheck` ride along in the JSON. :func:`write_outputs` draws the figures and
writes ``report.md``; both work from the JSON alone, on any machine.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from gpuprobe.errors import NotAvailable, UserError

WORKER = "gpuprobe.measure.point:measure_point"
SWEEP_FILE = "sweep.json"
#: Per-point limits of the child process (ncu's own limit inside is 480 s).
POINT_TIMEOUT_S = {"ncu": 600.0, "timing": 300.0}
#: Coarser NVTX groups and the ops they hold, for the analytic side of a group's point.
GROUP_MEMBERS = {
    "mlp": ("gate_up_proj", "act", "down_proj"),
    "attn_block": ("qkv_proj", "rope", "kv_write", "attention", "o_proj"),
}
#: The sweep settings a resumed sweep must share with the one it continues.
_RESUME_KEYS = ("model", "context", "dtype", "attention", "mode", "layers")


# ---- mode and points -------------------------------------------------------------------------------
def ncu_status() -> tuple[bool, str]:
    """(usable, why): Nsight Compute found and allowed to read the GPU counters."""
    try:
        from gpuprobe.ncu.runner import check_counter_permission
    except ImportError as e:  # pragma: no cover - the ncu package is part of gpuprobe
        return False, f"gpuprobe.ncu unavailable: {e}"
    state, msg = check_counter_permission()
    first = msg.strip().splitlines()[0] if msg.strip() else state
    return state == "ok", first


def choose_measured_mode(requested: str, status: tuple[bool, str] | None = None) -> tuple[str, str]:
    """``ncu`` or ``timing`` from ``auto|ncu|timing`` and whether ncu can run; the reason for the banner.

    ``--mode ncu`` without a usable ncu raises :class:`NotAvailable` (one line, exit 2)."""
    if requested == "timing":
        return "timing", "forced with --mode timing"
    ok, why = status if status is not None else ncu_status()
    if ok:
        return "ncu", why
    if requested == "ncu":
        raise NotAvailable(f"--mode ncu needs Nsight Compute with counter access: {why}")
    return "timing", why


def plan_batches(batches: Sequence[int], spec, gpu, context: int, dtype: str, *, explicit: bool,
                 memory_bytes: int | None = None) -> tuple[list[int], str | None]:
    """The default batch list is cut at the largest batch whose weights and KV cache fit
    (:func:`gpuprobe.analytic.max_batch_that_fits`), which is added as the last point; a list the
    user gave is kept (a point that does not fit is recorded as ``oom``)."""
    from gpuprobe.analytic import max_batch_that_fits

    fits = max_batch_that_fits(spec, gpu, context, dtype, memory_bytes=memory_bytes)
    if explicit:
        return list(batches), None
    if fits < 1:
        raise UserError(f"{spec.name} at context {context} does not fit {gpu.display_name} even at batch 1; "
                        "lower --context or pick a smaller model.")
    kept = [b for b in batches if b <= fits]
    if len(kept) == len(batches):
        return kept, None
    if fits not in kept:
        kept.append(fits)
    return kept, (f"batches above {fits} do not fit {gpu.display_name} at context {context} "
                  f"(weights + KV cache in 90% of memory): sweeping {','.join(map(str, kept))}")


def make_points(model: str, batches: Iterable[int], *, context: int, dtype: str, attention: str | None,
                mode: str, layers: str, out_dir: str | Path, keep_reports: bool = True,
                ncu_timeout_s: float | None = None, graph_iters: int | None = None) -> list[dict[str, Any]]:
    """One JSON-able kwargs dict per batch size for :func:`gpuprobe.measure.point.measure_point`
    (``keep_reports=False``: delete each .ncu-rep once read; a report of one layer is about 17 MB;
    ``ncu_timeout_s``, ``graph_iters``: the worker's defaults when None)."""
    out = str(Path(out_dir).resolve())
    extra: dict[str, Any] = {} if keep_reports else {"keep_report": False}
    if ncu_timeout_s is not None:
        extra["ncu_timeout_s"] = float(ncu_timeout_s)
    if graph_iters is not None:
        extra["graph_iters"] = int(graph_iters)
    return [{"model": model, "batch": int(b), "context": int(context), "dtype": dtype, "attention": attention,
             "mode": mode, "layers": layers, "out_dir": out, **extra} for b in batches]


def sweep_config(model: str, *, context: int, dtype: str, attention: str | None, mode: str, layers: str,
                 batches: Sequence[int]) -> dict[str, Any]:
    return {"model": model, "context": context, "dtype": dtype, "attention": attention, "mode": mode,
            "layers": layers, "batches": list(batches)}


def check_resume(out: Path, config: dict[str, Any]) -> None:
    """A resumed sweep must have the settings of the one in ``out``; else one line saying which differ."""
    from gpuprobe.measure.sweep import RESULTS_FILE

    path = out / SWEEP_FILE
    if not out.is_dir() or not (path.exists() or (out / RESULTS_FILE).exists()):
        raise UserError(f"--resume {out}: no sweep there (no {SWEEP_FILE} or {RESULTS_FILE}); "
                        "pass the --out folder of an earlier `gpuprobe roofline` run.")
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"--resume {out}: {SWEEP_FILE} is not valid JSON; start a new sweep with --out.") from None
    diff = [f"{k} {old.get(k)!r} there, {config[k]!r} now" for k in _RESUME_KEYS if old.get(k) != config[k]]
    if diff:
        raise UserError(f"--resume {out}: the sweep there was made with other settings ({'; '.join(diff)}); "
                        "pass the same options, or a new --out.")


# ---- ceilings --------------------------------------------------------------------------------------
def measured_copy_bandwidth() -> tuple[float | None, str]:
    """THE measured copy bandwidth (bytes/s) every ``% of measured`` divides by, and where it came from."""
    try:
        from gpuprobe.ceilings import copy_bandwidth

        return float(copy_bandwidth()), "gpuprobe.ceilings.copy_bandwidth()"
    except (ImportError, NotAvailable, UserError) as e:
        return None, f"no measured copy bandwidth ({e})"
    except Exception as e:  # a failed measurement must not lose the sweep
        return None, f"copy bandwidth measurement failed ({type(e).__name__}: {e})"


def cached_roofs(gpu, dtype: str, use: bool = True) -> list:
    """Measured roofs of this GPU cached by ``gpuprobe ceilings`` (none when absent)."""
    if not use:
        return []
    try:
        from gpuprobe.ceilings import cached_ceilings, measured_roofs

        cached = cached_ceilings(gpu.display_name)
        return measured_roofs(cached, dtype) if cached else []
    except Exception:
        return []


# ---- assembly --------------------------------------------------------------------------------------
def _analytic_by_op(spec, batch: int, context: int, dtype: str) -> dict[str, Any]:
    from gpuprobe.analytic import decode_costs

    costs = {c.op: c for c in decode_costs(spec, batch, context, dtype)}
    out: dict[str, Any] = dict(costs)
    for group, members in GROUP_MEMBERS.items():
        parts = [costs[m] for m in members if m in costs]
        if parts:
            out[group] = _Sum(parts)
    return out


class _Sum:
    """Analytic figures of a group of ops."""

    def __init__(self, parts: list) -> None:
        self.flops = sum(p.flops for p in parts)
        self.dram_read_bytes = sum(p.dram_read_bytes for p in parts)
        self.dram_write_bytes = sum(p.dram_write_bytes for p in parts)
        self.dram_bytes = self.dram_read_bytes + self.dram_write_bytes
        self.kv_read_bytes = sum(p.kv_read_bytes for p in parts)
        self.compute = "tensor" if any(p.compute == "tensor" for p in parts) else "vector"


def _pct(num: float | None, den: float | None) -> float | None:
    if num is None or not den or not math.isfinite(num):
        return None
    return 100.0 * num / den


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ncu_points(res: dict[str, Any], batch: int, analytic: dict[str, Any], ceilings, copy_bw: float | None,
                timing: dict[str, float]) -> list:
    from gpuprobe.roofline.points import op_points

    points = op_points(res["ncu"]["ops"], batch=batch, ceilings=ceilings, measured_dram_bytes_per_s=copy_bw,
                       analytic=analytic, kernels=res["ncu"].get("kernels") or [])
    for p in points:
        p.extra.update(time_source="ncu gpu__time_duration (cold caches)", event_time_s=timing.get(p.op),
                       context=res.get("context"))
    return points


def _timing_points(res: dict[str, Any], batch: int, analytic: dict[str, Any], ceilings, copy_bw: float | None,
                   num_layers: int) -> list:
    from gpuprobe.ops import STEP_OPS
    from gpuprobe.roofline.schema import classify_limiter, make_point

    points = []
    for op, t in res["timing"]["per_op_s"].items():
        a = analytic.get(op)
        if a is None or not t:
            continue
        pct_measured = _pct(a.dram_bytes / t, copy_bw)
        tensor = _pct(a.flops / t, ceilings.flops_per_s) if a.compute == "tensor" else None
        points.append(make_point(
            op, batch, a.flops, a.dram_bytes, t, ceilings, flops_useful=a.flops, flops_executed=None,
            dram_read_bytes=a.dram_read_bytes, dram_write_bytes=a.dram_write_bytes,
            dram_pct_of_measured=pct_measured, tensor_pct=tensor,
            limiter=classify_limiter(pct_measured, None, tensor),
            layers_profiled=None if op in STEP_OPS else num_layers, scaled=False,
            extra={"time_source": "CUDA events, eager step", "kv_read_bytes": a.kv_read_bytes,
                   "pct_basis": "analytic minimum bytes and useful FLOPs over the measured time",
                   "context": res.get("context")}))
    return points


def _reading(snap: dict[str, Any] | None, key: str) -> Any:
    return (snap or {}).get(key)


def step_summary(rec: dict[str, Any]) -> dict[str, Any]:
    """The per-batch step figures of one record (ok or not) for roofline.json's ``steps``."""
    res = rec.get("result") or {}
    point = rec.get("point", {})
    tel = res.get("telemetry") or {}
    eager, graph, timing = res.get("eager") or {}, res.get("graph") or {}, res.get("timing") or {}
    window = tel.get("window") or {}
    return {
        "batch": point.get("batch", res.get("batch")), "status": rec.get("status"), "reason": rec.get("reason"),
        "seconds": rec.get("seconds"),
        "eager_step_s": eager.get("step_s"), "eager_tokens_per_s": eager.get("tokens_per_s"),
        "graph_step_s": graph.get("step_s"), "graph_tokens_per_s": graph.get("tokens_per_s"),
        "timed_step_s": timing.get("step_s"), "per_op_s": timing.get("per_op_s"),
        "throttled": tel.get("throttled"), "throttle_reasons": tel.get("reasons"),
        "sm_clock_mhz": {"before": _reading(tel.get("before"), "sm_clock_mhz"),
                         "after": _reading(tel.get("after"), "sm_clock_mhz"),
                         "window_min": window.get("sm_clock_mhz_min"), "window_mean": window.get("sm_clock_mhz_mean")},
        "temperature_c": {"before": _reading(tel.get("before"), "temperature_c"),
                          "after": _reading(tel.get("after"), "temperature_c")},
        "power_w": {"before": _reading(tel.get("before"), "power_w"), "after": _reading(tel.get("after"), "power_w"),
                    "window_avg": window.get("avg_power_w")},
        "memory": res.get("memory"), "attention": res.get("attention"),
        "ncu_seconds": (res.get("ncu") or {}).get("ncu", {}).get("seconds"),
    }


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def assemble_result(records: Sequence[dict[str, Any]], *, spec, gpu, dtype: str, copy_bw: float | None = None,
                    copy_source: str | None = None, extra_roofs: Sequence = (), sweep: dict[str, Any] | None = None,
                    **provenance_extra: Any):
    """Records of ``results.jsonl`` -> :class:`~gpuprobe.roofline.RooflineResult` (points of the ``ok`` ones)."""
    from gpuprobe.roofline.crosscheck import check_points
    from gpuprobe.roofline.schema import (LIMITER_RULE, Roof, RooflineResult, compute_roof_name, datasheet_roofs, provenance,
                                   select_ceilings)

    ok = sorted((r for r in records if r.get("status") == "ok" and r.get("result")),
                key=lambda r: r["result"]["batch"])
    modes = {r["result"]["mode"] for r in ok} or {(sweep or {}).get("mode", "timing")}
    if len(modes) > 1:
        raise UserError(f"results mix modes {sorted(modes)}; a roofline holds one mode.")
    mode = modes.pop()
    roofs = list(datasheet_roofs(gpu, dtype)) + list(extra_roofs)
    if copy_bw and not any(r.name == "dram" and r.source == "measured" for r in roofs):
        roofs.append(Roof("dram", "memory", float(copy_bw), "measured"))
    if copy_bw is None:
        copy_bw = next((r.value for r in roofs if r.name == "dram" and r.source == "measured"), None)
    peaks: dict[str, list[float]] = {}
    for r in ok:
        for name, v in ((r["result"].get("ncu") or {}).get("peaks") or {}).items():
            if v:
                peaks.setdefault(name, []).append(v)
    keep = {"dram", "l2", "fp32", compute_roof_name(dtype)}
    for name, vals in peaks.items():
        if name not in keep:
            continue
        roofs.append(Roof(name, "memory" if name in ("dram", "l2") else "compute", statistics.median(vals), "ncu_peak"))
    ceilings = select_ceilings(roofs, dtype)

    points, contexts = [], set()
    for r in ok:
        res = r["result"]
        batch, context = int(res["batch"]), int(res["context"])
        contexts.add(context)
        analytic = _analytic_by_op(spec, batch, context, dtype)
        timing = (res.get("timing") or {}).get("per_op_s") or {}
        if mode == "ncu":
            points += _ncu_points(res, batch, analytic, ceilings, copy_bw, timing)
        else:
            points += _timing_points(res, batch, analytic, ceilings, copy_bw, spec.num_layers)
    context = contexts.pop() if len(contexts) == 1 else None
    checks = check_points(points, spec, context or 0, dtype) if mode == "ncu" else []

    first = ok[0]["result"] if ok else {}
    ncu_meta = (first.get("ncu") or {}).get("ncu") or {}
    versions = first.get("versions") or {}
    clocks = [((r["result"].get("ncu") or {}).get("clocks") or {}).get("sm_hz_median") for r in ok]
    steps = [step_summary(r) for r in sorted(records, key=lambda r: r.get("point", {}).get("batch", 0))]
    prov = provenance(
        gpu_display_name=gpu.display_name, device_name=versions.get("device_name") or first.get("ncu", {}).get("device_name"),
        driver=versions.get("driver"), cuda_version=versions.get("cuda"),
        worker_torch_version=versions.get("torch"), worker_triton_version=versions.get("triton"),
        ncu_version=ncu_meta.get("version"), ncu_path=ncu_meta.get("path"),
        clock_control=ncu_meta.get("clock_control"), cache_control=ncu_meta.get("cache_control"),
        replay_mode=ncu_meta.get("replay_mode"), nvtx_filter=ncu_meta.get("nvtx_include"),
        metric_set=ncu_meta.get("metric_set"), ncu_command_example=ncu_meta.get("command"),
        clocks_seen={"ncu_sm_hz_median": _median(clocks),
                     "nvml_sm_clock_mhz_min": min((s["sm_clock_mhz"]["window_min"] for s in steps
                                                   if s["sm_clock_mhz"]["window_min"] is not None), default=None)},
        copy_bandwidth_source=copy_source, **provenance_extra,
    )
    if versions.get("torch"):
        prov["torch_version"] = versions["torch"]
        prov["triton_version"] = versions.get("triton")
    batches = sorted({int(r["result"]["batch"]) for r in ok})
    result = RooflineResult(
        model=spec.name, gpu=gpu.name, mode=mode, context=context, dtype=dtype, layers=spec.num_layers,
        ceilings=ceilings, roofs=roofs, points=points, batch=batches, provenance=prov,
        limiter_rule=dict(LIMITER_RULE),
        extra={
            "attention": first.get("attention") or (sweep or {}).get("attention"),
            "layers_mode": (sweep or {}).get("layers", first.get("layers")),
            "copy_bandwidth": {"bytes_per_s": copy_bw, "source": copy_source},
            "steps": steps,
            "crosschecks": [c.to_dict() for c in checks],
            "failed_points": [{"batch": s["batch"], "status": s["status"], "reason": s["reason"]}
                              for s in steps if s["status"] != "ok"],
            "sweep": sweep or {},
        },
    )
    result.extra["throughput"] = throughput_section(result)
    return result


def throughput_section(result) -> list[dict[str, Any]]:
    """roofline.json's ``throughput``: tokens/s per batch (CUDA-graph replay where measured, else eager),
    the section ``gpuprobe advise --from DIR`` reads."""
    from gpuprobe.render.plots.throughput import throughput_rows

    rows = [r for r in throughput_rows(result) if r["status"] == "ok"]
    best: dict[int, dict[str, Any]] = {}
    for r in rows:  # graph rows come first; keep them over eager ones
        best.setdefault(r["batch"], r)
    return [{k: r[k] for k in ("batch", "tokens_per_s", "step_latency_s", "mode", "context", "model", "dtype",
                               "attention")} for _, r in sorted(best.items())]


# ---- outputs ---------------------------------------------------------------------------------------
def write_outputs(result, out: str | Path) -> dict[str, Path]:
    """roofline.json/.csv, the four figures and report.md into ``out``; returns what was written."""
    from gpuprobe.render.plots.bandwidth import plot_bandwidth_vs_batch
    from gpuprobe.render.plots.breakdown import plot_time_breakdown
    from gpuprobe.render.plots.roofline import plot_roofline
    from gpuprobe.render.plots.throughput import plot_result_throughput
    from gpuprobe.render.report_md import write_report

    out = Path(out)
    files: dict[str, Path] = {}
    files["json"], files["csv"] = result.write(out)
    if result.points:
        files["roofline"] = plot_roofline(result, out / "roofline.png")
        files["bandwidth"] = plot_bandwidth_vs_batch(result, out / "bandwidth_vs_batch.png")
        files["breakdown"] = plot_time_breakdown(result, out / "time_breakdown.png")
    tp = plot_result_throughput(result, out / "throughput.png")
    if tp is not None:
        files["throughput"] = tp
    files["report"] = write_report(result, out, figures={k: v.name for k, v in files.items()})
    return files


# ---- the CLI's entry -------------------------------------------------------------------------------
def _banner(mode: str, why: str, gpu, out: Path) -> str:
    if mode == "ncu":
        return (f"gpuprobe roofline: NCU mode ({why}): Nsight Compute counters per kernel on {gpu.display_name}; "
                f"writing to {out}")
    return (f"gpuprobe roofline: TIMING mode ({why}): CUDA-event time per op with analytic bytes and FLOPs, "
            f"no counters; writing to {out}")


def run_measured_roofline(args, *, spec, gpu, batches: Sequence[int], context: int, dtype: str, mode: str) -> int:
    """``gpuprobe roofline`` with a GPU: sweep, assemble, write; returns the exit status."""
    from gpuprobe.cli._common import DEFAULT_BATCHES, output_dir

    t_start = time.perf_counter()
    mode, why = choose_measured_mode(mode)
    explicit = str(args.batch) != ",".join(map(str, DEFAULT_BATCHES))
    batches, note = plan_batches(batches, spec, gpu, context, dtype, explicit=explicit)
    layers = getattr(args, "layers", "one")
    attention = getattr(args, "attention", None)
    model = args.model
    config = sweep_config(model, context=context, dtype=dtype, attention=attention, mode=mode, layers=layers,
                          batches=batches)
    if getattr(args, "resume", None):
        out = Path(args.resume)
        check_resume(out, config)
    else:
        out = output_dir(args.out, f"roofline-{spec.name}")
    (out / SWEEP_FILE).write_text(json.dumps(config, indent=2) + "\n")
    print(_banner(mode, why, gpu, out), flush=True)
    if note:
        print(note, flush=True)

    points = make_points(model, batches, context=context, dtype=dtype, attention=attention, mode=mode,
                         layers=layers, out_dir=out)
    extra_roofs = cached_roofs(gpu, dtype, not getattr(args, "datasheet", False))
    return measure_sweep(points, out, spec=spec, gpu=gpu, dtype=dtype, config=config,
                         resume=bool(getattr(args, "resume", None)), extra_roofs=extra_roofs, t_start=t_start)


def measure_sweep(points: list[dict[str, Any]], out: Path, *, spec, gpu, dtype: str, config: dict[str, Any],
                  resume: bool = False, worker: str = WORKER, copy_bw: float | None = None,
                  copy_source: str | None = None, extra_roofs: Sequence = (), progress: bool = True,
                  on_record=None, t_start: float | None = None, point_timeout_s: float | None = None) -> int:
    """Run the points, then assemble and write every output from what finished; returns the exit status
    (0, 1 when no point finished, 130 after Ctrl-C). ``copy_bw`` None: :func:`measured_copy_bandwidth`;
    ``point_timeout_s`` None: :data:`POINT_TIMEOUT_S` of the mode (keep it above the points' ``ncu_timeout_s``,
    so that ncu, which runs in its own process group, is stopped by its own limit first)."""
    from gpuprobe.render.report_md import verdict_lines
    from gpuprobe.render.tables import print_roofline_table
    from gpuprobe.measure.sweep import read_results, run_sweep

    t_start = time.perf_counter() if t_start is None else t_start
    out = Path(out)
    interrupted = False
    try:
        limit = point_timeout_s if point_timeout_s is not None else POINT_TIMEOUT_S.get(config.get("mode"), 600.0)
        run_sweep(points, worker, out, resume=resume, timeout_s=limit,
                  label=lambda p: f"batch {p['batch']}", progress=progress, on_record=on_record)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: every finished point is in {out / 'results.jsonl'}; "
              f"continue with --resume {out}", flush=True)
    sweep_s = time.perf_counter() - t_start
    wanted = {p["batch"] for p in points}
    records = [r for r in read_results(out) if r.get("point", {}).get("batch") in wanted]
    if not any(r["status"] == "ok" for r in records):
        reasons = "; ".join(f"batch {r['point']['batch']}: {r['status']}: {r['reason']}" for r in records[:3])
        print(f"gpuprobe roofline: no point finished{': ' + reasons if reasons else ''}", file=sys.stderr)
        return 130 if interrupted else 1
    if copy_bw is None:
        copy_bw, copy_source = measured_copy_bandwidth()
        if copy_bw is None:
            print(f"note: {copy_source}; DRAM % of measured uses a cached measured roof when there is one",
                  flush=True)
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, copy_bw=copy_bw, copy_source=copy_source,
                             extra_roofs=extra_roofs,
                             sweep={**config, "wall_s": round(sweep_s, 1), "interrupted": interrupted,
                                    "out": str(out)})
    files = write_outputs(result, out)
    print_roofline_table(result)
    for line in verdict_lines(result):
        print(line)
    for f in result.extra["failed_points"]:
        print(f"batch {f['batch']}: {f['status']}: {f['reason']}")
    throttled = [s for s in result.extra["steps"] if s.get("throttled")]
    for s in throttled:
        print(f"batch {s['batch']}: measured while the GPU throttled ({', '.join(s['throttle_reasons'] or [])}); "
              "its times may be slow")
    for name in ("report", "json", "csv", "roofline", "bandwidth", "breakdown", "throughput"):
        if name in files:
            print(f"wrote {files[name]}")
    print(f"sweep wall time: {sweep_s:.1f} s for {len(points)} points ({config.get('mode')} mode)", flush=True)
    return 130 if interrupted else 0
