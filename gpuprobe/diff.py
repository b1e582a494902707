"""Two reports side by side, per op or per kernel: time, DRAM bytes, achieved bandwidth, their ratios.

Each side is a per-op or per-kernel table (:func:`side_table`) read from an Nsight Compute report
(anything :func:`gpuprobe.reports.load_report` reads) or from a ``roofline.json`` (any mode; one batch).
:func:`compare` joins the two on the op name or the kernel key (short name + template signature, so
two GEMMs of different tiles stay two rows); a row present on one side only says so. Ratios are
B / A; ``time_change_pct`` is how much slower B is (negative: faster). Missing values stay missing:
a ratio with a missing or zero side is missing, never 0 or infinite.

:func:`slower_than` is the regression gate of ``gpuprobe diff --fail-if-slower PCT``: the total, or
any row present on both sides, slower by more than PCT percent.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.paths import require_regular_file
from gpuprobe.reports import load_report
from gpuprobe.roofline.schema import RooflineResult

#: Columns of a side table (one row per op or kernel key).
SIDE_COLUMNS = ("key", "op", "n_kernels", "layers_profiled", "time_s", "dram_bytes", "dram_read_bytes",
                "dram_write_bytes", "flops")
#: Largest roofline.json read (bytes).
MAX_JSON_BYTES = 256 << 20
SUMMED = ("time_s", "dram_bytes", "dram_read_bytes", "dram_write_bytes", "flops")


def _strict_sum(s: pd.Series) -> float:
    """Sum, NaN when any part is missing (a partial sum would understate)."""
    s = pd.to_numeric(s, errors="coerce")
    return math.nan if s.isna().any() or not len(s) else float(s.sum())


@dataclass
class Side:
    """One side of a comparison: its table and where it came from."""

    source: str
    by: str
    table: pd.DataFrame
    gpu: str | None = None
    notes: list[str] = field(default_factory=list)
    kind: str | None = None  # what measured it: "ncu", "nsys", or "roofline.json (mode M)"
    model: str | None = None


def _is_roofline_json(path: Path) -> bool:
    if path.suffix == ".json":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"{"
    except OSError:
        return False


def _group_kernels(kernels: pd.DataFrame, key: str) -> pd.DataFrame:
    rows = []
    for k, g in kernels.groupby(key, sort=False, dropna=False):
        row: dict[str, Any] = {"key": k, "op": ", ".join(dict.fromkeys(str(o) for o in g["op"])),
                               "n_kernels": len(g), "layers_profiled": None}
        for c in SUMMED:
            row[c] = _strict_sum(g[c]) if c in g.columns else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SIDE_COLUMNS))


def _from_report(path: Path, by: str, rules: str | None) -> Side:
    from gpuprobe.ncu.counter_roofline import kernel_table, op_table

    df = load_report(path, rules=rules)
    kernels = kernel_table(df)
    notes = list(df.attrs.get("warnings", []))
    if by == "kernel":
        table = _group_kernels(kernels, "kernel_key")
    else:
        ops = op_table(kernels)
        table = ops.assign(key=ops["op"])[list(SIDE_COLUMNS)]
    fmt = str(df.attrs.get("format") or "")
    kind = "nsys" if fmt.startswith("nsys") else "ncu"
    return Side(str(path), by, table, df.attrs.get("device_name"), notes, kind=kind)


def _from_roofline(path: Path, by: str, batch: int | None) -> Side:
    try:
        res = RooflineResult.from_json(path)
    except RecursionError:
        raise UserError(f"'{path}': JSON nested too deeply to be a roofline.json; give the file "
                        "`gpuprobe roofline --json` or `gpuprobe report --json` wrote") from None
    batches = sorted({p.batch for p in res.points if p.batch is not None})
    if batch is not None:
        points = [p for p in res.points if p.batch == batch]
        if not points:
            raise UserError(f"'{path}' holds no point at batch {batch} (its batches: "
                            f"{', '.join(map(str, batches)) or 'none'})")
    elif len(batches) > 1:
        raise UserError(f"'{path}' holds {len(batches)} batches ({', '.join(map(str, batches))}); "
                        "pick one with --batch B")
    else:
        points = list(res.points)
    if by == "kernel":
        kernels = [dict(k, op=k.get("op", p.op)) for p in points for k in (p.kernels or [])]
        if not kernels:
            raise UserError(f"'{path}' holds no per-kernel records (only `gpuprobe report --json` of a "
                            "report, mode ncu, has them); compare it --by op")
        kdf = pd.DataFrame(kernels)
        key = "kernel_key" if "kernel_key" in kdf.columns else "kernel_short"
        for c in SUMMED:
            if c not in kdf.columns:
                kdf[c] = math.nan
        table = _group_kernels(kdf, key)
    else:
        rows = []
        for p in points:
            rows.append({"key": p.op, "op": p.op, "n_kernels": p.n_kernels, "layers_profiled": p.layers_profiled,
                         "time_s": p.time_s, "dram_bytes": p.dram_bytes, "dram_read_bytes": p.dram_read_bytes,
                         "dram_write_bytes": p.dram_write_bytes, "flops": p.flops})
        table = pd.DataFrame(rows, columns=list(SIDE_COLUMNS))
        if table["key"].duplicated().any():
            raise UserError(f"'{path}' holds one op twice; give a roofline.json of one batch")
    mode = getattr(res, "mode", None)
    kind = {"ncu": "ncu", "nsys": "nsys"}.get(str(mode), f"roofline.json (mode {mode})")
    return Side(str(path), by, table, res.gpu, kind=kind, model=getattr(res, "model", None))


def side_table(path: str | Path, by: str = "op", rules: str | None = None, batch: int | None = None) -> Side:
    """A report or a ``roofline.json`` -> its per-op (``by="op"``) or per-kernel table."""
    if by not in ("op", "kernel"):
        raise UserError(f"--by must be 'op' or 'kernel', got '{by}'")

    p = Path(path)
    size = require_regular_file(p, what="a report or a roofline.json")
    if _is_roofline_json(p):
        if size > MAX_JSON_BYTES:
            raise UserError(f"'{p}' is {size >> 20} MiB: too big for a roofline.json")
        return _from_roofline(p, by, batch)
    return _from_report(p, by, rules)


def _ratio(b: Any, a: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
        return None
    return b / a


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _bw(nbytes: Any, t: Any) -> float | None:
    nbytes, t = _num(nbytes), _num(t)
    return nbytes / t if nbytes is not None and t else None


def _row(key: str, a: dict | None, b: dict | None) -> dict[str, Any]:
    a, b = a or {}, b or {}
    row: dict[str, Any] = {"key": key, "op": b.get("op") or a.get("op"),
                           "only": None if (a and b) else ("A" if a else "B"),
                           "n_a": a.get("n_kernels"), "n_b": b.get("n_kernels")}
    for c, short in (("time_s", "time"), ("dram_bytes", "dram"), ("flops", "flops")):
        row[f"{short}_a"], row[f"{short}_b"] = _num(a.get(c)), _num(b.get(c))
        row[f"{short}_ratio"] = _ratio(row[f"{short}_b"], row[f"{short}_a"])
    row["bw_a"], row["bw_b"] = _bw(a.get("dram_bytes"), a.get("time_s")), _bw(b.get("dram_bytes"), b.get("time_s"))
    row["bw_ratio"] = _ratio(row["bw_b"], row["bw_a"])
    row["time_change_pct"] = (row["time_ratio"] - 1.0) * 100.0 if row["time_ratio"] is not None else None
    return row


@dataclass
class Diff:
    """The comparison: one row per key (in A's order, then B's new keys) and the totals."""

    a: Side
    b: Side
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.source, "b": self.b.source, "by": self.a.by, "gpu_a": self.a.gpu, "gpu_b": self.b.gpu,
                "source_a": self.a.kind, "source_b": self.b.kind, "model_a": self.a.model, "model_b": self.b.model,
                "rows": self.rows, "total": self.total, "warnings": list(self.warnings)}


def _norm(name: str | None) -> str:
    return " ".join(str(name or "").lower().replace("nvidia", "").split())


def mismatches(a: Side, b: Side) -> list[str]:
    """What makes the two sides not like for like: how they were measured, the GPU, the model."""
    out = []
    if a.kind and b.kind and a.kind != b.kind:
        out.append(f"A is {a.kind}, B is {b.kind}: the sides were measured differently (an ncu report replays "
                   "each kernel with counters; an nsys trace times the real run), so ratios mix methods")
    if a.gpu and b.gpu and _norm(a.gpu) != _norm(b.gpu):
        out.append(f"A ran on {a.gpu}, B on {b.gpu}: different GPUs")
    if a.model and b.model and a.model != b.model:
        out.append(f"A is model {a.model}, B is model {b.model}: different models")
    return out


def compare(a: Side, b: Side) -> Diff:
    """Join two side tables on their key; totals over every row of each side (missing if any is)."""
    ra = {r["key"]: r for r in a.table.to_dict("records")}
    rb = {r["key"]: r for r in b.table.to_dict("records")}
    keys = list(ra) + [k for k in rb if k not in ra]
    rows = [_row(k, ra.get(k), rb.get(k)) for k in keys]
    tot_a = {c: _strict_sum(a.table[c]) for c in SUMMED}
    tot_b = {c: _strict_sum(b.table[c]) for c in SUMMED}
    tot_a["n_kernels"] = int(pd.to_numeric(a.table["n_kernels"], errors="coerce").fillna(0).sum())
    tot_b["n_kernels"] = int(pd.to_numeric(b.table["n_kernels"], errors="coerce").fillna(0).sum())
    total = _row("total", tot_a, tot_b)
    total["op"] = None
    return Diff(a, b, rows, total, mismatches(a, b))


def slower_than(diff: Diff, pct: float) -> list[tuple[str, float]]:
    """(key, % slower) of the total and of each row on both sides slower by more than ``pct``."""
    out = []
    for r in [diff.total] + diff.rows:
        ch = r.get("time_change_pct")
        if r.get("only") is None and ch is not None and ch > pct:
            out.append((r["key"], ch))
    return out


def diff_json(diff: Diff, fail_if_slower: float | None = None) -> str:
    """Strict JSON of a comparison (missing values null), with the gate's verdict when one was asked."""
    d = diff.to_dict()
    if fail_if_slower is not None:
        d["fail_if_slower_pct"] = fail_if_slower
        d["slower"] = [{"key": k, "time_change_pct": v} for k, v in slower_than(diff, fail_if_slower)]
    return json.dumps(d, indent=2, allow_nan=False, default=lambda o: o.item() if hasattr(o, "item") else str(o))
