"""One entry to every report: :func:`load_report` turns an Nsight Compute report, an Nsight Systems trace
or their CSV exports into the one per-kernel table (docs/contracts.md section 6), whatever made it.

The readers live with their tools (:mod:`gpuprobe.ncu`, :mod:`gpuprobe.nsys`); this module only
chooses one by the file, so neither reader depends on the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpuprobe import ncu, nsys
from gpuprobe.paths import require_regular_file

if TYPE_CHECKING:
    import pandas as pd

    from gpuprobe.ncu.attribution import AttributionRule


def load_report(path: str | Path, rule: AttributionRule | None = None,
                rules: str | Path | None = None) -> pd.DataFrame:
    """The per-kernel table of any report: ``.ncu-rep``/ncu CSV pages (:func:`gpuprobe.ncu.load_report`) or
    ``.sqlite``/``.nsys-rep``/nsys stats CSVs (:func:`gpuprobe.nsys.load_report`). Columns a source cannot
    fill are missing values, never 0. ``rules``: a user's kernel rules file (docs/kernel-rules.md).

    Only a regular file is read (a FIFO or a device is refused before it is opened); anything wrong with
    the file is a :class:`gpuprobe.errors.UserError`: one line naming it."""
    require_regular_file(path, what="a .ncu-rep, an ncu CSV page, or an nsys .sqlite/.nsys-rep/stats CSV")
    if nsys.is_nsys_input(path):
        return nsys.load_report(path, rule, rules=rules)
    return ncu.load_report(path, rule, rules=rules)
