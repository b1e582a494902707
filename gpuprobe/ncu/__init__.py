"""Nsight Compute: find and run ncu, read its reports, attribute kernels to ops.

The one entry point most users need is :func:`load_ncu_report`::

    import gpuprobe
    df = gpuprobe.load_report("decode.ncu-rep")     # or a CSV page, or .ncu-rep.xz
    df.groupby("op")[["time_s", "dram_bytes", "flops"]].sum()

Modules, along the data flow: :mod:`~gpuprobe.ncu.runner` (find ncu, build command lines, run it),
:mod:`~gpuprobe.ncu.metrics` (named metric sets), :mod:`~gpuprobe.ncu.nvtx_filter`,
:mod:`~gpuprobe.ncu.readers` (CSV pages and .ncu-rep -> one table; :mod:`~gpuprobe.ncu.rep_child`
reads a .ncu-rep in a child process), :mod:`~gpuprobe.ncu.counters`
(FLOPs, bytes, percentages), :mod:`~gpuprobe.ncu.attribution` (op and layer per kernel: NVTX
ranges, else the kernel rule table),
:mod:`~gpuprobe.ncu.counter_roofline` (per-op roofline, ``RooflineResult``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads with the readers, not with the package (`gpuprobe --help` stays light)
    import pandas as pd

    from gpuprobe.ncu.attribution import AttributionRule

_LAZY = {
    "read_report": "gpuprobe.ncu.readers", "ReportFormatError": "gpuprobe.ncu.readers",
    "attribute": "gpuprobe.ncu.attribution", "default_rule": "gpuprobe.ncu.attribution",
    "Attribution": "gpuprobe.ncu.attribution", "AttributionRule": "gpuprobe.ncu.attribution",
    "add_standard_columns": "gpuprobe.ncu.counters",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpuprobe.ncu' has no attribute {name!r}")


PROFILE_META_SUFFIX = ".gpuprobe.json"


def profile_meta_path(report: str | Path) -> Path:
    """Where ``gpuprobe profile`` records how a report was made: ``R.ncu-rep`` -> ``R.gpuprobe.json``."""
    p = Path(report)
    name = p.name
    for suf in (".ncu-rep.xz", ".ncu-rep", ".csv"):
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    return p.with_name(name + PROFILE_META_SUFFIX)


def load_ncu_report(path: str | Path, rule: AttributionRule | None = None,
                    rules: str | Path | None = None) -> pd.DataFrame:
    """Read a ``.ncu-rep`` (or ``.ncu-rep.xz``) or an ncu CSV page into the normalized per-kernel table
    (:func:`gpuprobe.reports.load_report` reads Nsight Systems traces too).
    ``rules``: a user's kernel rules file (docs/kernel-rules.md), matched before the built-in table.

    One row per kernel launch: identity columns (``kernel_name``, ``kernel_short``, ``grid``,
    ``block``, ``nvtx_stack``, ``nvtx_ranges``...), every metric in base units under its ncu name,
    the standard columns of :mod:`gpuprobe.ncu.counters` (``time_s``, ``dram_read_bytes``,
    ``dram_write_bytes``, ``dram_bytes``, ``flops``, ``dram_pct``, ``sm_pct``, ``tensor_pct``...)
    and ``op``/``layer`` from ``rule`` (default :func:`~gpuprobe.ncu.attribution.default_rule`). ``df.attrs``: ``source``, ``format``, ``device_name``,
    ``peaks`` (the report's own ceilings), ``missing`` (metrics it lacks), and ``profile`` (ncu
    version, clock and cache control, NVTX filter) when ``gpuprobe profile`` made it.
    """
    from gpuprobe.ncu.attribution import attribute, default_rule
    from gpuprobe.ncu.counter_roofline import report_peaks
    from gpuprobe.ncu.counters import add_standard_columns
    from gpuprobe.ncu.readers import read_report

    df = attribute(add_standard_columns(read_report(path)), rule or default_rule, rules=rules)
    df.attrs["peaks"] = report_peaks(df)
    meta = profile_meta_path(path)
    if meta.is_file():
        try:
            df.attrs["profile"] = json.loads(meta.read_text())
        except (OSError, ValueError):
            pass
    return df


__all__ = ["load_ncu_report", "read_report", "attribute", "default_rule", "Attribution", "AttributionRule",
           "ReportFormatError", "add_standard_columns", "profile_meta_path"]
