"""Read Nsight Compute reports into one normalized pandas table: one row per kernel launch.

Three inputs give the same table:

* the raw CSV page (``ncu --import R.ncu-rep --csv --page raw``), in display units (each column has
  its own: ``Mbyte``, ``Kbyte``, ``us``, ``Tbyte/s``...) or base units (``--print-units base``);
* the details CSV page (``--page details``): section labels at two or three significant digits,
  mapped to metric names where the mapping is known (:data:`DETAILS_LABELS`);
* the binary ``.ncu-rep``, through NVIDIA's ``ncu_report`` module run in a child process
  (:mod:`gpuprobe.ncu.rep_child`: a file that makes it abort costs one line, not the process), or,
  where no such module loads but Nsight Compute is installed, through ``ncu --import R --csv --page raw --print-units base``
  (``df.attrs["reader"]`` says which).

Any of them may be xz-compressed (``.ncu-rep.xz``, ``.csv.xz``).

Columns of the table (:data:`ID_COLUMNS`, then every metric under its ncu name, converted to base
units: bytes, seconds, hertz, counts, percent):

``id`` (launch index in the report), ``kernel_name`` (as the report gives it), ``kernel_short``
(namespace, template arguments and parameters stripped: ``vectorized_elementwise_kernel`` from both
``void at::vectorized_elementwise_kernel<8, ...>(...)`` and ncu_report's name), ``grid``, ``block``
(3-tuples), ``device``, ``stream``, ``nvtx_stack`` (push/pop range names, outermost first; ranges of
a named domain as ``domain@name``), ``nvtx_ranges`` (open start/end ranges, same spelling).

``df.attrs``: ``source``, ``format`` (``csv-raw``, ``csv-details``, ``ncu-rep``), ``units``
(metric -> base unit), ``device_name`` when known, ``warnings`` (a truncated or damaged file).

:func:`read_report` is the one dispatch from a file to its reader.

Anything wrong with the input raises :class:`ReportFormatError` (a :class:`UserError`): one line
naming the file and what is wrong.
"""
from __future__ import annotations

import csv
import io
import itertools
import lzma
import math
import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.ncu.ncu_report_loader import require_ncu_report
from gpuprobe.ncu.rep_child import ChildFailed, DEFAULT_DOMAIN, REP_MAGIC, read_in_child, scan_blocks
from gpuprobe.ncu.runner import NcuError, import_raw_csv
from gpuprobe.ncu.units import NA_TOKENS, NUMBER_PATTERN, metric_unit, parse_number
from gpuprobe.paths import DecompressError, decompress_xz, require_fits_in_memory, require_regular_file

ID_COLUMNS = ("id", "kernel_name", "kernel_short", "kernel_key", "grid", "block", "device", "stream", "nvtx_stack", "nvtx_ranges")


#: CSV header cells that are launch attributes, not metrics.
_CSV_IDENTITY = {
    "ID": "id", "Process ID": "process_id", "Process Name": "process_name", "Host Name": "host_name",
    "Kernel Name": "kernel_name", "Context": "context", "Stream": "stream", "Block Size": "block",
    "Grid Size": "grid", "Device": "device", "CC": "cc",
}
_THREAD_NVTX_PREFIX = "thread Domain:Push/Pop_Range"
_START_END_PREFIX = "Id:Domain:Start/Stop_Range"

#: Labels of the details page (section, label) that are one known metric (checked against the raw page
#: of the same report in the shipped fixtures).
DETAILS_LABELS: dict[tuple[str, str], str] = {
    ("GPU Speed Of Light Throughput", "Duration"): "gpu__time_duration.sum",
    ("GPU Speed Of Light Throughput", "DRAM Throughput"): "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
    ("GPU Speed Of Light Throughput", "Memory Throughput"): "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    ("GPU Speed Of Light Throughput", "Compute (SM) Throughput"): "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    ("GPU Speed Of Light Throughput", "L2 Cache Throughput"): "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    ("GPU Speed Of Light Throughput", "L1/TEX Cache Throughput"): "l1tex__throughput.avg.pct_of_peak_sustained_active",
    ("GPU Speed Of Light Throughput", "DRAM Frequency"): "dram__cycles_elapsed.avg.per_second",
    ("GPU Speed Of Light Throughput", "SM Frequency"): "sm__cycles_elapsed.avg.per_second",
    ("Memory Workload Analysis", "Memory Throughput"): "dram__bytes.sum.per_second",
}

_METRIC_NAME = re.compile(r"^[a-z0-9_]+__[A-Za-z0-9_.]+$")


class ReportFormatError(UserError):
    """A report file that is empty, truncated, or not an Nsight Compute report."""


class ReaderUnavailable(UserError):
    """An ``ncu_report`` module was found but cannot read reports here (its native library is missing)."""


