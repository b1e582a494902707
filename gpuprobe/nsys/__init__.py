"""Nsight Systems: read traces (SQLite exports, ``.nsys-rep``, ``nsys stats`` CSVs) into the per-kernel
table every gpuprobe analysis takes, find decode steps, and time each op of a step.

::

    from gpuprobe.nsys import load_trace
    tr = load_trace("decode.sqlite")                  # or .sqlite.xz, .nsys-rep, an nsys stats CSV
    tr.kernels.groupby("op")["time_s"].sum()          # same columns as gpuprobe.ncu.load_ncu_report
    st = tr.steps()                                   # decode steps from NVTX ranges named 'decode...'
    st.op_median_s                                    # each op's median time per step

Modules, along the data flow: :mod:`~gpuprobe.nsys.sqlite_reader` (the export's tables),
:mod:`~gpuprobe.nsys.stats_csv` (``nsys stats`` CSVs), :mod:`~gpuprobe.nsys.attribution` (NVTX stack at
launch time, op and layer, CUDA graph alignment), :func:`gpuprobe.kernel_rules.classifier` (the kernel rule
table), :mod:`~gpuprobe.nsys.table` (the per-kernel frame), :mod:`~gpuprobe.nsys.steps`
(decode steps), :mod:`~gpuprobe.nsys.trace_roofline` (per-op roofline records), :mod:`~gpuprobe.nsys.runner`
(nsys itself); for the command line (in :mod:`gpuprobe.cli`: ``_nsys_report``, ``_nsys_profile``)
and ``roofline --mode nsys``: :mod:`~gpuprobe.nsys.engine_roofline` and
:mod:`~gpuprobe.measure.nsys_target` (``roofline --mode nsys``). docs/nsys.md tells the whole story.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from gpuprobe.errors import UserError
from gpuprobe.paths import require_regular_file

if TYPE_CHECKING:
    import pandas as pd

    from gpuprobe.ncu.attribution import AttributionRule
    from gpuprobe.nsys.steps import TraceSteps

NSYS_SUFFIXES = (".sqlite", ".sqlite.xz", ".nsys-rep", ".qdrep")


def is_nsys_input(path: str | Path) -> bool:
    """True for an nsys report or export (by name or SQLite signature) or an ``nsys stats`` CSV."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nsys-rep", ".qdrep", ".sqlite", ".sqlite.xz")):
        return True
    from gpuprobe.nsys.sqlite_reader import is_sqlite

    if p.is_file() and is_sqlite(p):
        return True
    if name.endswith((".csv", ".csv.xz")) and p.is_file():
        from gpuprobe.nsys.stats_csv import sniff

        return sniff(p) is not None
    return False


@dataclass
class Trace:
    """A loaded trace: ``kernels`` (the per-kernel table), ``nvtx`` (NVTX ranges; empty for CSVs)."""

    kernels: "pd.DataFrame"
    nvtx: "pd.DataFrame"
    info: dict[str, Any] = field(default_factory=dict)

    def steps(self, step_regex: str | None = None, step_kernel: str | None = None) -> "TraceSteps":
        """Per-step figures (:func:`gpuprobe.nsys.steps.step_stats`): by a marker kernel when given,
        else by NVTX ranges matching ``step_regex`` (default ``^decode\\b``)."""
        from gpuprobe.nsys import steps as S

        return S.step_stats(self.labelled(step_regex, step_kernel))

    def labelled(self, step_regex: str | None = None, step_kernel: str | None = None) -> "pd.DataFrame":
        """``kernels`` with a ``step`` column."""
        from gpuprobe.nsys import steps as S

        if step_kernel:
            return S.label_steps_by_marker(self.kernels, step_kernel)
        if "launch_s" not in self.kernels.columns or self.kernels["launch_s"].isna().all():
            raise UserError(f"{self.kernels.attrs.get('source')}: no launch calls or NVTX ranges to find steps "
                            "in (a summary CSV, or a trace without --trace=cuda,nvtx); use --step-kernel NAME "
                            "on a SQLite export")
        return S.label_steps_by_nvtx(self.kernels, self.nvtx, step_regex or S.DEFAULT_STEP_REGEX)


