"""Calibrated-prediction check of ``gpuprobe selftest --gpu``: the per-op times the two-point measured roofline
just measured, against the shipped calibration's prediction and the bare floor (docs/prediction.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpuprobe.errors import UserError
from gpuprobe.specs.gpus import get_gpu
from gpuprobe.tools.selftest.registry import CheckContext, Skip, check

SOURCE_CHECK = "roofline_two_points"


def _result_path(folder: Path | None) -> Path | None:
    """The measured roofline of the source check's folder (its sweep subfolder or the folder itself)."""
    if folder is None:
        return None
    for base in (folder / "sweep", folder):
        if (base / "roofline.json").exists():
            return base / "roofline.json"
        if (base / "results.jsonl").exists():
            return base
    return None


@check("prediction_vs_measured", owner="prediction", gpu=True, budget_s=20, estimate_s=5)
def prediction_vs_measured(ctx: CheckContext) -> dict:
    """Measured per-op times of the two-point roofline against the shipped calibration's prediction and the floor."""
    from gpuprobe.calibration import class_floor_s, shipped_calibration
    from gpuprobe.calibration.fit import abs_errors
    from gpuprobe.calibration.shapes import SHAPE_COLUMNS
    from gpuprobe.calibration.sources import load_result, read_gpuprobe

    path = _result_path(ctx.check_dir(SOURCE_CHECK))
    if path is None:
        raise Skip(f"no measured roofline in the {SOURCE_CHECK} check's folder (it did not run or wrote nothing)")
    try:
        result = load_result(path)
        frame = read_gpuprobe(result, (result.extra or {}).get("kernels"))
    except UserError as e:
        raise Skip(f"{SOURCE_CHECK} left no usable per-op times: {e}") from None
    gpu = get_gpu(result.gpu)
    dtype = result.dtype or "bf16"
    cal = shipped_calibration(gpu, dtype)
    if cal is None:
        raise Skip(f"gpuprobe ships no calibration for {gpu.name} {dtype}")
    floors, preds = [], []
    for rec in frame.to_dict("records"):
        shape = {c: rec[c] for c in SHAPE_COLUMNS[rec["op_class"]]}
        f = class_floor_s(rec["op_class"], shape, gpu, dtype)
        floors.append(f)
        preds.append(cal.predict(rec["op_class"], shape, f))
    frame["floor_s"], frame["predicted_s"] = floors, preds
    # The measured calls as a calibration source (`gpuprobe calibrate --from measured_ops.csv --gpu ...`).
    cols = ["op_class", *dict.fromkeys(c for cs in SHAPE_COLUMNS.values() for c in cs), "measured_s"]
    frame[cols].rename(columns={"op_class": "op"}).assign(gpuprobe_op=frame["op"], batch_of_step=frame["batch_of_step"]) \
        .to_csv(ctx.out_dir / "measured_ops.csv", index=False)
    frame.to_csv(ctx.out_dir / "prediction_vs_measured.csv", index=False)
    t = frame["measured_s"].to_numpy(float)
    err, floor_err = abs_errors(frame["predicted_s"], t), abs_errors(frame["floor_s"], t)
    figures: dict = {"gpu": gpu.name, "mode": result.mode, "calibration": cal.label, "ops": int(len(frame)),
                     "median_abs_err": round(float(np.median(err)), 3),
                     "floor_median_abs_err": round(float(np.median(floor_err)), 3)}
    for rec, e in zip(frame.to_dict("records"), err):
        key = f"{rec['op']}_b{rec['batch_of_step']}"
        figures[f"{key}_measured_us"] = round(rec["measured_s"] * 1e6, 2)
        figures[f"{key}_predicted_us"] = round(rec["predicted_s"] * 1e6, 2)
        figures[f"{key}_floor_us"] = round(rec["floor_s"] * 1e6, 2)
    (ctx.out_dir / "figures.json").write_text(json.dumps(figures, indent=1))
    ctx.log(f"{len(frame)} measured calls; median |error| {figures['median_abs_err']:.1%} "
            f"(floor {figures['floor_median_abs_err']:.1%}) with {cal.label}")
    return figures