def _fail(path: Any, what: str) -> ReportFormatError:
    """One line, whatever the damaged text quoted in ``what`` holds (newlines, NULs)."""
    return ReportFormatError(f"'{path}': {' '.join(str(what).replace(chr(0), ' ').split())}")


# ---------------------------------------------------------------- kernel names


def short_kernel_name(name: str) -> str:
    """``void at::native::vectorized_elementwise_kernel<(int)8, ...>(int, T2, T3)`` -> ``vectorized_elementwise_kernel``.

    Drops the return type, template arguments, the parameter list and namespaces, so the CSV pages'
    names and ``ncu_report``'s agree.
    """
    s = str(name or "").strip()
    if s.startswith("void "):
        s = s[5:]
    out, depth = [], 0
    for ch in s:
        if ch in "<({[":
            depth += 1
        elif ch in ">)}]":
            depth = max(depth - 1, 0)
        elif depth == 0:
            out.append(ch)
    top = "".join(out).strip()
    top = top.split()[-1] if top.split() else top
    short = top.rsplit("::", 1)[-1].strip(": ")
    return short or s


_CAST = re.compile(r"\((?:unsigned |signed )?(?:int|long long|long|short|char|bool)\)(?=-?\d)")
_INT_SUFFIX = re.compile(r"\b(\d+)(?:ull|ul|ll|u|l)\b", re.IGNORECASE)


def _strip_params(s: str) -> str:
    """Drop a trailing top-level parameter list ``(...)`` (and a ``void`` return type)."""
    s = s.strip()
    if s.startswith("void "):
        s = s[5:].strip()
    if s.endswith(")"):
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(s[i], 0)
            if depth == 0:
                head = s[:i].rstrip()
                if head and not head.endswith(("<", ",", "(")):
                    return head
                break
    return s


def kernel_key(name: str, block: tuple[int, ...] | None = None) -> str:
    """A kernel's identity across launches and reports: its short name plus its template signature.

    ``void at::native::vectorized_elementwise_kernel<(int)8, at::native::CUDAFunctor_add<c10::BFloat16>,
    ...>(int, T2, T3)`` -> ``vectorized_elementwise_kernel<8, at::native::CUDAFunctor_add<c10::BFloat16>,
    ...>``: two CUTLASS GEMMs of different tiles, or two elementwise functors, stay two kernels. Literal
    casts (``(int)8``) are dropped so the CSV pages' spelling and ``ncu_report``'s agree. A name with no
    template signature and no parameter list (Triton, OpenACC, or a report that kept only the function
    name) gets its block shape instead (``matmul_2d_tiling[16x16x1]``), which is fixed by the kernel's
    code, unlike the grid, which follows the problem size.
    """
    full = str(name or "").strip()
    short = short_kernel_name(full)
    body = _strip_params(full)
    lt = body.find("<", body.rfind(short) if short in body else 0)
    if lt != -1 and body.endswith(">"):
        sig = _INT_SUFFIX.sub(r"\1", _CAST.sub("", body[lt:]))
        return short + re.sub(r"\s+", " ", sig)
    if "(" not in full and block:
        return f"{short}[{'x'.join(str(b) for b in block)}]"
    return short


# ---------------------------------------------------------------- NVTX column of the CSV pages

_QUOTED = re.compile(r'"([^"]*)"')


def _nvtx_entry(entry: str, start_end: bool) -> str | None:
    # "<domain>:<range>:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg" (start/end: "<id>:" in front)
    parts = entry.rsplit(":", 6)
    if len(parts) < 7:
        return None
    head = parts[0]
    if start_end:
        first, sep, rest = head.partition(":")
        if sep and first.strip().isdigit():
            head = rest
    domain, sep, rng = head.partition(":")
    if not sep:
        return None
    return rng if domain == DEFAULT_DOMAIN else f"{domain}@{rng}"


def parse_nvtx_cell(cell: str, start_end: bool = False) -> tuple[str, ...]:
    """The NVTX cell of a raw CSV row -> range names, outermost first (named domains as ``dom@name``)."""
    if not cell or not cell.strip():
        return ()
    names = (_nvtx_entry(e, start_end) for e in _QUOTED.findall(cell))
    return tuple(n for n in names if n)


def _dims(text: str) -> tuple[int, ...] | None:
    nums = re.findall(r"-?\d+", str(text or ""))
    return tuple(int(n) for n in nums) if nums else None


# ---------------------------------------------------------------- CSV


def _read_text(path: Path, text: str | None) -> str:
    if text is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _fail(path, f"cannot read: {e.strerror or e}") from None
        if not data.strip():
            raise _fail(path, "the file is empty")
        if data.startswith(REP_MAGIC):
            raise _fail(path, "is a binary .ncu-rep, not a CSV (name it .ncu-rep)")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _fail(path, "is not text (expected an Nsight Compute CSV page or a .ncu-rep)") from None
    if "\x00" in text:
        raise _fail(path, "holds NUL bytes: not an Nsight Compute CSV page")
    return text


