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


def _outermost(r: pd.DataFrame) -> pd.DataFrame:
    """Drop matching ranges nested inside another matching range of the same owner."""
    keep = []
    for _, g in r.groupby("owner"):
        g = g.sort_values(["start", "end"], ascending=[True, False])
        last_end = -math.inf
        for ix, s, e in zip(g.index, g["start"], g["end"]):
            if s >= last_end:
                keep.append(ix)
                last_end = e
    return r.loc[sorted(keep, key=lambda i: r.at[i, "start"])]


def label_steps_by_nvtx(kernels: pd.DataFrame, nvtx: pd.DataFrame, regex: str = DEFAULT_STEP_REGEX) -> pd.DataFrame:
    """``kernels`` with ``step`` (nullable int: index of the step range each was launched in) and the
    step ranges' ``step_name``; raises :class:`UserError` when no range name matches."""
    pat = _compile(regex, "--step-regex")
    r = nvtx[[bool(pat.search(n or "")) for n in nvtx["name"]]].copy() if len(nvtx) else nvtx
    if r.empty:
        names = [n if len(n) <= 40 else n[:39] + "…" for n in sorted(set(nvtx["name"]))[:6]] if len(nvtx) else []
        raise UserError(f"no NVTX range matches the step regex '{regex}'"
                        + (f" (ranges seen: {', '.join(names)})" if names else " (the trace has no NVTX ranges)")
                        + "; pass --step-regex, or --step-kernel NAME to cut steps at a marker kernel")
    r["owner"] = [int(t) if k == "push_pop" else int(p) for k, t, p in zip(r["kind"], r["global_tid"], r["process"])]
    r = _outermost(r).reset_index(drop=True)
    out = kernels.copy()
    step = np.full(len(out), -1)
    launch_ns = out["launch_s"].to_numpy(float) * 1e9
    tid = out["thread_id"].to_numpy(dtype=object)
    proc = np.array([int(t) >> 24 if t is not None and t is not pd.NA else -1 for t in tid])
    tid_i = np.array([int(t) if t is not None and t is not pd.NA else -1 for t in tid])
    for i, row in r.iterrows():
        who = tid_i if row["kind"] == "push_pop" else proc
        inside = (who == row["owner"]) & (launch_ns >= row["start"]) & (launch_ns <= row["end"])
        step[inside & (step < 0)] = i
    out["step"] = pd.array([int(s) if s >= 0 else None for s in step], dtype="Int64")
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
    hits = np.array([bool(pat.search(s or "") or pat.search(n or "")) for s, n in zip(out["kernel_short"],
                                                                                      out["kernel_name"])])
    if not hits.any():
        raise UserError(f"no kernel matches the step kernel '{marker}'; pick one that runs once per step "
                        "(e.g. the sampling kernel: argmax, or a top-k/softmax of the logits)")
    ends = np.cumsum(hits) - hits  # markers before this row
    step = np.where(ends < hits.sum(), ends, -1)  # kernels after the last marker: a partial step
    step = step - 1  # the run before the first marker is partial: -1
    out["step"] = pd.array([int(s) if s >= 0 else None for s in step], dtype="Int64")
    out.attrs = dict(kernels.attrs)
    out.attrs["step_ranges"] = []
    return out.sort_index()


def _busy(starts: np.ndarray, ends: np.ndarray) -> float:
    """Length of the union of intervals."""
    order = np.argsort(starts, kind="stable")
    total, cur_s, cur_e = 0.0, None, None
    for s, e in zip(starts[order], ends[order]):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


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
    rows = []
    for step, g in k.groupby("step"):
        st, en = g["start_s"].to_numpy(float), g["end_s"].to_numpy(float)
        span = float(np.nanmax(en) - np.nanmin(st))
        busy = _busy(st, en)
        info = shapes.get(int(step), {})
        rows.append({"step": int(step), "name": info.get("name"), "n_kernels": len(g),
                     "kernel_time_s": float(g["time_s"].sum()), "start_s": float(np.nanmin(st)),
                     "span_s": span, "busy_s": busy, "idle_s": max(span - busy, 0.0),
                     "graph_kernels": int(g["graph_node_id"].notna().sum()) if "graph_node_id" in g else 0,
                     "batch": info.get("batch"), "context": info.get("context")})
    steps = pd.DataFrame(rows).set_index("step")
    steps["batch"] = pd.array(steps["batch"].tolist(), dtype="Int64")
    steps["context"] = pd.array(steps["context"].tolist(), dtype="Int64")
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
