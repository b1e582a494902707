"""``nsys stats --format csv`` reports -> raw kernel rows for :func:`gpuprobe.nsys.table.kernel_frame`.

Three reports are read, told apart by their header (time columns carry their unit, ``(ns)`` by
default, ``--timeunit`` may change it):

* ``cuda_gpu_kern_sum``: one row per kernel name (``Time (%)``, ``Total Time``, ``Instances``,
  ``Avg``, ``Med``, ``Min``, ``Max``, ``StdDev``, ``Name``): ``time_s`` is the total and ``instances``
  the count; nothing per launch (grid, stream, NVTX) is known;
* ``cuda_gpu_trace``: one row per kernel or memory operation (``Start``, ``Duration``, ``CorrId``,
  ``GrdX``...``BlkZ``, ``Device``, ``Strm``, ``Name``); memory operations (``[CUDA memcpy ...]``,
  ``[CUDA memset]``) are left out: they are not kernels;
* ``nvtx_kern_sum``: one row per (NVTX range, kernel name) (``NVTX Range``, ``Style``, ``PID``, ``TID``,
  ``Kern Inst``, ``Total Time``... ``Kernel Name``): the range is the kernel's stack, as nsys
  matched it (innermost push/pop range of the launching thread only).
"""
from __future__ import annotations

import csv
import io
import lzma
import re
from pathlib import Path

import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.paths import require_regular_file

_UNITS = {"ns": 1.0, "nsec": 1.0, "us": 1e3, "usec": 1e3, "ms": 1e6, "msec": 1e6, "s": 1e9, "sec": 1e9}
_HEADER = re.compile(r"^\s*(.*?)\s*(?:\(([a-z]+)\))?\s*$")


class StatsFormatError(UserError):
    """A CSV that is not one of the nsys stats reports gpuprobe reads."""


def _split(cell: str) -> tuple[str, float | None]:
    """``Total Time (ns)`` -> (``Total Time``, 1.0 ns per unit); ``Name`` -> (``Name``, None)."""
    m = _HEADER.match(cell)
    name, unit = (m.group(1), m.group(2)) if m else (cell.strip(), None)
    return name, _UNITS.get(unit) if unit else None


def _read_text(path: Path) -> str:
    try:
        require_regular_file(path, what="an nsys stats CSV")
    except UserError as e:
        raise StatsFormatError(str(e)) from None
    try:
        if path.suffix == ".xz":
            return lzma.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="").read()
        return path.read_text(encoding="utf-8-sig", errors="replace")
    except (OSError, lzma.LZMAError, EOFError) as e:
        raise StatsFormatError(f"'{path}': cannot read: {e}") from None


def _find_table(path: Path, rows: list[list[str]]) -> tuple[str, int]:
    """(report kind, header row index): the first row that is a known report's header."""
    for i, row in enumerate(rows[:50]):
        names = {_split(c)[0] for c in row}
        if {"Total Time", "Instances", "Name"} <= names:
            return "cuda_gpu_kern_sum", i
        if {"Start", "Duration", "Name"} <= names and ({"CorrId", "CorrID"} & names):
            return "cuda_gpu_trace", i
        if {"NVTX Range", "Kernel Name", "Total Time"} <= names:
            return "nvtx_kern_sum", i
    raise StatsFormatError(f"'{path}': not an nsys stats CSV gpuprobe reads (cuda_gpu_kern_sum, cuda_gpu_trace "
                           "or nvtx_kern_sum); make one with `nsys stats --report cuda_gpu_trace --format csv "
                           "-o R R.nsys-rep`")


def sniff(path: str | Path) -> str | None:
    """The report kind of a CSV, or None when it is not an nsys stats report."""
    try:
        rows = list(csv.reader(io.StringIO(_read_text(Path(path))[:20000])))
        return _find_table(Path(path), rows)[0]
    except (UserError, csv.Error):
        return None


def _num(v: str) -> float | None:
    v = (v or "").strip().replace(",", "")
    if not v or v in ("-", "N/A"):
        return None
    try:
        return float(v)
    except ValueError:
        return None


_DEVICE = re.compile(r"^(.*?)\s*\((\d+)\)\s*$")


def read_stats_csv(path: str | Path) -> tuple[str, pd.DataFrame]:
    """(report kind, raw rows): ``kernel_name``, ``start``/``end`` (ns, trace only), ``duration_ns``,
    ``instances``, grid and block, ``device``, ``stream``, ``correlation_id``, ``nvtx_stack``, ``device_name``."""
    p = Path(path)
    rows = [r for r in csv.reader(io.StringIO(_read_text(p)))]
    kind, h = _find_table(p, rows)
    header = [_split(c) for c in rows[h]]
    idx = {name: i for i, (name, _) in enumerate(header)}
    scale = {name: (s or 1.0) for name, s in header}
    body = []
    for n, r in enumerate(rows[h + 1:], start=h + 2):
        if not any(c.strip() for c in r):
            continue
        if len(r) < len(header):
            raise StatsFormatError(f"'{p}': line {n} has {len(r)} fields where the header has {len(header)} "
                                   "(a truncated or edited file); its time would be lost: fix or re-create the "
                                   "CSV with `nsys stats`")
        body.append((n, r))

    def col(name: str, r: list[str]) -> str:
        return r[idx[name]] if name in idx else ""

    def t(name: str, r: list[str]) -> float | None:
        v = _num(col(name, r))
        return None if v is None else v * scale[name]

    def need_time(name: str, r: list[str], n: int) -> float:
        v = t(name, r)
        if v is None or v != v or v < 0 or v == float("inf"):
            raise StatsFormatError(f"'{p}': line {n}: '{name}' is '{col(name, r)[:40]}', not a duration "
                                   "(empty, negative or not a number); fix or re-create the CSV with `nsys stats`")
        return v

    recs = []
    for n, r in body:
        if kind == "cuda_gpu_kern_sum":
            recs.append({"kernel_name": col("Name", r), "duration_ns": need_time("Total Time", r, n),
                         "instances": _num(col("Instances", r))})
        elif kind == "nvtx_kern_sum":
            rng = col("NVTX Range", r).strip()
            recs.append({"kernel_name": col("Kernel Name", r), "duration_ns": need_time("Total Time", r, n),
                         "instances": _num(col("Kern Inst", r)),
                         "nvtx_stack": (rng.lstrip(":"),) if rng else ()})
        else:
            name = col("Name", r)
            if name.startswith("[CUDA "):
                continue
            start, dur = t("Start", r), need_time("Duration", r, n)
            dev = _DEVICE.match(col("Device", r).strip())
            corr = col("CorrId", r) or col("CorrID", r)
            recs.append({"kernel_name": name, "start": start, "duration_ns": dur,
                         "end": start + dur if start is not None and dur is not None else None,
                         "correlation_id": _num(corr),
                         **{f"{a}_{x}": _num(col(f"{b}{x.upper()}", r)) for a, b in (("grid", "Grd"), ("block", "Blk"))
                            for x in "xyz"},
                         "device": int(dev.group(2)) if dev else _num(col("Device", r)),
                         "device_name": dev.group(1) if dev else None,
                         "stream": _num(col("Strm", r))})
    if not recs:
        raise StatsFormatError(f"'{p}': the {kind} report holds no kernel rows")
    return kind, pd.DataFrame(recs)