def _csv_rows(path: Path, text: str) -> Iterator[list[str]]:
    """The page's rows as the ``csv`` module reads them, one at a time; a malformed row is one line."""
    try:
        yield from csv.reader(io.StringIO(text, newline=""))
    except csv.Error as e:
        raise _fail(path, f"malformed CSV: {e}") from None


def _find_header(path: Path, rows: Iterator[list[str]]) -> list[str]:
    """The header row, wherever it is: ncu's own ``==PROF==`` lines, a program's output or a traceback may
    come first when a page was captured from a terminal (the rows before it are passed over)."""
    for r in rows:
        if r and r[0].strip() == "ID" and "Kernel Name" in r:
            return r
    raise _fail(path, "not an Nsight Compute CSV page: no header row with 'ID' and 'Kernel Name' "
                      "(export one with `ncu --import R.ncu-rep --csv --page raw --print-units base`)")


def read_csv(path: str | Path, text: str | None = None) -> pd.DataFrame:
    """A raw or details CSV page -> the normalized table (page type detected from the header)."""
    path = Path(path)
    text = _read_text(path, text)
    rows = _csv_rows(path, text)
    header = _find_header(path, rows)
    if "Metric Name" in header and "Metric Value" in header:
        return _read_details(path, header, list(rows))

    def again() -> Iterator[list[str]]:
        rest = _csv_rows(path, text)
        _find_header(path, rest)
        return rest

    return _read_raw(path, header, rows, again)


def _check_width(path: Path, header: list[str], row: list[str], lineno: int) -> None:
    if len(row) != len(header):
        raise _fail(path, f"row {lineno} has {len(row)} fields where the header has {len(header)} "
                          "(truncated or edited file?)")


def _launch_id(path: Path, text: str, lineno: int) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise _fail(path, f"row {lineno}: launch ID '{text[:40]}' is not an integer") from None


#: Rows of a raw page turned into columns at a time (bounded memory: the page's text is read as a stream).
RAW_CHUNK_ROWS = 2048


def _blank(row: list[str]) -> bool:
    return not row or (not row[0].strip() and not any(c.strip() for c in row))


#: What float() reads and ncu's number grammar does not (``1_000``, ``5.``): such cells go to the grammar.
_FLOAT_ONLY = re.compile(r"_|\.(?![0-9])")


def _floats(values: np.ndarray) -> np.ndarray:
    """The cells (text) as floats, fast: numpy's float() loop, placeholders as NaN, thousands separators
    dropped where the cell is a well-formed number; a cell it still cannot read, or one float() reads but
    the grammar would not, is NaN, for :func:`_numbers` to judge."""
    out = _float_cells(values)
    joined = "\n".join(values)  # one search over the column; a cell at a time only when it finds something
    if _FLOAT_ONLY.search(joined):
        out[[i for i, v in enumerate(values) if _FLOAT_ONLY.search(v)]] = math.nan
    return out


def _float_cells(values: np.ndarray) -> np.ndarray:
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        pass
    text = pd.Series(values, dtype=object)
    cleaned = values.copy()
    cleaned[text.isin(NA_TOKENS).to_numpy()] = "nan"
    comma = text.str.contains(",", regex=False).to_numpy(dtype=bool)
    if comma.any():
        grouped = text[comma].str.strip()
        well = grouped.str.fullmatch(NUMBER_PATTERN.pattern).to_numpy(dtype=bool)
        cleaned[np.flatnonzero(comma)[well]] = grouped[well].str.replace(",", "", regex=False).to_numpy(dtype=object)
    try:
        return cleaned.astype(float)
    except (TypeError, ValueError):
        return np.asarray(pd.to_numeric(cleaned, errors="coerce"), dtype=float).copy()


def _numbers(values: np.ndarray, factor: float) -> tuple[np.ndarray, int | None]:
    """Cells as ncu prints them -> floats in base units (NaN for a placeholder), vectorised; and the position
    of the first cell that is not a number (None when all are). Same grammar as :func:`parse_number`: the
    cells the fast parse leaves (placeholders, thousands separators, text, "inf") are checked against it."""
    out = _floats(values)
    odd = np.flatnonzero(~np.isfinite(out))
    if len(odd):
        cells = pd.Series(values[odd], dtype=object).astype(str).str.strip()
        na = cells.isin(NA_TOKENS).to_numpy()
        out[odd[na]] = math.nan
        rest, text = odd[~na], cells[~na]
        if len(rest):
            ok = (text.str.fullmatch(NUMBER_PATTERN.pattern).to_numpy(dtype=bool)
                  & ~text.isin(("+", "-", ".")).to_numpy())
            if not ok.all():
                return out, int(rest[np.argmin(ok)])
            out[rest] = pd.to_numeric(text.str.replace(",", "", regex=False)).to_numpy(dtype=float)
    return out * factor, None


