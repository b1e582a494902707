"""The one path from a per-op table to roofline points (docs/contracts.md section 6).

``gpuprobe report`` (:func:`gpuprobe.ncu.counter_roofline.report_to_roofline`) and the measured sweep
(:func:`gpuprobe.roofline.assemble.assemble_result`) both hand their per-op rows to :func:`op_points`;
the op table (:func:`gpuprobe.ncu.counter_roofline.op_table`) uses :func:`dram_pct_of_measured` and
:func:`judge_limiter` for its own columns. So "% of measured bandwidth" and ``limiter`` have one
formula, and the two commands give the same points for the same report.

A row is a mapping with the op table's columns: ``op, time_s, flops, flops_tensor, flops_fp32,
dram_read_bytes, dram_write_bytes, dram_bytes, dram_pct_of_ncu_peak, sm_pct, tensor_pct,
layers_profiled, scaled, n_kernels`` (any may be missing: missing values stay missing, never 0).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from gpuprobe.jsonsafe import finite, json_value
from gpuprobe.roofline.schema import Ceilings, RooflinePoint, classify_limiter, intensity_and_bound


def dram_pct_of_measured(dram_bytes: Any, time_s: Any, measured_dram_bytes_per_s: float | None) -> float | None:
    """Achieved DRAM bytes/s as % of the measured copy bandwidth (docs/contracts.md section 11)."""
    b, t = finite(dram_bytes), finite(time_s)
    if b is None or not t or not measured_dram_bytes_per_s:
        return None
    return b / t / measured_dram_bytes_per_s * 100.0


def judge_limiter(pct_measured: Any, pct_ncu_peak: Any, sm_pct: Any, tensor_pct: Any) -> str | None:
    """:func:`~gpuprobe.roofline.schema.classify_limiter` on DRAM % of the measured roof when known,
    else on ncu's own DRAM % of peak."""
    m = finite(pct_measured)
    return classify_limiter(m if m is not None else finite(pct_ncu_peak), finite(sm_pct), finite(tensor_pct))


def _count(x: Any) -> int | None:
    v = finite(x)
    return None if v is None else int(v)


def op_points(rows: Iterable[Mapping[str, Any]], *, batch: int | None, ceilings: Ceilings | None,
              measured_dram_bytes_per_s: float | None = None, analytic: Mapping[str, Any] | None = None,
              kernels: Sequence[Mapping[str, Any]] | None = None,
              row_extra: Sequence[str] = ()) -> list[RooflinePoint]:
    """Per-op rows -> :class:`~gpuprobe.roofline.schema.RooflinePoint` (one per row, in row order).

    ``analytic``: cost per op (:class:`gpuprobe.analytic.OpCost`-like: ``flops``, ``dram_bytes``,
    ``kv_read_bytes``): adds ``flops_useful`` and the padding ratio, and stands in for FLOPs the
    counters lack. ``kernels``: per-kernel rows, attached to the point of their ``op``. ``row_extra``:
    row keys copied into each point's ``extra`` (e.g. the kernel name of a per-kernel row).
    ``intensity`` and ``bound`` are None when FLOPs or bytes are missing or the bytes are 0, and ``bound``
    is None without ``ceilings`` (a report from an unknown GPU with no peaks).
    """
    points = []
    for row in rows:
        op = row["op"]
        t = finite(row.get("time_s"))
        cost = (analytic or {}).get(op)
        useful = finite(cost.flops) if cost is not None else None
        executed = finite(row.get("flops"))
        flops = executed if executed is not None else useful
        reads, writes = finite(row.get("dram_read_bytes")), finite(row.get("dram_write_bytes"))
        dram = finite(row.get("dram_bytes"))
        if dram is None and reads is not None and writes is not None:
            dram = reads + writes
        pct_measured = dram_pct_of_measured(dram, t, measured_dram_bytes_per_s)
        pct_ncu, sm, tensor = (finite(row.get(k)) for k in ("dram_pct_of_ncu_peak", "sm_pct", "tensor_pct"))
        extra: dict[str, Any] = {"flops_tensor": finite(row.get("flops_tensor")),
                                 "flops_fp32": finite(row.get("flops_fp32"))}
        if executed is None and useful is not None:
            extra["flops_source"] = "analytic (no FLOP counters in the report)"
        elif executed is not None:
            extra["flops_source"] = "counters"
        extra.update({k: json_value(row.get(k)) for k in row_extra})
        if cost is not None:
            extra.update(analytic_dram_bytes=cost.dram_bytes, kv_read_bytes=cost.kv_read_bytes)
            if useful and executed is not None:
                extra["padding"] = executed / useful
        mine = [dict(k) for k in kernels if k.get("op") == op] if kernels is not None else []
        intensity, bound = intensity_and_bound(flops, dram, ceilings)
        p = RooflinePoint(op, batch, flops, dram, t, intensity, bound,
                          flops_useful=useful, flops_executed=executed, dram_read_bytes=reads,
                          dram_write_bytes=writes, dram_pct_of_measured=pct_measured, dram_pct_of_ncu_peak=pct_ncu,
                          sm_pct=sm, tensor_pct=tensor, limiter=judge_limiter(pct_measured, pct_ncu, sm, tensor),
                          layers_profiled=_count(row.get("layers_profiled")), scaled=bool(row.get("scaled")),
                          n_kernels=_count(row.get("n_kernels")), kernels=mine or None, extra=extra)
        points.append(p)
    return points
