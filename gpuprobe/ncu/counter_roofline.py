"""The counter roofline: per kernel and per op, FLOPs, DRAM bytes, intensity, rates, % of peak, limiter.

Ceilings come from the report's own peak metrics when it holds them (``source: "ncu_peak"``):
DRAM = ``dram__bytes.sum.peak_sustained`` x DRAM clock, tensor = the dense HGMMA per-cycle peak x SM
clock, FP32 = 2 x the FFMA per-cycle peak x SM clock, L2 = ``lts__t_bytes.sum.peak_sustained`` x L2
clock (medians over kernels: with ``--clock-control none`` clocks vary per kernel). Datasheet roofs
of a named GPU and a measured copy bandwidth are added when given; ``bound`` then uses the measured
DRAM roof, else the datasheet's, else ncu's (:func:`gpuprobe.roofline.select_ceilings`). A GPU the
registry does not know (matched exactly by :func:`gpuprobe.specs.gpus.resolve_gpu`: the GH200 is not the H200) gets the
report's own peaks only; a GPU with no tensor roof of the dtype is judged against FP32; a report with
no roof at all has ``ceilings: null`` and no ``bound`` (:func:`report_roofs`).

Percentages: ``dram_pct_of_ncu_peak`` is ncu's ``dram__throughput`` (per op: time-weighted);
``dram_pct_of_measured`` is achieved bytes/s over the measured copy bandwidth; ``sm_pct`` and
``tensor_pct`` are ncu's throughput percentages (time-weighted per op). ``limiter`` follows
:data:`gpuprobe.roofline.LIMITER_RULE`, judged on ``dram_pct_of_measured`` when a measured roof is
known, else on ``dram_pct_of_ncu_peak``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.jsonsafe import json_value
from gpuprobe.ncu import metrics as M
from gpuprobe.ncu.counters import rates_above_peak
from gpuprobe.ops import STEP_OPS, op_order
from gpuprobe.roofline.points import dram_pct_of_measured, judge_limiter, op_points
from gpuprobe.roofline.schema import (
    LIMITER_RULE, Roof, RooflineResult, compute_roof_name, datasheet_roofs, provenance, select_ceilings,
)
from gpuprobe.specs.gpus import resolve_gpu

KERNEL_COLUMNS = (
    "id", "op", "layer", "kernel_short", "kernel_key", "time_s", "time_derived", "flops", "flops_tensor", "flops_fp32",
    "dram_read_bytes", "dram_write_bytes", "dram_bytes", "intensity", "flops_per_s", "dram_bytes_per_s",
    "dram_pct_of_ncu_peak", "dram_pct_of_measured", "sm_pct", "tensor_pct", "limiter",
)


def _median(df: pd.DataFrame, per_cycle: str, hz: str, factor: float = 1.0) -> float | None:
    if per_cycle in df.columns and hz in df.columns:
        v = pd.to_numeric(df[per_cycle], errors="coerce") * pd.to_numeric(df[hz], errors="coerce") * factor
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            return float(v.median())
    rate = per_cycle.replace(".peak_sustained", ".peak_sustained_elapsed.per_second")
    if rate in df.columns:
        v = pd.to_numeric(df[rate], errors="coerce") * factor
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            return float(v.median())
    return None


def report_peaks(df: pd.DataFrame) -> dict[str, float]:
    """Peaks the report itself implies (bytes/s, FLOP/s), by roof name; only those it can give."""
    peaks: dict[str, float | None] = {
        "dram": _median(df, M.DRAM_PEAK_PER_CYCLE, M.DRAM_HZ),
        "l2": _median(df, M.L2_PEAK_PER_CYCLE, M.LTS_HZ),
        "fp32": _median(df, M.FFMA_PEAK_PER_CYCLE, M.SM_HZ, 2.0),
    }
    for dt, metric in M.TENSOR_PEAK_PER_CYCLE.items():
        peaks[f"tensor_{dt}"] = _median(df, metric, M.SM_HZ)
    return {k: v for k, v in peaks.items() if v}


def kernel_table(df: pd.DataFrame, measured_dram_bytes_per_s: float | None = None) -> pd.DataFrame:
    """One row per kernel launch with the roofline quantities (needs ``load_report``'s columns)."""
    df = df.copy()
    if "kernel_key" not in df.columns:
        df["kernel_key"] = df["kernel_short"]
    if "time_derived" not in df.columns:
        df["time_derived"] = False
    t = df[[c for c in ("id", "op", "layer", "kernel_short", "kernel_key", "time_s", "time_derived", "flops", "flops_tensor", "flops_fp32",
                        "dram_read_bytes", "dram_write_bytes", "dram_bytes", "sm_pct", "tensor_pct")]].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        t["intensity"] = t["flops"] / t["dram_bytes"].where(t["dram_bytes"] > 0)
        t["flops_per_s"] = t["flops"] / t["time_s"]
        t["dram_bytes_per_s"] = t["dram_bytes"] / t["time_s"]
    peak = report_peaks(df).get("dram")
    pct = df["dram_pct"].astype(float)
    if peak:
        pct = pct.fillna(t["dram_bytes_per_s"] / peak * 100.0)
    t["dram_pct_of_ncu_peak"] = pct
    measured = [dram_pct_of_measured(b, s, measured_dram_bytes_per_s) for b, s in zip(t["dram_bytes"], t["time_s"])]
    t["dram_pct_of_measured"] = pd.Series(measured, index=t.index, dtype=float)
    t["limiter"] = [judge_limiter(*r) for r in zip(measured, pct, t["sm_pct"], t["tensor_pct"])]
    return t[list(KERNEL_COLUMNS)]


def _wmean(values: pd.Series, weights: pd.Series) -> float:
    m = np.isfinite(values) & np.isfinite(weights)
    if not m.any() or weights[m].sum() <= 0:
        return math.nan
    return float((values[m] * weights[m]).sum() / weights[m].sum())


def _nansum_strict(s: pd.Series) -> float:
    """Sum, NaN when any part is missing (a partial sum would be a guess)."""
    return math.nan if s.isna().any() else float(s.sum())


def op_table(kernels: pd.DataFrame, measured_dram_bytes_per_s: float | None = None,
             scale_to_layers: int | None = None) -> pd.DataFrame:
    """Kernels grouped by op (summed over the layers profiled), in op order, with rates and percentages.

    ``scale_to_layers``: multiply each per-layer op by ``scale_to_layers / layers_profiled`` to stand
    for a whole step (``scaled`` is then True); whole-step ops are never scaled.
    """
    rows = []
    for op, g in kernels.groupby("op", sort=False):
        layers = g["layer"].dropna().unique()
        n_layers = len(layers) or None
        factor = 1.0
        if scale_to_layers and n_layers and op not in STEP_OPS:
            factor = scale_to_layers / n_layers
        time_s = _nansum_strict(g["time_s"]) * factor
        row: dict[str, Any] = {
            "op": op, "n_kernels": len(g), "layers_profiled": n_layers, "scaled": factor != 1.0,
            "time_s": time_s,
            "flops": _nansum_strict(g["flops"]) * factor,
            "flops_tensor": _nansum_strict(g["flops_tensor"]) * factor,
            "flops_fp32": _nansum_strict(g["flops_fp32"]) * factor,
            "dram_read_bytes": _nansum_strict(g["dram_read_bytes"]) * factor,
            "dram_write_bytes": _nansum_strict(g["dram_write_bytes"]) * factor,
            "dram_bytes": _nansum_strict(g["dram_bytes"]) * factor,
            "dram_pct_of_ncu_peak": _wmean(g["dram_pct_of_ncu_peak"], g["time_s"]),
            "sm_pct": _wmean(g["sm_pct"], g["time_s"]),
            "tensor_pct": _wmean(g["tensor_pct"], g["time_s"]),
        }
        row["intensity"] = row["flops"] / row["dram_bytes"] if row["dram_bytes"] else math.nan
        row["flops_per_s"] = row["flops"] / time_s if time_s and math.isfinite(time_s) else math.nan
        row["dram_bytes_per_s"] = row["dram_bytes"] / time_s if time_s and math.isfinite(time_s) else math.nan
        measured = dram_pct_of_measured(row["dram_bytes"], time_s, measured_dram_bytes_per_s)
        row["dram_pct_of_measured"] = math.nan if measured is None else measured
        row["limiter"] = judge_limiter(measured, row["dram_pct_of_ncu_peak"], row["sm_pct"], row["tensor_pct"])
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values("op", key=lambda s: s.map(op_order)).reset_index(drop=True)
        total = _nansum_strict(out["time_s"])
        out["time_share"] = out["time_s"] / total if total and math.isfinite(total) else math.nan
    return out


def report_roofs(df: pd.DataFrame, spec: Any, dtype: str, measured_dram_bytes_per_s: float | None = None):
    """(roofs, ceilings or None, notes): every roof known for the report's GPU, and the two ``bound`` uses.

    Roofs: the measured copy bandwidth (``measured``), the registry's datasheet (``datasheet``) when
    the GPU is known, and the report's own peaks (``ncu_peak``): only roofs that exist for that GPU.
    Ceilings: DRAM measured > datasheet > ncu_peak; compute: the dtype's tensor roof, else FP32 (a GPU
    with no tensor roof of that dtype, or a report without tensor peaks: V100, T4, consumer cards),
    with a note; None when no DRAM or no compute roof is known (an unknown GPU and a report without
    peaks), with a note saying what to pass.
    """

    notes: list[str] = []
    roofs: list[Roof] = []
    if measured_dram_bytes_per_s:
        roofs.append(Roof("dram", "memory", float(measured_dram_bytes_per_s), "measured"))
    if spec is not None:  # a datasheet peak the GPU does not have (bf16 on a V100) is no roof
        roofs += [r for r in datasheet_roofs(spec, dtype) if r.value is not None and r.value > 0]
    for name, value in report_peaks(df).items():
        roofs.append(Roof(name, "memory" if name in ("dram", "l2") else "compute", value, "ncu_peak"))
    device = df.attrs.get("device_name")
    if spec is None:
        who = f"'{device}' is not in the GPU registry" if device else "the report names no GPU"
        notes.append(f"{who}: roofs from the report's own peaks" if roofs else f"{who} and holds no peak metrics")
    names = {r.name for r in roofs}
    want = compute_roof_name(dtype)
    if "dram" in names and want not in names and "fp32" in names:
        notes.append(f"no {want} roof for this GPU: the compute ceiling is FP32")
        want_dtype = "fp32"
    else:
        want_dtype = dtype
    if "dram" not in names or compute_roof_name(want_dtype) not in names:
        lacking = [x for x in ("dram", compute_roof_name(want_dtype)) if x not in names]
        notes.append(f"no {' or '.join(lacking)} roof known: points have no bound (pass --gpu NAME, see "
                     "`gpuprobe gpus`, or --measured-dram-tbps)")
        return roofs, None, notes
    return roofs, select_ceilings(roofs, want_dtype), notes


def report_to_roofline(df: pd.DataFrame, *, gpu: Any = None, dtype: str = "bf16",
                       measured_dram_bytes_per_s: float | None = None, model: str | None = None,
                       batch: int | None = None, context: int | None = None, layers: int | None = None,
                       scale_to_layers: int | None = None, by: str = "op", include_kernels: bool = True,
                       **provenance_extra: Any):
    """A loaded report (``load_report``) -> :class:`gpuprobe.roofline.RooflineResult` with ``mode="ncu"``.

    ``gpu``: a registry name or :class:`~gpuprobe.specs.gpus.GPUSpec` whose datasheet roofs are
    added (default: the one matching the report's device name, when known). ``by``: ``op`` (one
    point per op) or ``kernel`` (one point per launch, named ``op#id``).
    """

    if by not in ("op", "kernel"):
        raise UserError(f"--by must be 'op' or 'kernel', got '{by}'")
    device_name = df.attrs.get("device_name")
    spec = resolve_gpu(gpu, device_name=device_name, default=None)
    roofs, ceilings, notes = report_roofs(df, spec, dtype, measured_dram_bytes_per_s)
    peak_bw = max((r.value for r in roofs if r.kind == "memory" and r.name == "dram"), default=None)
    peak_flops = max((r.value for r in roofs if r.kind == "compute"), default=None)
    df, over = rates_above_peak(df, peak_bw, peak_flops)
    if over:
        df.attrs["warnings"] = list(df.attrs.get("warnings", [])) + over
    note = "; ".join(notes) or None

    if ceilings is not None and ceilings.compute_roof == "fp32" and df["flops"].isna().all() \
            and df["flops_fp32"].notna().any():
        # no tensor counters and an FP32 ceiling: the FP32 roofline, as ncu's own chart draws it
        df = df.assign(flops=df["flops_fp32"] + df["flops_fp64"].fillna(0.0) + df["flops_fp16"].fillna(0.0))
        notes.append("no tensor counters in the report: FLOPs are FP32 (+FP16, FP64) thread instructions")
        note = "; ".join(notes)
    kernels = kernel_table(df, measured_dram_bytes_per_s)
    if by == "op":
        table = op_table(kernels, measured_dram_bytes_per_s, scale_to_layers)
    else:
        table = kernels.assign(op=[f"{o}#{i}" for o, i in zip(kernels["op"], kernels["id"])],
                               kernel=kernels["kernel_key"],
                               n_kernels=1, layers_profiled=[None if pd.isna(x) else 1 for x in kernels["layer"]],
                               scaled=False)
    kernel_rows = ([{k: json_value(v) for k, v in row.items()} for row in kernels.to_dict("records")]
                   if by == "op" and include_kernels else None)
    rows = table.to_dict("records")
    if by == "kernel":
        for r in rows:
            r.update(kernel_id=r.get("id"), kernel_op=str(r["op"]).rsplit("#", 1)[0],
                     time_derived=bool(r.get("time_derived")))
    points = op_points(rows, batch=batch, ceilings=ceilings, measured_dram_bytes_per_s=measured_dram_bytes_per_s,
                       kernels=kernel_rows,
                       row_extra=("kernel", "kernel_id", "kernel_op", "time_derived") if by == "kernel" else ())

    sm_hz = pd.to_numeric(df.get("sm_hz"), errors="coerce") if "sm_hz" in df else None
    dram_hz = pd.to_numeric(df.get("dram_hz"), errors="coerce") if "dram_hz" in df else None
    prof = df.attrs.get("profile", {})
    prov = provenance(
        source=df.attrs.get("source"), report_format=df.attrs.get("format"), device_name=device_name,
        ncu_version=prof.get("ncu_version"), clock_control=prof.get("clock_control"),
        cache_control=prof.get("cache_control"), replay_mode=prof.get("replay_mode"),
        nvtx_filter=prof.get("nvtx_include"),
        clocks_seen={
            "sm_hz_median": json_value(float(sm_hz.median())) if sm_hz is not None else None,
            "sm_hz_min": json_value(float(sm_hz.min())) if sm_hz is not None else None,
            "sm_hz_max": json_value(float(sm_hz.max())) if sm_hz is not None else None,
            "dram_hz_median": json_value(float(dram_hz.median())) if dram_hz is not None else None,
        },
        missing_metrics=list(df.attrs.get("missing", [])),
        ceilings_note=note,
        derived=list(df.attrs.get("derived", [])),
        warnings=list(df.attrs.get("warnings", [])),
        **provenance_extra,
    )
    return RooflineResult(
        model=model, gpu=(spec.name if spec is not None else (device_name or "unknown")), mode="ncu",
        context=context, dtype=dtype, layers=layers, ceilings=ceilings, roofs=roofs, points=points,
        batch=batch, provenance=prov, limiter_rule=dict(LIMITER_RULE),
    )


def check_attention_reads(op_rows: pd.DataFrame, kv_read_bytes: float) -> dict[str, float | None]:
    """Attention's DRAM reads and writes against the analytic KV bytes (reads vs reads, docs/contracts.md section 3)."""
    row = op_rows[op_rows["op"] == "attention"]
    if row.empty:
        return {"read_ratio": None, "dram_read_bytes": None, "dram_write_bytes": None}
    r = row.iloc[0]
    reads = json_value(r["dram_read_bytes"])
    return {"read_ratio": reads / kv_read_bytes if reads is not None and kv_read_bytes else None,
            "dram_read_bytes": reads, "dram_write_bytes": json_value(r["dram_write_bytes"])}


def ops_in_order(ops: Sequence[str]) -> list[str]:
    return sorted(ops, key=op_order)
