"""The roofline of a traced decode: each op's median time per step joined with its analytic bytes and FLOPs.

Steps are grouped by batch (from ``--batch``, else the step ranges' names: ``decode b=64 c=1024``);
each group becomes one record of the measured-roofline sweep format, with mode ``nsys``, and goes
through the same assembly as timing mode (:func:`gpuprobe.roofline.assemble.assemble_result`): so
``roofline.json``, its CSV, the figures and ``report.md`` come out as for any measured roofline, and
``advise --from`` and ``diff`` read them. Per op, ``time_s`` is the median over the group's steps of
the op's summed kernel time in a step (all layers), the DRAM % is the cost model's minimum bytes over
that time. Rule-table classes that hold several ops are points of their summed analytic figures
(``gemm``: the five GEMMs, ``norm``: the three norms; ``attention``, ``rope``, ``kv_write``, ``act``,
``sample`` are op names already); what the analytic model does not know (``other:...``,
``elementwise``, ``reduce``, ``memcpy``...) is not a point: its time is in ``extra['nsys']['unattributed_s']``. The context of a group is
the median of its steps' contexts (a decode's context grows by one per step).
"""
from __future__ import annotations

import statistics
from typing import Any

import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.nsys.steps import TraceSteps
from gpuprobe.ops import CLASS_MEMBERS, GROUP_MEMBERS, OPS
from gpuprobe.roofline.assemble import assemble_result

NO_COPY_BANDWIDTH = ("no measured copy bandwidth of the traced GPU: DRAM % of measured and the memory/latency "
                     "limiter are left out; pass --measured-dram-tbps (`gpuprobe ceilings` measures it on that GPU)")
TIME_SOURCE = "nsys: kernel durations (CUPTI), summed per op and step, median over steps"


def _steps_by_batch(stats: TraceSteps, batch: int | None, context: int | None) -> dict[int, list[int]]:
    steps = stats.steps
    out: dict[int, list[int]] = {}
    for step, row in steps.iterrows():
        b = batch if batch is not None else (None if pd.isna(row["batch"]) else int(row["batch"]))
        if b is None:
            raise UserError("the batch size is not known: pass --batch B (or record it in the step range "
                            "name, e.g. 'decode b=64 c=1024')")
        c = context if context is not None else (None if pd.isna(row["context"]) else int(row["context"]))
        if c is None:
            raise UserError("the context length is not known: pass --context C (or record it in the step range "
                            "name, e.g. 'decode b=64 c=1024')")
        out.setdefault(b, []).append(int(step))
    return out


def trace_records(stats: TraceSteps, *, batch: int | None = None, context: int | None = None,
                  device_name: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
    """One ``results.jsonl``-style record (status ``ok``, mode ``nsys``) per batch size of the traced steps."""
    records = []
    for b, ids in sorted(_steps_by_batch(stats, batch, context).items()):
        st = stats.steps.loc[ids]
        per_op = stats.per_op.loc[ids]
        ctxs = [context] if context is not None else [int(c) for c in st["context"].dropna()]
        ctx = int(round(statistics.median(ctxs)))
        per_op_s = {str(op): float(per_op[op].median()) for op in per_op.columns}
        graph = bool((st["graph_kernels"] > 0).any())
        span = float(st["span_s"].median())
        step = {"step_s": span, "tokens_per_s": b / span if span > 0 else None, "steps": len(ids)}
        records.append({
            "status": "ok", "point": {"batch": b}, "seconds": None,
            "result": {
                "mode": "nsys", "batch": b, "context": ctx, "attention": None,
                "timing": {"per_op_s": per_op_s, "step_s": float(st["kernel_time_s"].median()),
                           "time_source": TIME_SOURCE, "steps": len(ids),
                           "method": "nsys trace: per-op kernel time of each step, median over steps"},
                "graph": step if graph else None,
                "eager": None if graph else step,
                "versions": {"device_name": device_name},
                "nsys": {"source": source, "steps": [int(i) for i in ids],
                         "kernel_time_s_median": float(st["kernel_time_s"].median()),
                         "idle_s_median": float(st["idle_s"].median()), "span_s_median": span,
                         "kernels_per_step_median": float(st["n_kernels"].median()),
                         "contexts": sorted(set(ctxs))},
            },
        })
    return records


def trace_roofline(stats: TraceSteps, *, spec, gpu, dtype: str = "bf16", batch: int | None = None,
                   context: int | None = None, device_name: str | None = None, source: str | None = None,
                   copy_bw: float | None = None, copy_source: str | None = None, extra_roofs=(),
                   nsys_version: str | None = None):
    """:class:`~gpuprobe.roofline.RooflineResult` (mode ``nsys``) of a trace's steps."""

    records = trace_records(stats, batch=batch, context=context, device_name=device_name, source=source)
    result = assemble_result(records, spec=spec, gpu=gpu, dtype=dtype, copy_bw=copy_bw, copy_source=copy_source,
                             extra_roofs=extra_roofs, sweep={"mode": "nsys", "source": source},
                             trace=source, time_source=TIME_SOURCE, nsys_version=nsys_version)
    if not any(r.name == "dram" and r.source == "measured" for r in result.roofs):
        # no measured copy bandwidth of the traced GPU: DRAM % is unknown, so a point under the compute
        # threshold is not known to be latency-bound either
        for p in result.points:
            if p.dram_pct_of_measured is None and p.limiter == "latency":
                p.limiter = None
        result.provenance["limiter_note"] = NO_COPY_BANDWIDTH
    modelled = set(OPS) | set(GROUP_MEMBERS) | set(CLASS_MEMBERS)
    unattributed = {op: t for op, t in stats.op_median_s.items() if op not in modelled}
    result.extra["nsys"] = {"source": source, "summary": stats.summary,
                            "unattributed_s": dict(sorted(unattributed.items(), key=lambda kv: -kv[1])),
                            "records": [r["result"]["nsys"] for r in records]}
    if not result.points:
        raise UserError(f"{source}: no op of the trace is one gpuprobe's cost model knows "
                        f"({', '.join(sorted(stats.op_median_s)[:8])}); name ops with NVTX ranges "
                        "(docs/nsys.md), or align a graph trace with --align-eager")
    return result
