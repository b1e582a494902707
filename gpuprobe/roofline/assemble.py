"""Assembly: the records of a sweep (``results.jsonl``) -> one :class:`~gpuprobe.roofline.schema.RooflineResult`.

:func:`assemble_result` builds ``roofline.json`` (docs/contracts.md section 2): per op and
batch, counter figures (ncu mode, through the one op-table -> points path of
:mod:`gpuprobe.roofline.points`) or CUDA-event times with analytic bytes and FLOPs (timing mode),
``flops_useful`` from the cost model, ``dram_pct_of_measured`` over the measured copy bandwidth,
``limiter``; the per-batch step figures (eager and CUDA-graph tokens/s, NVML readings, throttling)
and the cross-checks of :mod:`gpuprobe.roofline.crosscheck` ride along. Works from the records
alone, on any machine.
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable, Sequence

from gpuprobe.analytic import decode_costs
from gpuprobe.errors import UserError
from gpuprobe.ops import CLASS_MEMBERS, GROUP_MEMBERS, STEP_OPS
from gpuprobe.roofline.crosscheck import check_points
from gpuprobe.roofline.points import dram_pct_of_measured, judge_limiter, op_points
from gpuprobe.roofline.schema import (LIMITER_RULE, RooflineResult, compute_roof_name, make_point, provenance,
                                      roofs_and_ceilings)

_MODES = (("graph", "graph_tokens_per_s", "graph_step_s"), ("eager", "eager_tokens_per_s", "eager_step_s"))


def _analytic_by_op(spec, batch: int, context: int, dtype: str) -> dict[str, Any]:
    """Analytic figures per op, group and kernel class, in the engine's default kernel mode; ops that mode
    fuses away (``rope``, ``residual_add``) keep their unfused figures, for traces of engines that run
    them as kernels of their own (a ``rotary_embedding`` kernel named ``rope`` by the rule table)."""
    costs = {c.op: c for c in decode_costs(spec, batch, context, dtype)}
    unfused = {c.op: c for c in decode_costs(spec, batch, context, dtype, "unfused")}
    out: dict[str, Any] = {**{op: c for op, c in unfused.items() if op not in costs}, **costs}
    for group, members in {**GROUP_MEMBERS, **CLASS_MEMBERS}.items():  # sums of the default mode's ops
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


def _ncu_points(res: dict[str, Any], batch: int, analytic: dict[str, Any], ceilings, copy_bw: float | None,
                timing: dict[str, float]) -> list:
    points = op_points(res["ncu"]["ops"], batch=batch, ceilings=ceilings, measured_dram_bytes_per_s=copy_bw,
                       analytic=analytic, kernels=res["ncu"].get("kernels") or [])
    for p in points:
        p.extra.update(time_source="ncu gpu__time_duration (cold caches)", event_time_s=timing.get(p.op),
                       context=res.get("context"))
    return points


def _timing_points(res: dict[str, Any], batch: int, analytic: dict[str, Any], ceilings, copy_bw: float | None,
                   num_layers: int) -> list:
    points = []
    for op, t in res["timing"]["per_op_s"].items():
        a = analytic.get(op)
        if a is None or not t:
            continue
        pct_measured = dram_pct_of_measured(a.dram_bytes, t, copy_bw)
        tensor = 100.0 * a.flops / t / ceilings.flops_per_s if a.compute == "tensor" else None
        points.append(make_point(
            op, batch, a.flops, a.dram_bytes, t, ceilings, flops_useful=a.flops, flops_executed=None,
            dram_read_bytes=a.dram_read_bytes, dram_write_bytes=a.dram_write_bytes,
            dram_pct_of_measured=pct_measured, tensor_pct=tensor,
            limiter=judge_limiter(pct_measured, None, None, tensor),
            layers_profiled=None if op in STEP_OPS else num_layers, scaled=False,
            extra={"time_source": res["timing"].get("time_source", "CUDA events, eager step"),
                   "kv_read_bytes": a.kv_read_bytes,
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
        "fallback": res.get("fallback"),
    }


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _asked_mode(result: dict[str, Any]) -> str:
    """The mode a point was asked for: a point measured in timing mode because its node refused the GPU
    counters (``fallback``, :func:`gpuprobe.measure.point.counter_fallback`) still belongs to its ncu sweep."""
    return (result.get("fallback") or {}).get("requested_mode") or result["mode"]


def assemble_result(records: Sequence[dict[str, Any]], *, spec, gpu, dtype: str, copy_bw: float | None = None,
                    copy_source: str | None = None, extra_roofs: Sequence = (), sweep: dict[str, Any] | None = None,
                    **provenance_extra: Any):
    """Records of ``results.jsonl`` -> :class:`~gpuprobe.roofline.RooflineResult` (points of the ``ok`` ones)."""
    ok = sorted((r for r in records if r.get("status") == "ok" and r.get("result")),
                key=lambda r: r["result"]["batch"])
    modes = {_asked_mode(r["result"]) for r in ok} or {(sweep or {}).get("mode", "timing")}
    if len(modes) > 1:
        raise UserError(f"results mix modes {sorted(modes)}; a roofline holds one mode.")
    mode = modes.pop()
    if copy_bw is None:
        copy_bw = next((r.value for r in extra_roofs if r.name == "dram" and r.source == "measured"), None)
    peaks: dict[str, list[float]] = {}
    for r in ok:
        for name, v in ((r["result"].get("ncu") or {}).get("peaks") or {}).items():
            if v:
                peaks.setdefault(name, []).append(v)
    keep = {"dram", "l2", "fp32", compute_roof_name(dtype)}
    roofs, ceilings, _ = roofs_and_ceilings(
        gpu, dtype, extra_roofs=extra_roofs, measured_dram_bytes_per_s=copy_bw,
        ncu_peaks={name: statistics.median(vals) for name, vals in peaks.items() if name in keep})
    if ceilings is None:
        raise UserError(f"{gpu.display_name} has no {compute_roof_name(dtype)} or FP32 roof: no roofline in {dtype}.")

    points, contexts = [], set()
    for r in ok:
        res = r["result"]
        batch, context = int(res["batch"]), int(res["context"])
        contexts.add(context)
        analytic = _analytic_by_op(spec, batch, context, dtype)
        timing = (res.get("timing") or {}).get("per_op_s") or {}
        if res["mode"] == "ncu":
            points += _ncu_points(res, batch, analytic, ceilings, copy_bw, timing)
        else:  # a timing point, or a point of an ncu sweep whose node refused the counters (flagged)
            mine = _timing_points(res, batch, analytic, ceilings, copy_bw, spec.num_layers)
            for p in mine if res.get("fallback") else ():
                p.extra["fallback"] = res["fallback"]
            points += mine
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


def throughput_rows(result: RooflineResult) -> list[dict[str, Any]]:
    """One row per batch and mode (``graph``, ``eager``) that was measured; failed points as failed rows
    (the rows of ``throughput.png`` and of :func:`throughput_section`)."""
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


def throughput_section(result) -> list[dict[str, Any]]:
    """roofline.json's ``throughput``: tokens/s per batch (CUDA-graph replay where measured, else eager),
    the section ``gpuprobe advise --from DIR`` reads."""
    rows = [r for r in throughput_rows(result) if r["status"] == "ok"]
    best: dict[int, dict[str, Any]] = {}
    for r in rows:  # graph rows come first; keep them over eager ones
        best.setdefault(r["batch"], r)
    return [{k: r[k] for k in ("batch", "tokens_per_s", "step_latency_s", "mode", "context", "model", "dtype",
                               "attention")} for _, r in sorted(best.items())]
