"""Which NVTX ranges, op and layer each kernel of an nsys trace belongs to.

A kernel belongs to the ranges open on the thread that *launched* it, at the time it was launched
(not to whatever range is open while the GPU runs it, which with an asynchronous queue is often a
later one): the kernel is joined to its CUDA runtime or driver launch call by (process, correlation
id), and that call's thread and interval are matched against NVTX ranges. A range holds a call when
it starts at or before the call starts and ends at or after the call ends, as ``nsys stats``
``nvtx_kern_sum`` counts. Push/pop ranges (event type 59) belong to one thread; start/end ranges
(60) may end on another thread, so they are matched per process. Ranges of a named domain are
spelled ``domain@name``, as the ncu readers do.

A kernel replayed from a CUDA graph (``graph_node_id`` set, traced with ``--cuda-graph-trace=node``)
carries the correlation id of its ``cudaGraphLaunch``, so it takes the ranges around the graph
launch; :func:`align_to_eager` maps such kernels to ops by aligning each launch's kernel sequence
with an eager, NVTX-ranged step of the same shapes.

Op and layer come from the stack by :func:`gpuprobe.ncu.attribution.default_rule` (the one rule of
docs/contracts.md); a kernel with no known range is named by the kernel rule table
(:func:`gpuprobe.kernel_rules.classifier`), else ``other:<short name>``. ``op_source`` says which.
"""
from __future__ import annotations

import difflib
from typing import Sequence

import numpy as np
import pandas as pd

from gpuprobe.kernel_rules import KernelClassifier, classifier
from gpuprobe.ncu.attribution import AttributionRule, attribute, default_rule


def range_label(name: str, domain: str | None) -> str:
    """``domain@name`` for a named domain, ``name`` for the default one."""
    return f"{domain}@{name}" if isinstance(domain, str) and domain else name


