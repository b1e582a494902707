"""``gpuprobe predict``: the floor and the calibrated time of each op row of a shapes CSV."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gpuprobe.calibration import SHAPE_COLUMNS, class_floor_s, resolve_calibration
from gpuprobe.calibration.model import Calibration
from gpuprobe.calibration.shapes import check_op_class, clean_shape
from gpuprobe.calibration.sources import is_vidur, read_csv, read_vidur
from gpuprobe.errors import UserError
from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num, fmt_text, fmt_time
from gpuprobe.specs.gpus import GPUSpec, get_gpu, normalize_dtype

NO_CALIBRATION = "none (floor)"


def predict_rows(gpu: GPUSpec, dtype: str, shapes: str | Path, calibration: Calibration | None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a shapes CSV with ``floor_s``, ``predicted_s``, ``calibration`` added (input columns kept), and
    the input columns in order. A Vidur profile is expanded to its per-op rows, its measured time kept as
    ``measured_s``."""
    p = Path(shapes)
    df = read_csv(p)
    label = calibration.label if calibration is not None else NO_CALIBRATION
    if is_vidur(df):
        frame = read_vidur(df, dtype)
        cols = ["op", "op_class", *dict.fromkeys(c for cls in SHAPE_COLUMNS.values() for c in cls), "measured_s"]
        rows = []
        for rec in frame.to_dict("records"):
            shape = {c: rec[c] for c in SHAPE_COLUMNS[rec["op_class"]]}
            rows.append({**{c: rec.get(c) for c in cols}, **_times(gpu, dtype, rec["op_class"], shape, calibration),
                         "calibration": label})
        return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows], cols
    if "op" not in df.columns:
        raise UserError(f"{p.name}: no 'op' column; a shapes table has op (gemm, decode_attention, elementwise) and "
                        "the op's shape columns (gemm: m,n,k; decode_attention: batch,context,heads,kv_heads,head_dim; "
                        "elementwise: bytes).")
    rows = []
    for i, rec in enumerate(df.to_dict("records"), start=2):
        op_class = str(rec["op"]).strip()
        try:
            check_op_class(op_class)
        except UserError as e:
            raise UserError(f"{p.name}: line {i}: {e}") from None
        shape = clean_shape(op_class, rec, where=f"{p.name}: line {i}: ")
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}
        rows.append({**clean, **_times(gpu, dtype, op_class, shape, calibration), "calibration": label})
    return rows, list(df.columns)


def _times(gpu: GPUSpec, dtype: str, op_class: str, shape: dict[str, float], cal: Calibration | None) -> dict[str, float]:
    floor = class_floor_s(op_class, shape, gpu, dtype)
    pred = cal.predict(op_class, shape, floor) if cal is not None else floor
    return {"floor_s": floor, "predicted_s": pred}


def _fmt_value(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return fmt_text(x)
    return fmt_int(v) if v == v and v.is_integer() else fmt_num(v)


def columns(inputs: list[str]) -> list[Column]:
    out = [Column(c, c, fmt=fmt_text if c in ("op", "op_class") else _fmt_value,
                  numeric=c not in ("op", "op_class"), name=c == "op") for c in inputs
           if c not in ("floor_s", "predicted_s", "calibration", "measured_s")]
    if "measured_s" in inputs:
        out.append(Column("measured_s", "measured", "meas", "measured time per call", fmt=fmt_time))
    return out + [Column("floor_s", "floor", fmt=fmt_time), Column("predicted_s", "predicted", "pred",
                                                                   "calibrated prediction", fmt=fmt_time),
                  Column("calibration_short", "calibration", "cal", "calibration (in full below)", fmt=fmt_text,
                         numeric=False, raw_key="calibration")]


def run_predict(gpu: str, dtype: str, shapes: str, calibration: str | None, fmt: str | None) -> int:
    spec, d = get_gpu(gpu), normalize_dtype(dtype)
    spec.require_tensor_flops(d)
    cal = resolve_calibration(calibration, spec, d)
    if cal is None:
        why = "--calibration none" if (calibration or "").strip().lower() == "none" else \
            f"gpuprobe ships no calibration for {spec.name} {d}"
        print(f"gpuprobe predict: {why}: predicted_s is the floor (calibrate with `gpuprobe calibrate`)",
              file=sys.stderr)
    elif cal.note:
        print(f"gpuprobe predict: note: {cal.note}", file=sys.stderr)
    rows, inputs = predict_rows(spec, d, shapes, cal)
    short = f"{cal.kernel_source} {cal.gpu}" if cal is not None else "floor"
    for r in rows:
        r["calibration_short"] = short
    notes = [f"calibration: {cal.label}" if cal is not None else "no calibration: predicted = floor",
             "floor: max(flops / tensor peak, bytes / DRAM bandwidth), datasheet roofs of " + spec.display_name]
    emit(columns(inputs), rows, fmt, title=f"gpuprobe predict: {len(rows)} op rows on {spec.name}, {d}", notes=notes)
    return 0
