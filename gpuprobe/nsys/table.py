"""The per-kernel table of an nsys trace: the same DataFrame shape as :func:`gpuprobe.ncu.load_report`.

Columns: the ncu identity columns (``id``, ``kernel_name`` (demangled), ``kernel_short``, ``grid``,
``block``, ``device``, ``stream``, ``nvtx_stack``, ``nvtx_ranges``), ``op``, ``layer``, ``op_source``,
the standard columns of :mod:`gpuprobe.ncu.counters` (``time_s`` filled; counter columns such as
``dram_bytes`` or ``flops`` are NaN: a trace has no counters), and the trace's own columns:
``start_s``/``end_s`` (GPU timestamps), ``launch_s`` (start of the launch call on the CPU),
``correlation_id``, ``thread_id`` (launching ``globalTid``), ``process``, ``graph_node_id`` and
``graph_id`` (CUDA graph node tracing), ``instances`` (1 per launch; the count of a summary row).
A value a source does not record is missing (NaN / ``<NA>`` / None), never 0.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from gpuprobe.ncu.counters import STANDARD_COLUMNS
from gpuprobe.ncu.readers import ID_COLUMNS, short_kernel_name

TRACE_COLUMNS = ("op", "layer", "op_source", "start_s", "end_s", "launch_s", "launch_api", "correlation_id",
                 "thread_id", "process", "graph_node_id", "graph_id", "instances")
#: Short names that say nothing alone: the enclosing namespace is kept (``gemvx::kernel``).
_GENERIC_SHORT = frozenset({"kernel", "Kernel", "device_kernel", "kernel_entry", "operator()"})


def kernel_short_name(name: str, nsys_short: str | None = None) -> str:
    """nsys's own short name when it has one, else the ncu readers' normalization; a generic last
    component (``kernel``) keeps its namespace: ``internal::gemvx::kernel<...>`` -> ``gemvx::kernel``."""
    s = nsys_short.strip() if isinstance(nsys_short, str) and nsys_short.strip() else short_kernel_name(name)
    if s in _GENERIC_SHORT and name:
        m = re.search(r"(\w+)::" + re.escape(s) + r"\s*[<(]", name)
        if m:
            return f"{m.group(1)}::{s}"
    return s


def _dims(x, y, z) -> tuple[int, int, int] | None:
    try:
        return (int(x), int(y), int(z))
    except (TypeError, ValueError):
        return None


def _int_array(values) -> pd.arrays.IntegerArray:
    return pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v) for v in values],
                    dtype="Int64")


def kernel_frame(raw: pd.DataFrame, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw kernel rows (ns timestamps, ``kernel_name``, ``short_name``...) -> the per-kernel table; ``extra``
    (same index: ``nvtx_stack``, ``nvtx_ranges``, ``thread_id``, ``launch_s``...) is merged in."""
    n = len(raw)

    def get(col: str) -> pd.Series:
        return raw[col] if col in raw.columns else pd.Series([None] * n, index=raw.index, dtype=object)

    start, end = pd.to_numeric(get("start"), errors="coerce"), pd.to_numeric(get("end"), errors="coerce")
    names = [str(v) if v is not None else "" for v in get("kernel_name")]
    df = pd.DataFrame({
        "id": np.arange(n),
        "kernel_name": names,
        "kernel_short": [kernel_short_name(nm, s) for nm, s in zip(names, get("short_name"))],
        "grid": [_dims(*v) for v in zip(get("grid_x"), get("grid_y"), get("grid_z"))],
        "block": [_dims(*v) for v in zip(get("block_x"), get("block_y"), get("block_z"))],
        "device": _int_array(get("device")),
        "stream": _int_array(get("stream")),
        "nvtx_stack": [()] * n,
        "nvtx_ranges": [()] * n,
        "op": [None] * n,
        "layer": pd.array([None] * n, dtype="Int64"),
        "op_source": [None] * n,
        "start_s": start.to_numpy(float) * 1e-9,
        "end_s": end.to_numpy(float) * 1e-9,
        "launch_s": np.full(n, math.nan),
        "launch_api": [None] * n,
        "correlation_id": _int_array(get("correlation_id")),
        "thread_id": pd.array([None] * n, dtype="Int64"),
        "process": _int_array(get("process")),
        "graph_node_id": _int_array(get("graph_node_id")),
        "graph_id": _int_array(get("graph_id")),
        "instances": _int_array(get("instances")) if "instances" in raw.columns else pd.array([1] * n, dtype="Int64"),
    })
    dur = pd.to_numeric(get("duration_ns"), errors="coerce").to_numpy(float) if "duration_ns" in raw.columns else None
    time_s = (end - start).to_numpy(float) * 1e-9 if dur is None else dur * 1e-9
    for col in STANDARD_COLUMNS:
        df[col] = np.full(n, math.nan)
    df["time_s"] = time_s
    if extra is not None:
        for col in extra.columns:
            df[col] = extra[col].to_numpy(dtype=object) if extra[col].dtype == object else extra[col].to_numpy()
        if "thread_id" in extra.columns:
            df["thread_id"] = pd.array(extra["thread_id"].tolist(), dtype="Int64")
    for extra_col in ("mangled_name", "registers_per_thread", "context"):
        if extra_col in raw.columns:
            df[extra_col] = raw[extra_col].to_numpy(dtype=object)
    first = [*ID_COLUMNS, *TRACE_COLUMNS, *STANDARD_COLUMNS]
    return df[[c for c in first if c in df.columns] + [c for c in df.columns if c not in first]]