def launch_calls_of(kernels: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """For each kernel row (same index): its launch call's ``global_tid``, ``call_start``, ``call_end``,
    ``call_name`` (None where the trace has no matching call)."""
    if calls.empty:
        return pd.DataFrame({"global_tid": None, "call_start": np.nan, "call_end": np.nan, "call_name": None},
                            index=kernels.index)
    c = calls.drop_duplicates(["process", "correlation_id"]).set_index(["process", "correlation_id"])
    keys = pd.MultiIndex.from_arrays([kernels["process"], kernels["correlation_id"]])
    hit = c.reindex(keys)
    return pd.DataFrame({"global_tid": hit["global_tid"].to_numpy(dtype=object),
                         "call_start": hit["start"].to_numpy(dtype=float),
                         "call_end": hit["end"].to_numpy(dtype=float),
                         "call_name": hit["name"].to_numpy(dtype=object)}, index=kernels.index)


def _open_ranges(ranges: pd.DataFrame, starts: np.ndarray, ends: np.ndarray) -> list[tuple[str, ...]]:
    """For calls sorted by start: labels of the ranges (of one thread or process) open over each call,
    outermost first. One sweep over time keeping the ranges that have begun and not yet ended."""
    r = ranges.sort_values(["start", "end"], ascending=[True, False], kind="stable")
    r_start, r_end = r["start"].to_numpy(float), r["end"].to_numpy(float)
    labels = [range_label(n, d) for n, d in zip(r["name"], r["domain"])]
    out: list[tuple[str, ...]] = []
    active: list[int] = []
    j = 0
    for ts, te in zip(starts, ends):
        while j < len(r_start) and r_start[j] <= ts:
            active.append(j)
            j += 1
        active = [k for k in active if r_end[k] >= ts]  # ended before this call: closed for every later call
        out.append(tuple(labels[k] for k in active if r_end[k] >= te))
    return out


def nvtx_stacks(kernels: pd.DataFrame, calls: pd.DataFrame, nvtx: pd.DataFrame) -> pd.DataFrame:
    """Per kernel (same index): ``thread_id`` (launching ``globalTid``), ``launch_s`` (the call's start,
    seconds), ``launch_api`` (the call's name), ``nvtx_stack`` (push/pop ranges of the launching thread)
    and ``nvtx_ranges`` (start/end ranges of its process), both outermost first."""
    call = launch_calls_of(kernels, calls)
    n = len(kernels)
    stack: list[tuple[str, ...]] = [()] * n
    ranges: list[tuple[str, ...]] = [()] * n
    pos = {ix: i for i, ix in enumerate(kernels.index)}
    known = call.dropna(subset=["call_start"])
    if not nvtx.empty and not known.empty:
        tid = known["global_tid"].astype("int64")
        proc = tid.to_numpy() >> 24
        pp = nvtx[nvtx["kind"] == "push_pop"]
        se = nvtx[nvtx["kind"] == "start_end"]
        for key, group_keys, table, target in (("tid", tid.to_numpy(), pp, stack), ("pid", proc, se, ranges)):
            if table.empty:
                continue
            col = "global_tid" if key == "tid" else "process"
            by_owner = {k: g for k, g in table.groupby(col)}
            frame = known.assign(_owner=group_keys).sort_values(["call_start", "call_end"], kind="stable")
            for owner, g in frame.groupby("_owner"):
                rng = by_owner.get(int(owner))
                if rng is None:
                    continue
                for ix, labels in zip(g.index, _open_ranges(rng, g["call_start"].to_numpy(float),
                                                            g["call_end"].to_numpy(float))):
                    target[pos[ix]] = labels
    return pd.DataFrame({
        "thread_id": pd.array([int(t) if t is not None and t == t else None for t in call["global_tid"]], dtype="Int64"),
        "launch_s": call["call_start"].to_numpy(float) * 1e-9,
        "launch_api": call["call_name"].to_numpy(dtype=object),
        "nvtx_stack": stack, "nvtx_ranges": ranges,
    }, index=kernels.index)


def assign_ops(df: pd.DataFrame, rule: AttributionRule = default_rule,
               classify: KernelClassifier | None = None) -> pd.DataFrame:
    """``df`` with ``op``, ``layer`` (nullable int) and ``op_source`` by the one attribution of every reader
    (:func:`gpuprobe.ncu.attribution.attribute`: NVTX first, then the kernel rule table). Rows whose
    ``op_source`` is already ``eager_alignment`` keep their op and layer."""
    keep = (df["op_source"] == "eager_alignment").to_numpy(dtype=bool) if "op_source" in df.columns \
        else np.zeros(len(df), dtype=bool)
    out = attribute(df, rule, classify=classify or classifier())
    if keep.any():
        for col in ("op", "layer", "op_source"):
            merged = out[col].astype(object).to_numpy(copy=True)
            merged[keep] = df[col].astype(object).to_numpy()[keep]
            out[col] = pd.array(merged, dtype="Int64") if col == "layer" else merged
    return out


def graph_launches(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The kernels of each CUDA graph launch (rows with ``graph_node_id``), grouped by (process,
    correlation id), each in GPU start order, launches in time order."""
    g = df[df["graph_node_id"].notna()]
    if g.empty:
        return []
    groups = [grp.sort_values("start_s", kind="stable") for _, grp in g.groupby(["process", "correlation_id"])]
    return sorted(groups, key=lambda x: float(x["start_s"].iloc[0]))


def align_sequences(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs (i, j) of positions of ``a`` and ``b`` that correspond: equal runs of the longest matching
    blocks, plus replaced runs of equal length (a kernel whose name differs, e.g. another GEMM variant
    in the graph than in the eager step), paired in order. Inserted or deleted kernels stay unpaired."""
    pairs: list[tuple[int, int]] = []
    sm = difflib.SequenceMatcher(None, list(a), list(b), autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs += list(zip(range(i1, i2), range(j1, j2)))
    return pairs


def align_to_eager(df: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Graph-replayed kernels of ``df`` take ``nvtx_stack``, ``op`` and ``layer`` of the kernel they align
    with in ``reference`` (the kernels of one eager step, in launch order, with ops assigned);
    ``op_source`` becomes ``eager_alignment`` for them and ``df.attrs['alignment']`` records, per graph
    launch, how many kernels were paired."""
    out = df.copy()
    if "op_source" not in out.columns:
        out["op_source"] = None
    out["op_source"] = out["op_source"].astype(object)
    out["op"] = out["op"].astype(object) if "op" in out.columns else None
    if "layer" not in out.columns:
        out["layer"] = pd.array([None] * len(out), dtype="Int64")
    ref = reference.sort_values("start_s", kind="stable")
    ref_names = list(ref["kernel_short"])
    stats = []
    for launch in graph_launches(out):
        pairs = align_sequences(list(launch["kernel_short"]), ref_names)
        for i, j in pairs:
            ix, r = launch.index[i], ref.iloc[j]
            outer = tuple(out.at[ix, "nvtx_stack"] or ())
            out.at[ix, "nvtx_stack"] = outer + tuple(x for x in (r["nvtx_stack"] or ()) if x not in outer)
            out.at[ix, "op"] = r["op"]
            out.at[ix, "layer"] = r["layer"]
            out.at[ix, "op_source"] = "eager_alignment"
        stats.append({"correlation_id": int(launch["correlation_id"].iloc[0]), "kernels": len(launch),
                      "reference_kernels": len(ref_names), "paired": len(pairs)})
    out.attrs = dict(df.attrs)
    out.attrs["alignment"] = stats
    return out
