"""Decode steps of a trace and what each one spent: kernel time, GPU idle time, time per op.

A step is either an NVTX range whose name matches a regex (default ``^decode\\b``: ``decode``,
``decode b=64 c=1024``...), holding the kernels launched inside it (push/pop: by its thread;
start/end: by its process), or the run of kernels that ends with a marker kernel
(``step_kernel="argmax"``: each step ends with the kernel that picks the next token; kernels
before the first marker are a partial step and are left out).

Per step: ``n_kernels``, ``kernel_time_s`` (sum of kernel durations; overlapping kernels both
count), ``span_s`` (first kernel start to last kernel end on the GPU), ``busy_s`` (the union of
kernel intervals), ``idle_s`` (``span_s - busy_s``: the GPU waiting inside the step), and
``batch``/``context`` when the range name records them (``b=64 c=1024``, ``batch=64``,
``context=1024``). An op with no kernel in a step took 0 s in that step.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gpuprobe.errors import UserError

DEFAULT_STEP_REGEX = r"^decode\b"
_BATCH_RE = re.compile(r"\b(?:b|bs|batch)\s*[=:]\s*(\d+)", re.IGNORECASE)
_CONTEXT_RE = re.compile(r"\b(?:c|ctx|context|seq|seqlen)\s*[=:]\s*(\d+)", re.IGNORECASE)


def parse_shape(name: str) -> tuple[int | None, int | None]:
    """(batch, context) recorded in a range name such as ``decode b=64 c=1024``; None where absent."""
    b, c = _BATCH_RE.search(name or ""), _CONTEXT_RE.search(name or "")
    return (int(b.group(1)) if b else None, int(c.group(1)) if c else None)


def _compile(regex: str, what: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as e:
        raise UserError(f"{what} '{regex}' is not a valid regular expression: {e}") from None


def _matching(names: pd.Series, pat: re.Pattern) -> np.ndarray:
    """``pat.search`` of each name, evaluated once per distinct name (names repeat: range names, kernels)."""
    cat = names if isinstance(names.dtype, pd.CategoricalDtype) else names.astype("category")
    hit = np.array([bool(pat.search(str(c))) for c in cat.cat.categories], dtype=bool)
    codes = cat.cat.codes.to_numpy()
    return np.where(codes >= 0, hit[np.maximum(codes, 0)] if len(hit) else False, bool(pat.search("")))


def _outermost(r: pd.DataFrame) -> pd.DataFrame:
    """Drop matching ranges nested inside another matching range of the same owner (a loop over the
    matching ranges, never over kernels)."""
    keep = []
    for _, g in r.groupby("owner", sort=False):
        g = g.sort_values(["start", "end"], ascending=[True, False])
        last_end = -math.inf
        for ix, s, e in zip(g.index, g["start"].to_numpy(), g["end"].to_numpy()):
            if s >= last_end:
                keep.append(ix)
                last_end = e
    kept = r.loc[keep]
    return kept.sort_values("start", kind="stable")


def _nullable_steps(step: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.where(step >= 0, step, 0).astype(np.int64), step < 0)


def label_steps_by_nvtx(kernels: pd.DataFrame, nvtx: pd.DataFrame, regex: str = DEFAULT_STEP_REGEX) -> pd.DataFrame:
    """``kernels`` with ``step`` (nullable int: index of the step range each was launched in) and the
    step ranges' ``step_name``; raises :class:`UserError` when no range name matches."""
    pat = _compile(regex, "--step-regex")
    r = nvtx[_matching(nvtx["name"], pat)].copy() if len(nvtx) else nvtx
    if r.empty:
        names = [n if len(n) <= 40 else n[:39] + "…" for n in sorted(set(nvtx["name"].dropna()))[:6]] if len(nvtx) else []
        raise UserError(f"no NVTX range matches the step regex '{regex}'"
                        + (f" (ranges seen: {', '.join(names)})" if names else " (the trace has no NVTX ranges)")
                        + "; pass --step-regex, or --step-kernel NAME to cut steps at a marker kernel")
    push_pop = (r["kind"] == "push_pop").to_numpy()
    ids = {c: pd.to_numeric(r[c], errors="coerce").fillna(-1).to_numpy(dtype="int64") for c in ("global_tid", "process")}
    r["owner"] = np.where(push_pop, ids["global_tid"], ids["process"])
    r = _outermost(r).reset_index(drop=True)
    out = kernels.copy()
    n = len(out)
    launch_ns = out["launch_s"].to_numpy(float) * 1e9
    tid = pd.array(out["thread_id"], dtype="Int64").to_numpy(dtype="int64", na_value=-1)
    step = np.full(n, -1, dtype=np.int64)
    for push, who in ((True, tid), (False, np.where(tid >= 0, tid >> 24, -1))):
        mine_step = np.full(n, -1, dtype=np.int64)  # the first (earliest) step range of this kind holding each kernel
        for owner, g in r[(r["kind"] == "push_pop").to_numpy() == push].groupby("owner", sort=False):
            mine = np.flatnonzero((who == owner) & ~np.isnan(launch_ns))
            order = mine[np.argsort(launch_ns[mine], kind="stable")]
            times = launch_ns[order]
            for i, s, e in zip(g.index, g["start"].to_numpy(float), g["end"].to_numpy(float)):
                rows = order[np.searchsorted(times, s, "left"):np.searchsorted(times, e, "right")]
                mine_step[rows[mine_step[rows] < 0]] = i
        step = np.where((step < 0) | ((mine_step >= 0) & (mine_step < step)), mine_step, step)
    out["step"] = _nullable_steps(step)
    out.attrs = dict(kernels.attrs)
    out.attrs["step_ranges"] = [{"step": int(i), "name": n, **dict(zip(("batch", "context"), parse_shape(n))),
                                 "payload": None if p is None or (isinstance(p, float) and math.isnan(p)) else p}
                                for i, n, p in zip(r.index, r["name"], r["payload"])]
    return out


