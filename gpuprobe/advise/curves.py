"""Throughput-against-batch curves: one data structure, and readers for every file that holds one.

A :class:`Curve` is what the batching advisor works on: one :class:`CurvePoint` per measured
batch size (tokens/s, and where known step latency, memory and energy), sorted by batch.
:func:`load_curve` reads

- a CSV with columns ``batch,tokens_per_s`` and optionally ``step_latency_s``, ``memory_bytes``
  (plus any of the throughput columns below);
- a throughput results folder written by ``gpuprobe throughput`` (``throughput.csv``, else
  ``results.jsonl``), columns ``batch, tokens_per_s, step_latency_s`` (p50),
  ``step_latency_p90_s, weights_bytes, kv_cache_bytes, peak_memory_bytes, status, reason, mode,
  attention, context, model, dtype``; rows whose status is not ``ok`` are kept aside as skipped;
- a roofline results folder (``roofline.json``), whose ``throughput`` section holds tokens/s per batch.

Every unreadable or incomplete input raises :class:`~gpuprobe.errors.UserError` with one line
saying what is wrong and what to do.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from gpuprobe.errors import UserError

#: Column names accepted for each field, first match wins (the engine's names first).
_ALIASES: dict[str, tuple[str, ...]] = {
    "batch": ("batch", "batch_size", "max_num_seqs"),
    "tokens_per_s": ("tokens_per_s", "tokens_per_second", "throughput_tokens_per_s", "tok_s"),
    "step_latency_s": ("step_latency_s", "step_latency_p50_s", "latency_s"),
    "step_latency_p90_s": ("step_latency_p90_s",),
    "memory_bytes": ("memory_bytes", "peak_memory_bytes"),
    "weights_bytes": ("weights_bytes",),
    "kv_cache_bytes": ("kv_cache_bytes", "kv_bytes"),
    "joules_per_token": ("joules_per_token",),
    "avg_power_w": ("avg_power_w", "power_w"),
}
_META = ("model", "context", "dtype", "mode", "attention", "gpu")


@dataclass(frozen=True)
class CurvePoint:
    """One measured batch size. Optional figures are ``None`` when the input lacks them."""

    batch: int
    tokens_per_s: float
    step_latency_s: float | None = None
    step_latency_p90_s: float | None = None
    memory_bytes: int | None = None  # peak memory of the run at this batch
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    joules_per_token: float | None = None
    avg_power_w: float | None = None


@dataclass
class Curve:
    """A throughput curve, sorted by batch, with what is known about how it was measured."""

    points: list[CurvePoint]
    source: str = ""
    model: str | None = None
    context: int | None = None
    dtype: str | None = None
    mode: str | None = None
    attention: str | None = None
    gpu: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {batch, status, reason}
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.points:
            raise UserError(f"no usable throughput points in {self.source or 'the input'}; "
                            "it needs at least one row with a batch and a positive tokens_per_s.")
        self.points = sorted(self.points, key=lambda p: p.batch)
        batches = [p.batch for p in self.points]
        dup = sorted({b for b in batches if batches.count(b) > 1})
        if dup:
            raise UserError(f"batch {dup[0]} appears more than once in {self.source or 'the input'}; "
                            "give one row per batch size (average repeated runs first).")

    @property
    def batches(self) -> list[int]:
        return [p.batch for p in self.points]

    @property
    def tokens_per_s(self) -> list[float]:
        return [p.tokens_per_s for p in self.points]

    def has(self, name: str) -> bool:
        """True when every point carries the figure ``name``."""
        return all(getattr(p, name) is not None for p in self.points)

    def latencies(self) -> tuple[list[float], str]:
        """Step latency per point and where it came from: ``measured``, or ``derived`` as batch / tokens_per_s.

        A decode step makes one token per sequence, so for a decode loop latency = batch / tokens/s.
        """
        if self.has("step_latency_s"):
            return [float(p.step_latency_s) for p in self.points], "measured"  # type: ignore[arg-type]
        return [p.batch / p.tokens_per_s for p in self.points], "derived"

    def point(self, batch: int) -> CurvePoint:
        for p in self.points:
            if p.batch == batch:
                return p
        raise KeyError(batch)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["points"] = [asdict(p) for p in self.points]
        return d


def curve_from_rows(rows: Iterable[Mapping[str, Any]], source: str = "", **meta: Any) -> Curve:
    """A :class:`Curve` from dict rows (CSV rows, JSON records) using the accepted column names.

    Rows with a ``status`` other than ``ok`` (out of memory, failed) are recorded in ``skipped``.
    """
    points: list[CurvePoint] = []
    skipped: list[dict[str, Any]] = []
    found_meta: dict[str, Any] = {}
    for n, row in enumerate(rows, start=1):
        row = {str(k).strip(): v for k, v in row.items() if k is not None}
        status = str(row.get("status") or "ok").strip().lower()
        batch = _number(row, "batch", n, source, integer=True)
        for key in _META:
            if found_meta.get(key) is None and _present(row.get(key)):
                found_meta[key] = row[key]
        device = row.get("device")  # the throughput sweep names the GPU in its device column
        if found_meta.get("gpu") is None and _present(device) and str(device).lower() not in ("cpu", "cuda", "meta"):
            found_meta["gpu"] = device
        if status != "ok":
            skipped.append({"batch": batch, "status": status, "reason": row.get("reason") or None})
            continue
        if batch is None:
            raise UserError(f"{source}: row {n} has no batch; every row needs 'batch' (a positive integer).")
        tps = _number(row, "tokens_per_s", n, source)
        if tps is None or not tps > 0:
            raise UserError(f"{source}: row {n} (batch {batch}) has no positive tokens_per_s; "
                            "remove the row or mark it with a status other than ok.")
        fields: dict[str, Any] = {}
        for name in ("step_latency_s", "step_latency_p90_s", "joules_per_token", "avg_power_w"):
            fields[name] = _number(row, name, n, source)
        for name in ("memory_bytes", "weights_bytes", "kv_cache_bytes"):
            fields[name] = _number(row, name, n, source, integer=True)
        points.append(CurvePoint(batch=batch, tokens_per_s=tps, **fields))
    merged = {k: found_meta.get(k) for k in _META}
    merged.update({k: v for k, v in meta.items() if v is not None})
    if merged.get("context") is not None:
        try:
            merged["context"] = int(float(merged["context"]))
        except (TypeError, ValueError):
            merged["context"] = None
    if not points and skipped:
        failed = ", ".join(f"{s['batch']}: {s['status']}" for s in skipped)
        raise UserError(f"{source}: every batch failed ({failed}); nothing to advise on.")
    return Curve(points=points, source=source, skipped=skipped, **merged)


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, str) and not v.strip()) and not (
        isinstance(v, float) and math.isnan(v))


def _number(row: Mapping[str, Any], name: str, n: int, source: str, integer: bool = False):
    for key in _ALIASES[name]:
        if key in row and _present(row[key]):
            raw = row[key]
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise UserError(f"{source}: row {n}, column '{key}': '{raw}' is not a number.") from None
            if math.isnan(value) or math.isinf(value) or value < 0:
                raise UserError(f"{source}: row {n}, column '{key}': {raw} must be a finite, non-negative number.")
            if integer:
                if value != int(value) or (name == "batch" and value <= 0):
                    raise UserError(f"{source}: row {n}, column '{key}': {raw} must be a positive integer.")
                return int(value)
            return value
    return None


# --------------------------------------------------------------------------- readers


def read_csv_curve(path: Path, **meta: Any) -> Curve:
    """A CSV with a header naming at least ``batch`` and ``tokens_per_s``."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read '{path}' as CSV: {e}.") from None
    missing = [n for n in ("batch", "tokens_per_s") if not any(a in header for a in _ALIASES[n])]
    if missing:
        raise UserError(f"'{path}' lacks column(s) {', '.join(missing)} (header: {','.join(header) or 'none'}); "
                        "the CSV needs batch,tokens_per_s and optionally step_latency_s,memory_bytes.")
    return curve_from_rows(rows, source=str(path), **meta)


