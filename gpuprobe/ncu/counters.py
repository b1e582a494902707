"""Counters -> FLOPs, bytes, times and percentages: the standard columns of a report table.

Rules (docs/contracts.md section 3):

* tensor FLOPs are the tensor-path math-op counters ``sm__ops_path_tensor_src_{bf16_dst_fp32,fp16,
  tf32_dst_fp32}.sum`` (they count HGMMA and HMMA, 2 per multiply-add); never tensor *instruction*
  counts times a constant (ops per instruction depend on the tile shape);
* FP32 FLOPs are ``fadd + fmul + 2·ffma`` thread instructions (FP16 and FP64 alike: ``hadd + hmul +
  2·hfma`` counts a packed HFMA2 once, so it is a lower bound);
* when a report holds an instruction class only as a rate (``....sum.per_cycle_elapsed``, as the
  SpeedOfLight_RooflineChart section collects it), the count is that rate times
  ``smsp__cycles_elapsed.avg.per_second`` times the kernel time: how ncu's own roofline chart
  computes achieved FLOP/s;
* a count the report lacks is missing (NaN), never guessed: ``flops`` is NaN when the tensor or the
  FP32 counters are missing, and ``df.attrs["missing"]`` names what was absent.

Counters count padded tiles: ``flops`` is what was *executed* (``flops_executed`` in roofline.json).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gpuprobe.ncu import metrics as M

#: Standard columns this module adds, all in base units.
STANDARD_COLUMNS = (
    "time_s", "dram_read_bytes", "dram_write_bytes", "dram_bytes", "dram_pct", "sm_pct", "tensor_pct",
    "flops_tensor", "flops_fp32", "flops_fp16", "flops_fp64", "flops", "sm_hz", "dram_hz",
)


def _col(df: pd.DataFrame, name: str) -> pd.Series | None:
    if name not in df.columns:
        return None
    s = pd.to_numeric(df[name], errors="coerce")
    return None if s.isna().all() else s.astype(float)


def _first(df: pd.DataFrame, *names: str) -> pd.Series | None:
    for n in names:
        s = _col(df, n)
        if s is not None:
            return s
    return None


def _count(df: pd.DataFrame, metric_sum: str, time_s: pd.Series | None, alias: str | None = None) -> pd.Series | None:
    """A ``.sum`` counter (or its ``alias`` spelling), or its ``.sum.per_cycle_elapsed`` rate times SMSP
    cycles elapsed."""
    s = _first(df, metric_sum, alias) if alias else _col(df, metric_sum)
    if s is not None:
        return s
    rate = _col(df, metric_sum + ".per_cycle_elapsed")
    hz = _first(df, M.SMSP_HZ, M.SM_HZ)
    if rate is None or hz is None or time_s is None:
        return None
    return rate * hz * time_s


def thread_flops(df: pd.DataFrame, precision: str, time_s: pd.Series | None) -> pd.Series | None:
    """``add + mul + 2·fma`` of one precision; None when any of the three is missing."""
    add, mul, fma = (_count(df, m, time_s, alias)
                     for m, alias in zip(M.THREAD_FLOPS[precision], M.THREAD_FLOPS_SM[precision]))
    if add is None or mul is None or fma is None:
        return None
    return add + mul + 2.0 * fma


def tensor_flops(df: pd.DataFrame) -> pd.Series | None:
    """Sum of the tensor-path math ops over the source types present; None when none is present."""
    parts = [s for s in (_col(df, m) for m in M.TENSOR_OPS.values()) if s is not None]
    if not parts:
        return None
    return sum(p.fillna(0.0) for p in parts)


#: Standard columns that can never be negative, and those that are percentages.
_NON_NEGATIVE = ("dram_read_bytes", "dram_write_bytes", "dram_bytes", "flops_tensor", "flops_fp32", "flops_fp16",
                 "flops_fp64", "flops", "sm_hz", "dram_hz")
_PERCENT = ("dram_pct", "sm_pct", "tensor_pct")


def _ids(df: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    ids = df["id"].to_numpy()[mask] if "id" in df.columns else np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"launch id {shown}" + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _impossible_values(out: pd.DataFrame) -> list[str]:
    """Set impossible values to missing (in place) and say which rows held them: a duration that is not
    positive makes the whole row's counters missing (its rates would be absurd); a negative count or a
    percentage outside 0-100 makes that value missing. Nothing impossible is summed into a total."""
    notes: list[str] = []
    t = out["time_s"].to_numpy(float)
    bad_t = np.isfinite(t) & (t <= 0) | np.isinf(t)
    if bad_t.any():
        notes.append(f"{int(bad_t.sum())} kernel(s) with a duration that is not positive ({_ids(out, bad_t)}): "
                     "their time and counters are left out (the file is damaged or edited)")
        for c in STANDARD_COLUMNS:
            out.loc[bad_t, c] = math.nan
    for c in _NON_NEGATIVE:
        v = out[c].to_numpy(float)
        bad = (np.isfinite(v) & (v < 0)) | np.isinf(v)
        if bad.any():
            notes.append(f"{c}: {int(bad.sum())} negative or infinite value(s) ({_ids(out, bad)}) left out")
            out.loc[bad, c] = math.nan
    for c in _PERCENT:
        v = out[c].to_numpy(float)
        bad = np.isfinite(v) & ((v < 0) | (v > 100.5)) | np.isinf(v)
        if bad.any():
            notes.append(f"{c}: {int(bad.sum())} value(s) outside 0-100 % ({_ids(out, bad)}) left out")
            out.loc[bad, c] = math.nan
    return notes


def rates_above_peak(df: pd.DataFrame, dram_bytes_per_s: float | None, flops_per_s: float | None,
                     slack: float = 1.1) -> tuple[pd.DataFrame, list[str]]:
    """Kernels whose DRAM bandwidth or FLOP rate is above the GPU's peak (times ``slack``) cannot be real:
    their time and counters become missing, and the note names them."""
    t = pd.to_numeric(df["time_s"], errors="coerce").to_numpy(float)
    over = np.zeros(len(df), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        if dram_bytes_per_s:
            over |= np.nan_to_num(pd.to_numeric(df["dram_bytes"], errors="coerce").to_numpy(float) / t) > \
                slack * dram_bytes_per_s
        if flops_per_s:
            over |= np.nan_to_num(pd.to_numeric(df["flops"], errors="coerce").to_numpy(float) / t) > \
                slack * flops_per_s
    if not over.any():
        return df, []
    out = df.copy()
    for c in STANDARD_COLUMNS:
        out.loc[over, c] = math.nan
    return out, [f"{int(over.sum())} kernel(s) run faster than the GPU's peak allows ({_ids(df, over)}): a wrong "
                 "unit or duration in the file; their time and counters are left out"]


def add_standard_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :data:`STANDARD_COLUMNS` computed from whatever metrics it holds (NaN where missing)."""
    out = df.copy()
    n = len(out)
    attrs_derived: list[str] = []
    nan = pd.Series(np.full(n, math.nan), index=out.index)
    missing: list[str] = []

    time_s = _col(out, M.TIME)
    derived = pd.Series(np.zeros(n, dtype=bool), index=out.index)
    cycles, hz = _col(out, M.SM_CYCLES), _col(out, M.SM_HZ)
    if cycles is not None and hz is not None:
        from_cycles = cycles / hz.where(hz > 0)
        fill = from_cycles.notna() if time_s is None else (time_s.isna() & from_cycles.notna())
        if fill.any():
            time_s = from_cycles.where(fill, time_s if time_s is not None else math.nan)
            derived = fill
            attrs_derived = [f"time_s = {M.SM_CYCLES} / {M.SM_HZ} for {int(fill.sum())} kernel(s) "
                             f"without {M.TIME}"]
    if time_s is None:
        missing.append(M.TIME)
    read = _col(out, M.DRAM_READ)
    write = _col(out, M.DRAM_WRITE)
    total = _col(out, M.DRAM_BYTES)
    if total is None and read is not None and write is not None:
        total = read + write
    if total is None:
        rate = _col(out, M.DRAM_BYTES_PER_S)
        if rate is not None and time_s is not None:
            total = rate * time_s
    if read is None:
        missing.append(M.DRAM_READ)
    if write is None:
        missing.append(M.DRAM_WRITE)

    ft = tensor_flops(out)
    if ft is None:
        missing.append("sm__ops_path_tensor_src_*.sum")
    f32 = thread_flops(out, "fp32", time_s)
    if f32 is None:
        missing.append("smsp__sass_thread_inst_executed_op_{fadd,fmul,ffma}_pred_on.sum (or sm__...)")
    f16 = thread_flops(out, "fp16", time_s)
    f64 = thread_flops(out, "fp64", time_s)
    flops = None
    if ft is not None and f32 is not None:
        flops = ft + f32 + (f16.fillna(0.0) if f16 is not None else 0.0) + (f64.fillna(0.0) if f64 is not None else 0.0)

    cols = {
        "time_s": time_s, "dram_read_bytes": read, "dram_write_bytes": write, "dram_bytes": total,
        "dram_pct": _first(out, M.DRAM_PCT, M.GPU_DRAM_PCT),
        "sm_pct": _col(out, M.SM_PCT),
        "tensor_pct": _first(out, M.TENSOR_PIPE_PCT, M.TENSOR_HMMA_PCT_ACTIVE),
        "flops_tensor": ft, "flops_fp32": f32, "flops_fp16": f16, "flops_fp64": f64, "flops": flops,
        "sm_hz": _first(out, M.SM_HZ, M.SMSP_HZ), "dram_hz": _col(out, M.DRAM_HZ),
    }
    for k, v in cols.items():
        out[k] = (v if v is not None else nan).astype(float)
    out["time_derived"] = derived.astype(bool)
    problems = _impossible_values(out)
    out.attrs = dict(df.attrs)
    if problems:
        out.attrs["warnings"] = list(df.attrs.get("warnings", [])) + problems
    out.attrs["missing"] = missing
    out.attrs["derived"] = attrs_derived
    return out