def _read_sqlite(path: Path, rule, classify, source: Path | None = None) -> Trace:
    import pandas as pd

    from gpuprobe.nsys import sqlite_reader as R
    from gpuprobe.ncu.attribution import default_rule
    from gpuprobe.nsys.attribution import assign_ops, nvtx_stacks
    from gpuprobe.nsys.table import build_frame

    source = source or path
    with R.open_export(path) as conn:
        raw = R.read_kernels(conn, source)
        calls = R.read_launch_calls(conn, source)
        warnings = [*raw.warnings, *calls.warnings]
        nvtx = R.read_nvtx(conn, source, warnings)
        info = R.read_info(conn)
    ints = {c: raw[c] for c in ("device", "stream", "correlation_id", "graph_node_id", "graph_id", "grid_x",
                                "grid_y", "grid_z", "block_x", "block_y", "block_z")}
    ints["process"] = raw.process
    keep = {"registers_per_thread": pd.arrays.IntegerArray(raw["registers_per_thread"].copy(),
                                                           raw["registers_per_thread"] == R.NULL),
            "context": pd.arrays.IntegerArray(raw["context"].copy(), raw["context"] == R.NULL)}
    df = build_frame(len(raw), kernel_name=raw.kernel_name, short_name=raw.short_name, start_ns=raw["start"],
                     end_ns=raw["end"], ints=ints, null=R.NULL, keep=keep)
    process, correlation = raw.process, raw["correlation_id"]
    del raw, ints, keep  # the frame holds copies: the raw columns go before the NVTX sweep's working arrays
    stacks, more = nvtx_stacks(process, correlation, calls, nvtx, R.NULL)
    warnings += [f"'{source}': {w}" for w in more]
    for col in stacks.columns:
        df[col] = stacks[col].array
    del stacks, process, correlation
    no_calls = len(calls) == 0
    del calls
    df = assign_ops(df, rule or default_rule, classify)
    used = sorted(int(d) for d in df["device"].dropna().unique())
    names = [info.device_names[d] for d in used if d in info.device_names]
    device_name = names[0] if len(set(names)) == 1 else info.device_name
    df.attrs.update({"source": str(source), "format": "nsys-sqlite", "device_name": device_name,
                     "nsys_version": info.nsys_version, "schema_version": info.schema_version,
                     "missing": ["counters (an nsys trace records times only)"]})
    if warnings:
        df.attrs["warnings"] = warnings
    if no_calls:
        df.attrs["missing"].append("launch calls (no CUPTI_ACTIVITY_KIND_RUNTIME/DRIVER table): no NVTX attribution")
    return Trace(df, nvtx, {"nsys_version": info.nsys_version, "device_name": device_name})


def _read_csv(path: Path, rule, classify) -> Trace:
    import pandas as pd

    from gpuprobe.ncu.attribution import default_rule
    from gpuprobe.nsys.attribution import assign_ops
    from gpuprobe.nsys.stats_csv import read_stats_csv
    from gpuprobe.nsys.table import kernel_frame

    kind, raw = read_stats_csv(path)
    df = kernel_frame(raw)
    if "nvtx_stack" in raw.columns:
        df["nvtx_stack"] = raw["nvtx_stack"].to_list()
    df = assign_ops(df, rule or default_rule, classify)
    dev = raw["device_name"].dropna().unique().tolist() if "device_name" in raw.columns else []
    df.attrs.update({"source": str(path), "format": "nsys-csv", "report": kind,
                     "device_name": dev[0] if len(dev) == 1 else None, "nsys_version": None,
                     "missing": ["counters (an nsys trace records times only)"]
                     + (["per-launch rows (a summary report: one row per kernel name)"] if kind != "cuda_gpu_trace" else [])})
    return Trace(df, pd.DataFrame(columns=["start", "end", "kind", "name", "domain", "global_tid", "process",
                                           "payload"]), {"report": kind})


def load_trace(path: str | Path, rule: "AttributionRule | None" = None, *, align_eager: str | Path | None = None,
               step_regex: str | None = None, rules: str | Path | None = None) -> Trace:
    """Read an nsys input into a :class:`Trace`. ``rules``: a user's kernel rules file, matched before the
    built-in table (docs/kernel-rules.md). ``align_eager``: an eager NVTX-ranged trace of the same
    step shapes; graph-replayed kernels take the op of the eager kernel they align with
    (:func:`gpuprobe.nsys.attribution.align_to_eager`, reference: the eager trace's last step)."""
    from gpuprobe.kernel_rules import classifier

    classify = classifier(rules)
    p = Path(path)
    require_regular_file(p, what="a .sqlite, .nsys-rep or nsys stats CSV file")
    name = p.name.lower()
    if name.endswith((".nsys-rep", ".qdrep")):
        from gpuprobe.nsys.runner import export_sqlite

        tr = _read_sqlite(export_sqlite(p), rule, classify, source=p)
    elif name.endswith((".csv", ".csv.xz")):
        tr = _read_csv(p, rule, classify)
    else:
        tr = _read_sqlite(p, rule, classify)
    if align_eager is not None:
        from gpuprobe.ncu.attribution import default_rule
        from gpuprobe.nsys.attribution import align_to_eager, assign_ops
        from gpuprobe.nsys.steps import reference_step

        eager = load_trace(align_eager, rule, rules=rules)
        ref = reference_step(eager.labelled(step_regex))
        aligned = align_to_eager(tr.kernels, ref)
        tr.kernels = assign_ops(aligned, rule or default_rule, classify)
        tr.kernels.attrs["aligned_to"] = str(align_eager)
    return tr


__all__ = ["load_trace", "is_nsys_input", "Trace", "NSYS_SUFFIXES"]
