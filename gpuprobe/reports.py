"""One entry to every report: :func:`open_report` reads an Nsight Compute report, an Nsight Systems trace or
their CSV exports into a :class:`Report` (its one per-kernel table, docs/contracts.md section 6, and for a trace
the trace itself: steps, runtime calls, NVTX ranges), whatever made it; :func:`load_report` is its table.

The readers live with their tools (:mod:`gpuprobe.ncu`, :mod:`gpuprobe.nsys`); this module only
chooses one by the file, so neither reader depends on the other. ``gpuprobe report``, ``diff``, the
notebooks and the Python API all read through here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpuprobe import ncu, nsys
from gpuprobe.paths import require_regular_file

if TYPE_CHECKING:
    import pandas as pd

    from gpuprobe.ncu.attribution import AttributionRule
    from gpuprobe.nsys import Trace

#: What :func:`open_report` reads, for its one-line refusals.
ACCEPTED = "a .ncu-rep, an ncu CSV page, or an nsys .sqlite/.nsys-rep/stats CSV"


@dataclass(frozen=True)
class Report:
    """A read report: ``source`` ``ncu`` or ``nsys``, its per-kernel ``kernels`` table, and for an Nsight
    Systems input its :class:`~gpuprobe.nsys.Trace` (decode steps, runtime calls; None for ncu)."""

    path: Path
    source: str
    kernels: pd.DataFrame
    trace: Trace | None = None


def open_report(path: str | Path, rule: AttributionRule | None = None, *, rules: str | Path | None = None,
                align_eager: str | Path | None = None, step_regex: str | None = None) -> Report:
    """Read any report. ``rules``: a user's kernel rules file (docs/kernel-rules.md); ``align_eager`` and
    ``step_regex`` are for traces only (graph-replayed kernels named after an eager trace's steps).

    Only a regular file is read (a FIFO or a device is refused before it is opened); anything wrong with
    the file is a :class:`gpuprobe.errors.UserError`: one line naming it."""
    require_regular_file(path, what=ACCEPTED)
    if nsys.is_nsys_input(path):
        trace = nsys.load_trace(path, rule, rules=rules, align_eager=align_eager, step_regex=step_regex)
        return Report(Path(path), "nsys", trace.kernels, trace)
    return Report(Path(path), "ncu", ncu.load_ncu_report(path, rule, rules=rules))


def load_report(path: str | Path, rule: AttributionRule | None = None,
                rules: str | Path | None = None) -> pd.DataFrame:
    """The per-kernel table of any report (:func:`open_report`'s ``kernels``): ``.ncu-rep``/ncu CSV pages or
    ``.sqlite``/``.nsys-rep``/nsys stats CSVs. Columns a source cannot fill are missing values, never 0."""
    return open_report(path, rule, rules=rules).kernels