class _RawColumn:
    """One metric column of a raw page, filled chunk by chunk: floats in base units, or, for a column
    without a unit that holds text, its cells (missing for placeholders). A unitless column found to hold
    text only after its first chunk is ``late``: its cells are read again (:func:`_read_raw`)."""

    def __init__(self, name: str, unit_cell: str, path: Path):
        self.name, self.path = name, path
        self.base, self.factor, self.problem = metric_unit(name, unit_cell)
        self.strict = bool(unit_cell.strip())
        self.numbers: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []
        self.text = self.late = False
        self.seen = 0  # cells that are not placeholders (the warning of a column whose unit is not known)

    def add(self, values: np.ndarray, first_lineno: int, first_chunk: bool) -> None:
        if self.problem is not None:
            self.seen += sum(1 for v in values if str(v).strip() not in NA_TOKENS)
            return
        if self.text:
            self.cells.append(values.copy())  # a copy: a view would keep the whole chunk alive
            return
        if self.late:
            return
        nums, bad = _numbers(values, self.factor)
        if bad is None:
            self.numbers.append(nums)
        elif self.strict:
            raise _fail(self.path, f"column '{self.name[:60]}' row {first_lineno + bad}: "
                                   f"'{str(values[bad])[:40]}' is not a number")
        elif first_chunk:
            self.text = True
            self.cells.append(values.copy())
        else:
            self.late = True

    def values(self, n: int, warnings: list[str]) -> Any:
        if self.problem is not None:
            if self.seen:
                warnings.append(f"'{self.path}': column '{self.name[:60]}' has {self.problem}; its {n} value(s) are "
                                "left out (missing), not read in a guessed unit")
            return np.full(n, math.nan)
        if self.text or self.late:
            cells = np.concatenate(self.cells) if self.cells else np.empty(0, dtype=object)
            return [None if str(c).strip() in NA_TOKENS else c for c in cells]
        return np.concatenate(self.numbers) if self.numbers else np.empty(0)

    @property
    def unit(self) -> str:
        return "" if self.problem is not None else self.base


def _read_raw(path: Path, header: list[str], rows: Iterator[list[str]],
              again: Callable[[], Iterator[list[str]]]) -> pd.DataFrame:
    """The raw page after its header: the units row, then one row per launch, read ``RAW_CHUNK_ROWS`` at a
    time; launch attributes row by row (a few columns), metrics column by column (vectorised). ``again``:
    the rows after the header once more, for a column without a unit that turns out to hold text late."""
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise _fail(path, f"column '{dup[:60]}' appears twice in the header")
    units_row = next(rows, None)  # the line under the header, as ncu writes it
    if not (units_row and units_row[0] == ""):
        raise _fail(path, "raw page without its units row (the line under the header): its values cannot be "
                          "put in base units; export it again with `ncu --import R.ncu-rep --csv --page raw "
                          "--print-units base`")
    _check_width(path, header, units_row, 2)
    ident = {j: _CSV_IDENTITY[c] for j, c in enumerate(header) if c in _CSV_IDENTITY}
    thread_j = next((j for j, c in enumerate(header) if c.startswith(_THREAD_NVTX_PREFIX)), None)
    se_j = next((j for j, c in enumerate(header) if c.startswith(_START_END_PREFIX)), None)
    metric_js = [j for j in range(len(header)) if j not in ident and j not in (thread_j, se_j)]
    columns = {j: _RawColumn(header[j], units_row[j], path) for j in metric_js}
    attrs: dict[str, list[Any]] = {name: [] for name in ident.values()}
    nvtx_cells: dict[str, list[str]] = {"nvtx_stack": [], "nvtx_ranges": []}
    lineno = 3
    while True:
        chunk = [r for r in itertools.islice(rows, RAW_CHUNK_ROWS)]
        if not chunk:
            break
        chunk = [r for r in chunk if not _blank(r)]
        if not chunk:
            continue
        for i, r in enumerate(chunk):
            _check_width(path, header, r, lineno + i)
        for j, name in ident.items():
            attrs[name].extend(r[j] for r in chunk)
        for key, j in (("nvtx_stack", thread_j), ("nvtx_ranges", se_j)):
            if j is not None:
                nvtx_cells[key].extend(r[j] for r in chunk)
        table = np.array(chunk, dtype=object)
        for j, col in columns.items():
            col.add(table[:, j], lineno, lineno == 3)
        lineno += len(chunk)
        del table, chunk
    n = lineno - 3
    if n == 0:
        raise _fail(path, "holds no kernel rows (nothing was profiled, or the file is truncated)")
    ids = [_launch_id(path, v, 3 + i) for i, v in enumerate(attrs.pop("id"))]
    records = {"id": ids, **attrs}
    for key, j in (("nvtx_stack", thread_j), ("nvtx_ranges", se_j)):
        records[key] = (_per_distinct(nvtx_cells[key], lambda c, s=(key == "nvtx_ranges"): parse_nvtx_cell(c, s))
                        if j is not None else [()] * n)
    late = {j: col for j, col in columns.items() if col.late}
    if late:  # a second pass for their cells only
        for col in late.values():
            col.cells = []
        rest = again()
        next(rest, None)  # the units row
        kept = (r for r in rest if not _blank(r))
        while chunk := list(itertools.islice(kept, RAW_CHUNK_ROWS)):
            table = np.array(chunk, dtype=object)
            for j, col in late.items():
                col.cells.append(table[:, j].copy())
    warnings: list[str] = []
    metrics = {header[j]: col.values(n, warnings) for j, col in columns.items()}
    units = {header[j]: col.unit for j, col in columns.items()}
    return _assemble_columns(records, metrics, units, path, "csv-raw", warnings)


