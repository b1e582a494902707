"""The per-kernel table of an nsys trace: the same DataFrame shape as :func:`gpuprobe.ncu.load_ncu_report`.

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


def _int_array(values, null: int | None = None) -> pd.arrays.IntegerArray:
    """Int64 with missing values: from int64 with a ``null`` sentinel, or from floats/objects (NaN/None)."""
    a = np.asarray(values)
    if null is not None and a.dtype == np.int64:
        return pd.arrays.IntegerArray(a.copy(), a == null)
    num = pd.to_numeric(pd.Series(a, dtype=object if a.dtype == object else None), errors="coerce")
    f = num.to_numpy(dtype=float, na_value=np.nan)
    miss = ~np.isfinite(f)
    return pd.arrays.IntegerArray(np.where(miss, 0, f).astype(np.int64), miss)


def _missing_ints(n: int) -> pd.arrays.IntegerArray:
    """An Int64 column of ``n`` missing values."""
    return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))


def _dims(x: np.ndarray, y: np.ndarray, z: np.ndarray, null: int | None = None) -> np.ndarray:
    """Per row the tuple (x, y, z), one shared tuple per distinct shape; None where a value is missing.
    Shapes are found by factorizing one column at a time into the codes of the columns before it."""
    n = len(x)
    out = np.full(n, None, dtype=object)
    cols = [_int_array(v, null) for v in (x, y, z)]
    miss = cols[0].isna() | cols[1].isna() | cols[2].isna()
    if n == 0 or miss.all():
        return out
    values = [col.to_numpy(dtype=np.int64, na_value=0) for col in cols]
    codes = np.zeros(n, dtype=np.int64)
    for v in values:
        c, u = pd.factorize(v)
        codes, _ = pd.factorize(codes * len(u) + c)  # both below n: no overflow
    first = np.unique(codes, return_index=True)[1]
    shapes = np.empty(len(first), dtype=object)
    shapes[:] = [(int(a), int(b), int(c)) for a, b, c in zip(*(v[first] for v in values))]
    out[:] = shapes[codes]
    out[miss] = None
    return out


def _short_names(kernel_name: pd.Categorical, short_name: pd.Categorical | None) -> pd.Categorical:
    """``kernel_short`` per row, computed once per distinct (name, nsys short name) pair."""
    nc = kernel_name.codes.astype(np.int64)
    sc = short_name.codes.astype(np.int64) if short_name is not None else np.full(len(nc), -1)
    width = (len(short_name.categories) if short_name is not None else 0) + 1
    uniq, inv = np.unique((nc + 1) * width + (sc + 1), return_inverse=True)
    names, shorts = list(kernel_name.categories), list(short_name.categories) if short_name is not None else []
    labels = [kernel_short_name(names[u // width - 1] if u // width else "",
                                shorts[u % width - 1] if u % width else None) for u in uniq.tolist()]
    codes, cats = pd.factorize(pd.Series(labels, dtype=object))
    return pd.Categorical.from_codes(codes[inv].astype(np.int32), categories=pd.Index(cats, dtype=object))


def _as_categorical(values) -> pd.Categorical:
    if isinstance(values, pd.Categorical):
        return values
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        return values.array
    obj = np.asarray(pd.Series(values, dtype=object).where(pd.notna(pd.Series(values, dtype=object)), ""),
                     dtype=object)
    obj = np.array([v if isinstance(v, str) else str(v) for v in obj], dtype=object) if len(obj) else obj
    codes, cats = pd.factorize(pd.Series(obj, dtype=object))
    return pd.Categorical.from_codes(codes.astype(np.int32), categories=pd.Index(cats, dtype=object))


def build_frame(n: int, *, kernel_name, short_name=None, start_ns=None, end_ns=None, time_s=None,
                ints: dict[str, np.ndarray] | None = None, null: int | None = None,
                extra: pd.DataFrame | None = None, keep: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The per-kernel table from columns: names (categoricals or strings), ns times, integer columns
    (``device``, ``stream``, ``correlation_id``, ``process``, ``graph_node_id``, ``graph_id``, ``instances``,
    ``grid_x``... ``block_z``; int64 with a ``null`` sentinel, or floats with NaN), ``extra`` (positional:
    ``nvtx_stack``, ``thread_id``, ``launch_s``...) and ``keep`` (columns copied as given)."""
    ints = ints or {}

    def missing() -> np.ndarray:  # each column its own array: a write to one never reaches another
        return np.full(n, np.nan)

    def iv(col: str):
        return _int_array(ints[col], null) if col in ints else _missing_ints(n)

    name = _as_categorical(kernel_name)
    short = _as_categorical(short_name) if short_name is not None else None
    start = np.asarray(start_ns, dtype=float) if start_ns is not None else missing()
    end = np.asarray(end_ns, dtype=float) if end_ns is not None else missing()
    dims = {k: _dims(ints[f"{k}_x"], ints[f"{k}_y"], ints[f"{k}_z"], null) if f"{k}_x" in ints
            else np.full(n, None, dtype=object) for k in ("grid", "block")}
    empty = np.empty(n, dtype=object)
    empty[:] = [()] * n

    def none_cat() -> pd.Categorical:
        return pd.Categorical.from_codes(np.full(n, -1, np.int32), categories=pd.Index([], dtype=object))

    data = {
        "id": np.arange(n),
        "kernel_name": name,
        "kernel_short": _short_names(name, short),
        "grid": dims["grid"], "block": dims["block"],
        "device": iv("device"), "stream": iv("stream"),
        "nvtx_stack": empty, "nvtx_ranges": empty.copy(),
        "op": none_cat(), "layer": _missing_ints(n), "op_source": none_cat(),
        "start_s": start * 1e-9, "end_s": end * 1e-9,
        "launch_s": missing(), "launch_api": none_cat(),
        "correlation_id": iv("correlation_id"),
        "thread_id": _missing_ints(n),
        "process": iv("process"), "graph_node_id": iv("graph_node_id"), "graph_id": iv("graph_id"),
        "instances": iv("instances") if "instances" in ints else
        pd.arrays.IntegerArray(np.ones(n, np.int64), np.zeros(n, dtype=bool)),
    }
    for col in STANDARD_COLUMNS:
        data[col] = missing()
    data["time_s"] = (end - start) * 1e-9 if time_s is None else np.asarray(time_s, dtype=float)
    if extra is not None:
        for col in extra.columns:
            data[col] = extra[col].array if not isinstance(extra[col].dtype, np.dtype) else extra[col].to_numpy()
    data.update(keep or {})
    first = [*ID_COLUMNS, *TRACE_COLUMNS, *STANDARD_COLUMNS]
    order = [c for c in first if c in data] + [c for c in data if c not in first]
    return pd.DataFrame({c: data[c] for c in order}, copy=False)


def kernel_frame(raw: pd.DataFrame, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Raw kernel rows of a frame (ns timestamps, ``kernel_name``, ``short_name``, ``duration_ns``...) -> the
    per-kernel table; ``extra`` (same length: ``nvtx_stack``, ``thread_id``, ``launch_s``...) is merged in."""
    n = len(raw)
    num = {c: pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
           for c in ("start", "end", "duration_ns") if c in raw.columns}
    ints = {c: raw[c].to_numpy(dtype=object) for c in
            ("device", "stream", "correlation_id", "process", "graph_node_id", "graph_id", "instances",
             "grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z") if c in raw.columns}
    time_s = num["duration_ns"] * 1e-9 if "duration_ns" in num else None
    keep = {c: raw[c].to_numpy(dtype=object) for c in ("mangled_name", "registers_per_thread", "context")
            if c in raw.columns}
    return build_frame(n, kernel_name=raw["kernel_name"] if "kernel_name" in raw.columns else [""] * n,
                       short_name=raw["short_name"] if "short_name" in raw.columns else None,
                       start_ns=num.get("start"), end_ns=num.get("end"), time_s=time_s, ints=ints,
                       extra=extra, keep=keep)
