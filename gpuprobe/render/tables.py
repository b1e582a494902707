"""Terminal tables: tables that fit the terminal, plain text when piped, and the analytic roofline grid.

:func:`emit` prints one table of :class:`Column` over row dicts in the format asked for:

* ``table`` (the default on a terminal): fitted to the terminal's width (``COLUMNS`` honoured). Full
  headers when they fit, else abbreviated headers and a legend; names are the only cells ever
  shortened (with ``…`` in the middle); numbers are never cut: when the value columns do not fit beside
  the names, the table is printed in several blocks, each repeating the name columns.
* ``tsv`` (the default when stdout is not a terminal), ``csv`` and ``json``: the machine formats. Each
  column is named by its :attr:`Column.machine_name`, which carries its unit (``time_s``,
  ``dram_read_bytes``, ``intensity_flop_per_byte``), and holds the raw value in that unit: tab-separated
  or comma-separated with one header line and missing values empty (ready for ``cut``, ``sort -g`` and
  pandas), or a list of objects (missing values ``null``; strict JSON through :func:`gpuprobe.jsonsafe.dumps`).
"""
from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TextIO

from gpuprobe.jsonsafe import dumps
from gpuprobe.ops import OPS
from gpuprobe.roofline.schema import RooflineResult

FORMATS = ("table", "tsv", "csv", "json")
MISSING = "-"
_GAP = "  "


def is_missing(x: Any) -> bool:
    """None, NaN, pandas' NA or an infinite float: a value that is not there."""
    if x is None:
        return True
    try:
        if x != x:  # NaN and pandas.NA-like values
            return True
    except (TypeError, ValueError):
        return True
    return isinstance(x, float) and math.isinf(x)


def fmt_num(x: Any, scale: float = 1.0) -> str:
    """``x / scale`` with about four significant digits and no exponent for ordinary magnitudes;
    ``-`` when missing. Large values keep every integer digit (``141,234``): numbers are never cut."""
    if is_missing(x):
        return MISSING
    v = float(x) / scale
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    if a >= 1:
        return f"{v:.3f}"
    if a >= 1e-3:
        t = f"{v:.4f}"
        return f"{v:.3f}" if abs(float(t)) >= 1 else t.rstrip("0")
    return f"{v:.3g}"


def fmt_int(x: Any) -> str:
    """A count: ``-`` when missing, else the integer with thousands separators."""
    if is_missing(x):
        return MISSING
    return f"{int(round(float(x))):,}"


def fmt_text(x: Any) -> str:
    return MISSING if is_missing(x) or x == "" else str(x)


@dataclass(frozen=True)
class Column:
    """One column: where its value comes from, its headers, and how its cells are written."""

    key: str  # key of the row dicts
    header: str  # full header (tsv, csv, wide terminals)
    short: str = ""  # abbreviated header for narrow terminals ("" = the full one)
    legend: str = ""  # what the abbreviation means
    fmt: Callable[[Any], str] = fmt_text
    numeric: bool = True  # right-aligned, never cut
    name: bool = False  # a name column: repeated in each block, may be shortened with an ellipsis
    cut: str = "end"  # where a name loses characters: "end" (kernel names) or "middle" (names with telling ends)
    raw_key: str | None = None  # row key of the raw value the machine formats write (default: ``key``)
    field: str | None = None  # the machine formats' column name, with its unit (default: the raw key)

    def head(self, abbreviated: bool) -> str:
        return (self.short or self.header) if abbreviated else self.header

    @property
    def machine_name(self) -> str:
        """The column's name in tsv, csv and json: the raw value's key, which names its unit."""
        return self.field or self.raw_key or self.key


def terminal_width(default: int = 100) -> int:
    return shutil.get_terminal_size((default, 24)).columns