def _read_details(path: Path, header: list[str], body: list[list[str]]) -> pd.DataFrame:
    idx = {c: header.index(c) for c in header}
    need = ("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value")
    if any(c not in idx for c in need):
        raise _fail(path, "details page without the columns " + ", ".join(need))
    sec_col = idx.get("Section Name")
    thread_col = next((i for i, c in enumerate(header) if c.startswith(_THREAD_NVTX_PREFIX)), None)
    se_col = next((i for i, c in enumerate(header) if c.startswith(_START_END_PREFIX)), None)
    launches: "OrderedDict[int, dict[str, Any]]" = OrderedDict()
    values: dict[int, dict[str, float | str | None]] = {}
    bad_units: dict[tuple[str, str], list[int]] = {}
    conflicts: dict[str, list[int]] = {}
    units: dict[str, str] = {}
    body = [r for r in body if any(c.strip() for c in r)]
    if not body:
        raise _fail(path, "holds no kernel rows (nothing was profiled, or the file is truncated)")
    for i, r in enumerate(body):
        if len(r) > len(header) or len(r) <= idx["Metric Value"]:
            raise _fail(path, f"row {i + 2} has {len(r)} fields where the header has {len(header)} "
                              "(truncated or edited file?)")
        r = r + [""] * (len(header) - len(r))  # metric rows omit the trailing rule columns
        lid = _launch_id(path, r[idx["ID"]], i + 2)
        if lid not in launches:
            rec = {_CSV_IDENTITY[c]: r[idx[c]] for c in _CSV_IDENTITY if c in idx and c != "ID"}
            rec["id"] = lid
            rec["nvtx_stack"] = parse_nvtx_cell(r[thread_col]) if thread_col is not None else ()
            rec["nvtx_ranges"] = parse_nvtx_cell(r[se_col], start_end=True) if se_col is not None else ()
            launches[lid] = rec
            values[lid] = {}
        label = r[idx["Metric Name"]].strip()
        if not label:
            continue  # a rule message
        section = r[sec_col].strip() if sec_col is not None else ""
        if _METRIC_NAME.match(label):
            name = label
        else:
            name = DETAILS_LABELS.get((section, label), f"{section}: {label}")
        base, factor, problem = metric_unit(name, r[idx["Metric Unit"]])
        raw = r[idx["Metric Value"]]
        if problem is not None:
            if str(raw).strip() not in NA_TOKENS:
                bad_units.setdefault((name, problem), []).append(i + 2)
            if name not in values[lid]:
                values[lid][name] = math.nan
            units.setdefault(name, "")
            continue
        try:
            x = parse_number(raw)
            val: Any = math.nan if x is None else x * factor
        except ValueError:
            if r[idx["Metric Unit"]].strip():
                raise _fail(path, f"row {i + 2}: value '{raw[:40]}' of '{label[:60]}' is not a number") from None
            val = raw
        if name in values[lid]:  # the same metric twice in one kernel (two sections): keep the first
            prev = values[lid][name]
            same = prev == val or (isinstance(prev, float) and isinstance(val, float) and math.isnan(prev)
                                   and math.isnan(val))
            if not same:
                conflicts.setdefault(name, []).append(i + 2)
            continue
        values[lid][name] = val
        units[name] = base
    records = list(launches.values())
    names = list(dict.fromkeys(n for v in values.values() for n in v))
    metrics = {n: [values[rec["id"]].get(n, math.nan) for rec in records] for n in names}
    warnings = [f"'{path}': '{name[:60]}' has {problem} in {len(rows)} row(s) (line {', '.join(map(str, rows[:5]))}"
                f"{' ...' if len(rows) > 5 else ''}); those values are left out (missing)"
                for (name, problem), rows in bad_units.items()]
    warnings += [f"'{path}': '{name[:60]}' is given twice for one kernel with different values (line "
                 f"{', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}); the first is kept"
                 for name, rows in conflicts.items()]
    return _assemble(records, metrics, units, path, "csv-details", warnings)