def label_steps_by_marker(kernels: pd.DataFrame, marker: str) -> pd.DataFrame:
    """``kernels`` with ``step``: step i ends with the i-th kernel whose short or full name matches ``marker``
    (``re.search``, case-sensitive: ``ArgMax`` finds torch's ``reduce_kernel<..., ArgMaxOps<float>, ...>``)."""
    pat = _compile(marker, "--step-kernel")
    out = kernels.sort_values("start_s", kind="stable").copy()
    # the full name too: torch's argmax is a reduce_kernel whose template arguments name ArgMaxOps
    hits = _matching(out["kernel_short"], pat) | _matching(out["kernel_name"], pat)
    if not hits.any():
        raise UserError(f"no kernel matches the step kernel '{marker}'; pick one that runs once per step "
                        "(e.g. the sampling kernel: argmax, or a top-k/softmax of the logits)")
    ends = np.cumsum(hits) - hits  # markers before this row
    step = np.where(ends < hits.sum(), ends, -1)  # kernels after the last marker: a partial step
    step = step - 1  # the run before the first marker is partial: -1
    out["step"] = _nullable_steps(np.where(step >= 0, step, -1))
    out.attrs = dict(kernels.attrs)
    out.attrs["step_ranges"] = []
    return out.sort_index()


def busy_per_group(groups: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pd.Series:
    """Length of the union of the intervals ``[starts, ends]`` of each group (vectorised: sort by group and
    start, a running maximum of the ends within the group opens a new segment wherever a start passes it)."""
    frame = pd.DataFrame({"g": groups, "s": starts, "e": ends}).dropna(subset=["s", "e"])
    frame = frame.sort_values(["g", "s"], kind="stable")
    reach = frame.groupby("g", sort=False)["e"].cummax()
    before = reach.groupby(frame["g"], sort=False).shift(1)
    new = before.isna().to_numpy() | (frame["s"].to_numpy() > before.to_numpy())
    seg = np.cumsum(new)
    spans = frame.groupby(seg, sort=False).agg(g=("g", "first"), s=("s", "min"), e=("e", "max"))
    return (spans["e"] - spans["s"]).groupby(spans["g"]).sum()


@dataclass
class TraceSteps:
    """Per-step figures of a trace. ``steps``: one row per step; ``per_op``: seconds per step (rows) and
    op (columns); ``op_median_s``: each op's median over steps; ``summary``: the median step and the
    spread of the step kernel time over steps."""

    steps: pd.DataFrame
    per_op: pd.DataFrame
    op_median_s: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


def step_stats(labelled: pd.DataFrame) -> TraceSteps:
    """Figures of the steps of a table labelled by :func:`label_steps_by_nvtx` or :func:`label_steps_by_marker`."""
    k = labelled[labelled["step"].notna()]
    if k.empty:
        raise UserError("no kernel was launched inside a step; check the step regex or marker kernel")
    shapes = {s["step"]: s for s in labelled.attrs.get("step_ranges", [])}
    step = k["step"].to_numpy(dtype="int64")
    st, en = k["start_s"].to_numpy(float), k["end_s"].to_numpy(float)
    g = pd.DataFrame({"step": step, "time_s": k["time_s"].to_numpy(float), "start_s": st, "end_s": en,
                      "graph": k["graph_node_id"].notna().to_numpy() if "graph_node_id" in k else False})
    by = g.groupby("step", sort=True)
    steps = pd.DataFrame({"n_kernels": by.size(), "kernel_time_s": by["time_s"].sum(min_count=0),
                          "start_s": by["start_s"].min(), "end_s": by["end_s"].max(),
                          "graph_kernels": by["graph"].sum().astype(int)})
    steps["span_s"] = steps["end_s"] - steps["start_s"]
    steps["busy_s"] = busy_per_group(step, st, en).reindex(steps.index).fillna(0.0)
    steps["idle_s"] = (steps["span_s"] - steps["busy_s"]).clip(lower=0.0)
    steps["name"] = [shapes.get(int(s), {}).get("name") for s in steps.index]
    steps["batch"] = pd.array([shapes.get(int(s), {}).get("batch") for s in steps.index], dtype="Int64")
    steps["context"] = pd.array([shapes.get(int(s), {}).get("context") for s in steps.index], dtype="Int64")
    steps = steps[["name", "n_kernels", "kernel_time_s", "start_s", "span_s", "busy_s", "idle_s",
                   "graph_kernels", "batch", "context"]]
    steps.index = steps.index.astype(int)
    steps.index.name = "step"
    per_op = k.pivot_table(index="step", columns="op", values="time_s", aggfunc="sum", fill_value=0.0)
    per_op.index = per_op.index.astype(int)
    op_median = {str(op): float(per_op[op].median()) for op in per_op.columns}
    times = steps["kernel_time_s"].to_list()
    med = statistics.median(times)
    median_step = int(steps.index[int(np.argsort(times, kind="stable")[(len(times) - 1) // 2])])
    mean = statistics.fmean(times)
    summary = {
        "n_steps": len(steps), "median_step": median_step, "kernel_time_s_median": med,
        "kernel_time_s_min": min(times), "kernel_time_s_max": max(times),
        "kernel_time_cv": statistics.pstdev(times) / mean if len(times) > 1 and mean else None,
        "span_s_median": float(steps["span_s"].median()), "idle_s_median": float(steps["idle_s"].median()),
        "n_kernels_median": float(steps["n_kernels"].median()),
    }
    return TraceSteps(steps, per_op, op_median, summary)


def reference_step(labelled: pd.DataFrame) -> pd.DataFrame:
    """The kernels of the last complete step (steps are usually warm after the first few): the eager
    step that graph-replayed kernels are aligned against."""
    k = labelled[labelled["step"].notna()]
    if k.empty:
        raise UserError("the eager trace has no step to align against; check --step-regex")
    return k[k["step"] == k["step"].max()].sort_values("start_s", kind="stable")
