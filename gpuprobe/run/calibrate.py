"""``gpuprobe calibrate``: fit a calibration to a measured per-op source, report its held-out error, write it."""
from __future__ import annotations

import sys

from gpuprobe.calibration import calibrate_source, save_calibration
from gpuprobe.calibration.fit import DEFAULT_HOLDOUT
from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num, fmt_text


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


COLUMNS = [
    Column("op_class", "class", fmt=fmt_text, numeric=False, name=True),
    Column("rows", "rows", fmt=fmt_int), Column("heldout_shapes", "held-out shapes", "shapes", "held-out shapes",
                                                fmt=fmt_int),
    Column("heldout_rows", "held-out rows", "hrows", "held-out rows", fmt=fmt_int),
    Column("median_abs_err", "median |err|", "med", "median |error| of the prediction", fmt=_pct),
    Column("mean_abs_err", "mean |err|", "mean", "mean |error| of the prediction", fmt=_pct),
    Column("p90_abs_err", "p90 |err|", "p90", "90th percentile |error| of the prediction", fmt=_pct),
    Column("floor_median_abs_err", "floor median", "fmed", "the bare floor's median |error|", fmt=_pct),
    Column("floor_mean_abs_err", "floor mean", "fmean", "the bare floor's mean |error|", fmt=_pct),
    Column("floor_p90_abs_err", "floor p90", "fp90", "the bare floor's p90 |error|", fmt=_pct),
    Column("t0_s", "t0", "t0", "fixed cost per call, seconds", fmt=lambda x: fmt_num(x, 1e-6) + " µs"),
]


def run_calibrate(src: str, out: str, gpu: str | None, dtype: str | None, holdout: float | None,
                  kernel_source: str, fmt: str | None) -> int:
    cal, _ = calibrate_source(src, gpu=gpu, dtype=dtype, kernel_source=kernel_source,
                              holdout=DEFAULT_HOLDOUT if holdout is None else holdout)
    path = save_calibration(cal, out)
    rows = [{"op_class": c, "rows": m.rows, "heldout_shapes": m.heldout.get("shapes"),
             "heldout_rows": m.heldout.get("rows"), "t0_s": m.t0_s,
             **{k: m.heldout.get(k) for k in ("median_abs_err", "mean_abs_err", "p90_abs_err", "floor_median_abs_err",
                                                "floor_mean_abs_err", "floor_p90_abs_err")}}
            for c, m in cal.classes.items()]
    notes = ["errors: |predicted - measured| / measured on whole shapes held out of the fit; the floor's on the "
             "same rows"] + ([f"note: {cal.note}"] if cal.note else [])
    emit(COLUMNS, rows, fmt, title=f"calibration: {cal.label}", notes=notes)
    print(f"gpuprobe calibrate: wrote {path}", file=sys.stderr)
    return 0