def _safe_text(v: Any) -> Any:
    """A name with lone surrogates (bytes a decoder could not map) made printable: each one becomes U+FFFD."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return v


def _per_distinct(values: Iterable[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """``fn`` of each value, computed once per distinct value (names, shapes and NVTX cells repeat across
    launches: a long kernel name is parsed once, not once per launch)."""
    cache: dict[Any, Any] = {}
    return [cache[v] if v in cache else cache.setdefault(v, fn(v)) for v in values]


def _assemble(records: list[dict[str, Any]], metrics: dict[str, Any], units: dict[str, str],
              path: Path, fmt: str, warnings: list[str] | None = None) -> pd.DataFrame:
    """:func:`_assemble_columns` of per-launch records (the details page, ``.ncu-rep``)."""
    cols: dict[str, list[Any]] = {"id": [r["id"] for r in records]}
    for key, default in (("kernel_name", ""), ("grid", None), ("block", None), ("device", None),
                         ("stream", None), ("nvtx_stack", ()), ("nvtx_ranges", ())):
        cols[key] = [r.get(key, default) for r in records]
    return _assemble_columns(cols, metrics, units, path, fmt, warnings)


def _shape(v: Any) -> tuple[int, ...] | None:
    return v if isinstance(v, tuple) else _dims(v)


def _assemble_columns(cols: dict[str, list[Any]], metrics: dict[str, Any], units: dict[str, str],
                      path: Path, fmt: str, warnings: list[str] | None = None) -> pd.DataFrame:
    """The normalized per-kernel table from launch attributes (``id``, ``kernel_name``, ``grid``, ``block``,
    ``device``, ``stream``, ``nvtx_stack``, ``nvtx_ranges``) and metric columns in base units."""
    n = len(cols["id"])
    col = lambda key, default: cols.get(key) or [default] * n  # noqa: E731
    names = _per_distinct(col("kernel_name", ""), _safe_text)
    block = _per_distinct(col("block", None), _shape)
    ident = pd.DataFrame({
        "id": cols["id"],
        "kernel_name": names,
        "kernel_short": _per_distinct(names, short_kernel_name),
        "kernel_key": _per_distinct(zip(names, block), lambda nb: kernel_key(*nb)),
        "grid": _per_distinct(col("grid", None), _shape),
        "block": block,
        "device": _per_distinct(col("device", None), _int_or_none),
        "stream": _per_distinct(col("stream", None), _int_or_none),
        "nvtx_stack": _per_distinct(col("nvtx_stack", ()), lambda t: tuple(_safe_text(x) for x in t)),
        "nvtx_ranges": _per_distinct(col("nvtx_ranges", ()), lambda t: tuple(_safe_text(x) for x in t)),
    })
    extra = {k: v for k, v in metrics.items() if k not in ident.columns}
    df = pd.concat([ident, pd.DataFrame(extra, index=ident.index)], axis=1) if extra else ident
    df.attrs.update({"source": str(path), "format": fmt, "units": dict(units)})
    if warnings:
        df.attrs["warnings"] = list(warnings)
    name = _first_string(df, "device__attribute_display_name")
    if name:
        df.attrs["device_name"] = name
    return df


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, float):
        return int(v) if math.isfinite(v) else None
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def _first_string(df: pd.DataFrame, col: str) -> str | None:
    if col not in df.columns:
        return None
    for v in df[col]:
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


# ---------------------------------------------------------------- .ncu-rep


#: Largest decompressed ``.xz`` report (bytes): a bigger one is refused, not written to disk.
MAX_XZ_BYTES = 32 << 30


def _decompress_xz(path: Path, folder: Path) -> Path:
    """``R.ncu-rep.xz`` -> ``folder/R.ncu-rep``; a damaged archive is the reader's one-line error."""
    plain = folder / path.with_suffix("").name
    with open(plain, "wb") as dst:
        _decompress_into(path, dst)
    return plain


def _decompress_into(path: Path, dst) -> None:
    """``path`` (xz) decompressed into the open binary file ``dst``, at most :data:`MAX_XZ_BYTES`."""
    try:
        decompress_xz(path, dst, MAX_XZ_BYTES)
    except DecompressError as e:
        raise _fail(path, str(e)) from None