def read_results_jsonl(path: Path, **meta: Any) -> Curve:
    """A sweep's ``results.jsonl``: ``{"point", "status", "reason", "result"}`` per line (last line may be cut)."""
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read '{path}': {e}.") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a run cut short mid-write: the finished points still count
                continue
            raise UserError(f"'{path}' line {i + 1} is not JSON; the results file is damaged.") from None
        if not isinstance(rec, dict):
            raise UserError(f"'{path}' line {i + 1} is not a JSON object.")
        for part in ("point", "result"):
            if rec.get(part) is not None and not isinstance(rec[part], dict):
                raise UserError(f"'{path}' line {i + 1}: '{part}' must be an object of named values, got "
                                f"{json.dumps(rec[part])[:40]}; is this a gpuprobe results.jsonl?")
        row: dict[str, Any] = {}
        row.update(rec.get("point") or {})
        row.update(rec.get("result") or {})
        if "result" not in rec and "point" not in rec:
            row.update(rec)  # a flat record
        row["status"] = rec.get("status", row.get("status", "ok"))
        row["reason"] = rec.get("reason", row.get("reason"))
        rows.append(row)
    if not rows:
        raise UserError(f"'{path}' holds no finished points.")
    return curve_from_rows(rows, source=str(path), **meta)


def read_roofline_json(path: Path, **meta: Any) -> Curve:
    """``roofline.json``: tokens/s per batch from its ``throughput`` section (a list of records or a
    mapping batch -> record or batch -> tokens/s)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read '{path}' as JSON: {e}.") from None
    if not isinstance(doc, dict):
        raise UserError(f"'{path}' is not a roofline.json object.")
    section = doc.get("throughput")
    rows: list[dict[str, Any]] = []
    if isinstance(section, list):
        rows = [dict(r) for r in section if isinstance(r, dict)]
    elif isinstance(section, dict):
        for b, v in section.items():
            rows.append({"batch": b, **v} if isinstance(v, dict) else {"batch": b, "tokens_per_s": v})
    if not rows:  # points may carry tokens/s themselves
        seen: dict[Any, dict[str, Any]] = {}
        for p in doc.get("points") or []:
            if isinstance(p, dict) and p.get("tokens_per_s") is not None and p.get("batch") is not None:
                seen.setdefault(p["batch"], {"batch": p["batch"], "tokens_per_s": p["tokens_per_s"]})
        rows = list(seen.values())
    if not rows:
        batches = sorted({p.get("batch") for p in doc.get("points") or [] if isinstance(p, dict)} - {None})
        which = f" for batches {','.join(map(str, batches))}" if batches else ""
        raise UserError(f"'{path}' has no throughput section (tokens/s per batch){which}; "
                        "measure it with `gpuprobe throughput` and pass that folder, or pass --from a CSV.")
    base = {k: doc.get(k) for k in ("model", "context", "dtype", "mode", "gpu")}
    base.update({k: v for k, v in meta.items() if v is not None})
    return curve_from_rows(rows, source=str(path), **base)


def load_curve(path: str | Path, **meta: Any) -> Curve:
    """Read a curve from a CSV file, a JSONL/JSON results file, or a throughput/roofline results folder."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"'{p}' does not exist; pass --from a CSV (batch,tokens_per_s,...) or a results folder.")
    if p.is_dir():
        # A roofline folder's results.jsonl holds roofline points, not a throughput curve: its
        # roofline.json (throughput section) comes before any results.jsonl.
        for name, reader in (("throughput.csv", read_csv_curve), ("roofline.json", read_roofline_json),
                             ("results.jsonl", read_results_jsonl)):
            if (p / name).is_file():
                return reader(p / name, **meta)
        raise UserError(f"folder '{p}' holds none of throughput.csv, results.jsonl, roofline.json; "
                        "pass the folder `gpuprobe throughput` or `gpuprobe roofline` wrote, or a CSV file.")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return read_results_jsonl(p, **meta)
    if suffix == ".json":
        return read_roofline_json(p, **meta)
    return read_csv_curve(p, **meta)


def with_meta(curve: Curve, **meta: Any) -> Curve:
    """A copy of ``curve`` with the given metadata filled in where it was unknown."""
    fill = {k: v for k, v in meta.items() if v is not None and getattr(curve, k) is None}
    return replace(curve, **fill)