def _ellipsize(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    keep = width - 1
    left = (keep + 1) // 2
    return text[:left] + "…" + text[len(text) - (keep - left):]


def _cut(text: str, width: int) -> str:
    """A name shortened at its end (its start says what it is): ``nvjet_sm90_tst_64x8…``."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _line(cells: Sequence[str], widths: Sequence[int], numeric: Sequence[bool]) -> str:
    parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
    return _GAP.join(parts).rstrip()


def render_text(columns: Sequence[Column], rows: Sequence[dict], width: int, title: str | None = None,
                notes: Iterable[str] = ()) -> str:
    """The table as text no wider than ``width`` (see the module docstring for how it fits)."""
    cells = [[c.fmt(r.get(c.key)) for c in columns] for r in rows]
    out: list[str] = []
    if title:
        out += textwrap.wrap(title, width) or [title]

    def widths(abbreviated: bool) -> list[int]:
        return [max([len(c.head(abbreviated))] + [len(row[j]) for row in cells]) for j, c in enumerate(columns)]

    def total(ws: Sequence[int]) -> int:
        return sum(ws) + len(_GAP) * (len(ws) - 1)

    abbreviated = total(widths(False)) > width
    ws = widths(abbreviated)
    name_idx = [j for j, c in enumerate(columns) if c.name]
    value_idx = [j for j, c in enumerate(columns) if not c.name]
    # names give way first: to what lets the values fit in one block, never below their floor; when the
    # values need several blocks anyway, names keep up to 40% of the width
    values_w = total([ws[j] for j in value_idx]) + (len(_GAP) if name_idx and value_idx else 0)
    for j in name_idx:
        floor = max(min(24, ws[j]), len(columns[j].head(abbreviated)))
        room = width - values_w - (total([ws[k] for k in name_idx]) - ws[j])
        if room >= ws[j]:
            continue
        ws[j] = max(floor, room if room >= floor else min(ws[j], int(width * 0.4)))
    names_w = total([ws[j] for j in name_idx]) + (len(_GAP) if name_idx else 0)
    blocks: list[list[int]] = []
    cur: list[int] = []
    used = names_w
    for j in value_idx:
        need = ws[j] + (len(_GAP) if cur else 0)
        if cur and used + need > width:
            blocks.append(cur)
            cur, used = [], names_w
            need = ws[j]
        cur.append(j)
        used += need
    if cur or not blocks:
        blocks.append(cur)
    for b, block in enumerate(blocks):
        idx = name_idx + block
        bw = [ws[j] for j in idx]
        num = [columns[j].numeric for j in idx]
        if b:
            out.append("")
        out.append(_line([_ellipsize(columns[j].head(abbreviated), ws[j]) for j in idx], bw, num))
        out.append(_line(["-" * w for w in bw], bw, num))
        for row in cells:
            out.append(_line([(_ellipsize if columns[j].cut == "middle" else _cut)(row[j], ws[j])
                              if columns[j].name else row[j] for j in idx], bw, num))
    if abbreviated:
        legend = "; ".join(f"{c.short} = {c.legend or c.header}" for c in columns if c.short and c.short != c.header)
        if legend:
            out += textwrap.wrap(legend, width, subsequent_indent="  ")
    for n in notes:
        out += textwrap.wrap(n, width, subsequent_indent="  ") or [""]
    return "\n".join(out) + "\n"


def _raw(c: Column, r: dict) -> Any:
    v = r.get(c.raw_key or c.key)
    if is_missing(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    return v


def _cell(v: Any, sep: str) -> str:
    if v is None:
        return ""
    text = repr(v) if isinstance(v, float) else str(v)
    return text.replace(sep, " ").replace("\n", " ") if sep == "\t" else text


def render_tsv(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    lines = ["\t".join(c.machine_name for c in columns)]
    for r in rows:
        lines.append("\t".join(_cell(_raw(c, r), "\t") for c in columns))
    return "\n".join(lines) + "\n"


def render_csv(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.machine_name for c in columns])
    for r in rows:
        w.writerow([_cell(_raw(c, r), ",") for c in columns])
    return buf.getvalue()


def render_json(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    return dumps([{c.machine_name: _raw(c, r) for c in columns} for r in rows], indent=2) + "\n"


def render_markdown(columns: Sequence[Column], rows: Sequence[dict], title: str | None = None) -> str:
    """A Markdown table (for docs/PERFORMANCE.md): the display headers and cells, a bold title above."""
    out = [f"**{title}**", ""] if title else []
    out.append("| " + " | ".join(c.header for c in columns) + " |")
    out.append("|" + "---|" * len(columns))
    out += ["| " + " | ".join(c.fmt(r.get(c.key)).replace("|", "/") for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def spec_columns(columns: Sequence[tuple[str, str, str]]) -> list[Column]:
    """Columns from ``(key, header, format spec)`` triples (the benchmarks' row tables)."""
    def cell(spec: str) -> Callable[[Any], str]:
        return lambda v: MISSING if is_missing(v) else (format(v, spec) if spec else str(v))

    return [Column(key, header, fmt=cell(spec), numeric=bool(spec) or key != "op") for key, header, spec in columns]


def choose_format(fmt: str | None, stream: TextIO | None = None) -> str:
    """``fmt`` when given, else ``table`` on a terminal and ``tsv`` when piped."""
    if fmt:
        return fmt
    stream = stream or sys.stdout
    return "table" if getattr(stream, "isatty", lambda: False)() else "tsv"


def emit(columns: Sequence[Column], rows: Sequence[dict], fmt: str | None = None, title: str | None = None,
         notes: Iterable[str] = (), stream: TextIO | None = None, width: int | None = None) -> None:
    """Print a table in ``fmt`` (see :data:`FORMATS`; default by :func:`choose_format`).

    Title and notes go with the ``table`` format; the machine formats carry the rows only; ``markdown``
    (for the benchmarks' tables in docs/PERFORMANCE.md) has the title and the display cells."""
    stream = stream or sys.stdout
    fmt = choose_format(fmt, stream)
    if fmt == "table":
        stream.write(render_text(columns, rows, width or terminal_width(), title, notes))
    elif fmt == "tsv":
        stream.write(render_tsv(columns, rows))
    elif fmt == "csv":
        stream.write(render_csv(columns, rows))
    elif fmt == "json":
        stream.write(render_json(columns, rows))
    elif fmt == "markdown":
        stream.write(render_markdown(columns, rows, title))
    else:
        raise ValueError(f"unknown table format {fmt!r}")


# ---------------------------------------------------------------- the analytic roofline grid


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def _op_order(op: str) -> tuple[int, str]:
    return (OPS.index(op), op) if op in OPS else (len(OPS), op)


def _is_calibrated(result: RooflineResult) -> bool:
    return any(p.predicted_s is not None for p in result.points)


def roofline_grid(result: RooflineResult) -> tuple[list[Column], list[dict]]:
    """The roofline as a table: one row per op (then the step's total and tokens/s), one column per batch,
    each cell the op's time in one step and its bound (``M`` memory, ``C`` compute, ``-`` unknown) and,
    where measured, the first letter of its limiter. A calibrated prediction shows its floor beside it in
    brackets (same unit), and the step and tokens/s rows get their floor rows."""
    by_op = result.points_by_op()
    batches = sorted({p.batch for p in result.points if p.batch is not None})
    fits = (result.extra.get("memory") or {}).get("max_batch_that_fits")
    calibrated = _is_calibrated(result)
    cols = [Column("op", "op", fmt=fmt_text, numeric=False, name=True, cut="middle")]
    for b in batches:
        mark = "*" if fits is not None and b > fits else ""
        cols.append(Column(f"b{b}", f"B={b}{mark}", fmt=fmt_text, raw_key=f"b{b}_time_s"))
    rows: list[dict] = []
    for op in sorted(by_op, key=_op_order):
        row: dict = {"op": op}
        for p in by_op[op]:
            if p.batch is None:
                continue
            tag = {"memory": "M", "compute": "C"}.get(p.bound or "", "-")
            lim = p.limiter[0] if p.limiter else ""
            floor = f" [{_in_unit_of(p.floor_s, p.time_s)}]" if calibrated and p.predicted_s is not None else ""
            row[f"b{p.batch}"] = f"{fmt_time(p.time_s)}{floor} {tag}{lim}"
            row[f"b{p.batch}_time_s"] = p.time_s
        rows.append(row)
    mark = {b: "*" if fits is not None and b > fits else "" for b in batches}

    def totals(label: str, key: str) -> tuple[dict, dict]:
        step, rate = {"op": label[0]}, {"op": label[1]}
        for b in batches:
            ts = [getattr(p, key) for p in result.points if p.batch == b]
            total = sum(ts) if ts and all(t is not None for t in ts) else None
            step[f"b{b}"], step[f"b{b}_time_s"] = fmt_time(total), total
            tps = b / total if total else None
            rate[f"b{b}"] = "-" if tps is None else f"{tps:,.0f}" + mark[b]
            rate[f"b{b}_time_s"] = tps
        return step, rate

    rows += list(totals(("step", "tokens/s"), "time_s"))
    if calibrated:
        rows += list(totals(("step floor", "tokens/s floor"), "floor_s"))
    return cols, rows


def _in_unit_of(x: float | None, like: float | None) -> str:
    """``x`` in the unit :func:`fmt_time` writes ``like`` in, without the unit (``3.8`` beside ``296.0 µs``)."""
    if x is None:
        return "-"
    scale = 1e-3 if like is not None and like >= 1e-3 else 1e-6
    v = x / scale
    return "<0.01" if 0 < v < 0.01 else f"{v:.3g}"


def intensity_grid(result: RooflineResult) -> tuple[list[Column], list[dict]]:
    """Arithmetic intensity (FLOP per DRAM byte) per op and batch."""
    batches = sorted({p.batch for p in result.points if p.batch is not None})
    cols = [Column("op", "op", fmt=fmt_text, numeric=False, name=True, cut="middle")]
    cols += [Column(f"b{b}", f"B={b}", fmt=lambda x: fmt_num(x)) for b in batches]
    rows = []
    for op, pts in sorted(result.points_by_op().items(), key=lambda kv: _op_order(kv[0])):
        rows.append({"op": op, **{f"b{p.batch}": p.intensity for p in pts if p.batch is not None}})
    return cols, rows


#: The machine formats' columns of a roofline: one row per op and batch, each name with its unit.
POINT_COLUMNS = (
    Column("op", "op", numeric=False), Column("batch", "batch"), Column("time_s", "time_s"),
    Column("floor_s", "floor_s"), Column("time_source", "time_source", numeric=False),
    Column("flops", "flops"), Column("dram_bytes", "dram_bytes"),
    Column("dram_read_bytes", "dram_read_bytes"), Column("dram_write_bytes", "dram_write_bytes"),
    Column("intensity", "intensity_flop_per_byte", field="intensity_flop_per_byte"),
    Column("bound", "bound", numeric=False), Column("limiter", "limiter", numeric=False),
    Column("dram_pct_of_measured", "dram_pct_of_measured"), Column("sm_pct", "sm_pct"),
    Column("tensor_pct", "tensor_pct"), Column("n_kernels", "n_kernels"),
)


def point_rows(result: RooflineResult) -> list[dict]:
    """The result's points as rows of :data:`POINT_COLUMNS`, in op order then batch."""
    pts = sorted(result.points, key=lambda p: (_op_order(p.op), p.batch if p.batch is not None else -1))
    return [p.to_dict() for p in pts]


def print_roofline_table(result: RooflineResult, footer: str | None = None, fmt: str | None = None,
                         stream: TextIO | None = None, width: int | None = None) -> None:
    """The roofline of one model: times and bounds per op and batch, then intensities (``table`` format),
    fitted to the terminal; ``tsv``/``csv``/``json`` print one row per op and batch (:data:`POINT_COLUMNS`)."""
    stream = stream or sys.stdout
    fmt = choose_format(fmt, stream)
    cols, rows = roofline_grid(result)
    fits = (result.extra.get("memory") or {}).get("max_batch_that_fits")
    notes = ["each cell: the op's time in one decode step (summed over layers) and its bound: M memory, "
             "C compute (intensity against the ridge); a third letter is the measured limiter "
             "(m memory, c compute, l latency)"]
    c = result.ceilings
    if c is not None:
        notes.append(f"ridge {c.ridge:.0f} FLOP/B: {c.dram_source} DRAM {c.dram_bytes_per_s / 1e12:.2f} TB/s, "
                     f"{c.compute_roof} {c.flops_per_s / 1e12:.0f} TFLOP/s")
    if fits is not None and any(p.batch and p.batch > fits for p in result.points):
        notes.append(f"* the KV cache does not fit in memory beyond batch {fits}: a prediction only")
    cal = result.extra.get("calibration")
    if cal and _is_calibrated(result):
        errs = ", ".join(f"{k} {'-' if v is None else f'{100 * v:.1f}%'}"
                         for k, v in (cal.get("heldout_median_abs_err") or {}).items())
        notes.append(f"times predicted by the calibration {cal.get('label')} (held-out median |error|: {errs}); "
                     "[x] = the floor, max(FLOPs / compute roof, bytes / DRAM roof), in the same unit; "
                     "--calibration none prints the floor alone (docs/prediction.md)")
    if footer:
        notes.append(footer)
    title = f"{result.model} on {result.gpu} ({result.mode})"
    if fmt != "table":
        emit(POINT_COLUMNS, point_rows(result), fmt, stream=stream)
        return
    emit(cols, rows, "table", title=title, notes=notes, stream=stream, width=width)
    icols, irows = intensity_grid(result)
    stream.write("\n")
    emit(icols, irows, "table", title="intensity, FLOP per DRAM byte", stream=stream, width=width)