def read_ncu_rep(path: str | Path) -> pd.DataFrame:
    """A binary ``.ncu-rep`` (or ``.ncu-rep.xz``) -> the normalized table, through ``ncu_report``.

    The module runs in a child process (:mod:`gpuprobe.ncu.rep_child`): a file that makes it abort
    gives one line naming ``path``, never a dead process. A file whose blocks stop early is read as far
    as it goes, and ``df.attrs["warnings"]`` says how many kernels it held and that it looks truncated.
    """

    path = Path(path)
    size = _require_file(path)
    # a decompressed copy lives in an unnamed temporary file (O_TMPFILE): nothing is left behind, even by
    # a SIGKILLed process; the child reads it through /proc/self/fd
    with tempfile.TemporaryFile(prefix="gpuprobe-rep-") as tmp:
        fds: tuple[int, ...] = ()
        if path.suffix == ".xz":
            _decompress_into(path, tmp)
            plain: Path = Path(f"/proc/self/fd/{tmp.fileno()}")
            fds = (tmp.fileno(),)
            size = os.fstat(tmp.fileno()).st_size
        else:
            plain = path
        try:
            require_fits_in_memory(path, size, 2, "a .ncu-rep")
        except UserError as e:
            raise ReportFormatError(str(e)) from None
        try:
            if fds:
                tmp.seek(0)
                data = tmp.read()
            else:
                data = plain.read_bytes()
        except OSError as e:
            raise _fail(path, f"cannot read: {e.strerror or e}") from None
        if not data:
            raise _fail(path, "the file is empty")
        if not data.startswith(REP_MAGIC):
            raise _fail(path, "not a .ncu-rep file (no 'NVR' signature); CSV pages are read by their content")
        scan = scan_blocks(data)
        del data
        module = require_ncu_report(path)
        try:
            got = read_in_child(plain, getattr(module, "__file__", None), pass_fds=fds)
        except ChildFailed as e:
            raise ReportFormatError(f"could not read '{path}': {e}; the file is damaged or from an unsupported "
                                    "version") from None
        if "error" in got:  # the module's own words may name the decompressed copy: name the user's file
            got["error"] = " ".join(str(got["error"]).replace(str(plain), str(path)).split())
    if "error" in got:
        if got.get("unavailable"):
            raise ReaderUnavailable(f"cannot read '{path}': {got['error']}; export the raw page as CSV instead "
                                    "(`ncu --import R.ncu-rep --csv --page raw --print-units base > R.csv`)")
        raise _fail(path, got["error"])
    kernels = got["kernels"]
    warnings: list[str] = []
    if not scan.complete:
        if not kernels:
            raise _fail(path, f"looks truncated ({scan.problem}): no kernel results could be read")
        extra = len(kernels) - scan.results
        how = (f", {scan.results} from complete blocks and {extra} from the cut block, whose values may be "
               "incomplete" if extra > 0 else f" (its complete blocks hold {scan.results})")
        warnings.append(f"'{path}' looks truncated: it {scan.problem}; {len(kernels)} kernel(s) read{how}")
    elif len(kernels) < scan.results:
        warnings.append(f"'{path}': its blocks declare {scan.results} kernel results but ncu_report read "
                        f"{len(kernels)}; the file looks damaged")
    if got.get("skipped_metrics") or got.get("skipped_kernels"):
        warnings.append(f"'{path}': ncu_report could not read {got['skipped_metrics']} metric value(s) and "
                        f"{got['skipped_kernels']} kernel(s); they are missing from the table")
    if not kernels:
        raise _fail(path, "holds no kernel results (truncated, or nothing was profiled)")
    records: list[dict[str, Any]] = []
    metrics: dict[str, list[Any]] = {}
    units: dict[str, str] = {}
    unit_problems: dict[tuple[str, str], list[int]] = {}
    for n, k in enumerate(kernels):
        vals: dict[str, Any] = {}
        for name, (value, unit) in k["metrics"].items():
            if isinstance(value, float):
                base, factor, problem = metric_unit(name, unit)
                if problem is not None:
                    unit_problems.setdefault((name, problem), []).append(n)
                    vals[name], units[name] = math.nan, ""
                else:
                    vals[name], units[name] = value * factor, base
            else:
                vals[name], units[name] = _safe_text(value), ""
        gx, gy, gz = (vals.get(f"launch__grid_dim_{c}") for c in "xyz")
        bx, by, bz = (vals.get(f"launch__block_dim_{c}") for c in "xyz")
        records.append({
            "id": n, "kernel_name": k["name"],
            "grid": _tuple_ints(gx, gy, gz), "block": _tuple_ints(bx, by, bz),
            "device": vals.get("launch__device_id"), "stream": vals.get("launch__stream_id"),
            "nvtx_stack": k["nvtx_stack"], "nvtx_ranges": k["nvtx_ranges"],
        })
        for key in set(metrics) | set(vals):
            metrics.setdefault(key, [math.nan] * n).append(vals.get(key, math.nan))
    warnings += [f"'{path}': '{name[:60]}' has {problem} in {len(ids)} kernel(s) (launch id "
                 f"{', '.join(map(str, ids[:5]))}); those values are left out (missing)"
                 for (name, problem), ids in unit_problems.items()]
    df = _assemble(records, metrics, units, path, "ncu-rep")
    df.attrs["reader"] = got.get("reader")
    df.attrs["kernels_declared"] = scan.results if scan.complete else None
    if warnings:
        df.attrs["warnings"] = warnings
    return df


def read_ncu_rep_via_csv(path: str | Path, ncu: Any = None) -> pd.DataFrame:
    """A ``.ncu-rep`` (or ``.ncu-rep.xz``) read through ``ncu --import R --csv --page raw --print-units base``.

    For a machine with Nsight Compute but no loadable ``ncu_report`` module. The table is the raw
    page's (same columns and units as :func:`read_ncu_rep`; kernel names as the CSV spells them)."""

    path = Path(path)
    _require_file(path)
    with tempfile.TemporaryDirectory(prefix="gpuprobe-rep-") as tmp:
        plain = _decompress_xz(path, Path(tmp)) if path.suffix == ".xz" else path
        with open(plain, "rb") as f:
            head = f.read(4)
        if not head:
            raise _fail(path, "the file is empty")
        if head != REP_MAGIC:
            raise _fail(path, "not a .ncu-rep file (no 'NVR' signature); CSV pages are read by their content")
        try:
            text = import_raw_csv(plain, ncu)
        except NcuError as e:
            raise _fail(path, f"ncu --import cannot read it: {str(e).splitlines()[-1][:200]}") from None
    df = read_csv(path, text=text)
    df.attrs["reader"] = "ncu --import --csv --page raw --print-units base"
    return df


def _read_rep(path: Path) -> pd.DataFrame:
    """``ncu_report`` when a module can be loaded; else ``ncu --import`` to CSV when ncu is here; else the
    :class:`UserError` of :func:`~gpuprobe.ncu.ncu_report_loader.require_ncu_report` (how to export a CSV)."""
    from gpuprobe.ncu.ncu_report_loader import find_ncu_report

    from gpuprobe.ncu.runner import find_ncu

    if find_ncu_report() is None:
        inst = find_ncu()
        if inst is not None:
            return read_ncu_rep_via_csv(path, inst)
        return read_ncu_rep(path)  # raises the UserError that says how to get a CSV
    try:
        return read_ncu_rep(path)
    except ReaderUnavailable:
        inst = find_ncu()
        if inst is None:
            raise
        return read_ncu_rep_via_csv(path, inst)


def _tuple_ints(*vals: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(v) for v in vals)
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------- dispatch


def sniff_format(path: str | Path) -> str:
    """``ncu-rep`` or ``csv`` from the file's content (and ``.xz`` suffix), not only its name."""
    p = Path(path)
    if p.suffix == ".xz":
        try:
            with lzma.open(p) as f:
                head = f.read(4)
        except (lzma.LZMAError, EOFError, OSError) as e:
            raise _fail(p, f"cannot decompress: {e}") from None
        return "ncu-rep" if head == REP_MAGIC else "csv"
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _fail(p, f"cannot read: {e.strerror or e}") from None
    return "ncu-rep" if head == REP_MAGIC or (not head and p.suffix in (".ncu-rep", ".ncu-repz")) else "csv"


def _require_file(p: Path) -> int:
    """The size of a regular file ``p``; a FIFO, a device or a folder is refused before it is opened."""
    try:
        return require_regular_file(p, what="a .ncu-rep or CSV file")
    except ReportFormatError:
        raise
    except UserError as e:
        raise ReportFormatError(str(e)) from None


#: A CSV page held as Python lists takes about this many times its size in memory.
CSV_EXPANSION = 12


def read_report(path: str | Path) -> pd.DataFrame:
    """Any supported report file -> the normalized table (base units, one row per kernel launch)."""
    p = Path(path)
    size = _require_file(p)
    fmt = sniff_format(p)
    if fmt == "csv" and p.suffix != ".xz":
        try:
            require_fits_in_memory(p, size, CSV_EXPANSION, "a CSV page")
        except UserError as e:
            raise ReportFormatError(str(e)) from None
    if fmt == "ncu-rep":
        return _read_rep(p)
    if p.suffix == ".xz":
        try:
            text = lzma.open(p, "rt", encoding="utf-8-sig", newline="").read()
        except (lzma.LZMAError, EOFError, OSError, UnicodeDecodeError) as e:
            raise _fail(p, f"cannot decompress: {e}") from None
        if not text.strip():
            raise _fail(p, "the file is empty")
        return read_csv(p, text=text)
    return read_csv(p)


def iter_metric_columns(df: pd.DataFrame) -> Iterable[str]:
    """The metric columns of a normalized table (everything but the identity columns)."""
    return (c for c in df.columns if c not in ID_COLUMNS)
