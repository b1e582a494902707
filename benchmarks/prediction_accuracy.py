"""Held-out accuracy of gpuprobe's calibrated per-op prediction on NVIDIA's published per-op tables.

Per class and GPU, on whole shapes held out of the fit (20%, fixed seed): the median |error| of the bare
floor, one efficiency per class (``floor / eff``), the affine form (``t0 + floor / eff``) and gpuprobe's
model (``t0 + floor / eff(shape)``, docs/prediction.md). Then across GPUs (fit on one GPU's table, predict
another's with only the roofs changed) and across kernel sources (fit the vLLM tables, predict the SGLang
and TRT-LLM tables of the same GPU; every row of the other table, so nothing of it was seen).

    python benchmarks/prediction_accuracy.py [--gpus h100-sxm h200 ...] [--format table|tsv|csv|json]

Needs the ``calibration`` extra (aiconfigurator-core). About 30 s for H100 and H200 on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from gpuprobe.calibration.fit import abs_errors, affine_fit, fit_rows, heldout_report, single_efficiency
from gpuprobe.calibration.sources import read_aiconfigurator, with_floors
from gpuprobe.errors import UserError
from gpuprobe.render.tables import FORMATS, Column, emit, fmt_int, fmt_text
from gpuprobe.specs.gpus import get_gpu

CLASSES = ("gemm", "decode_attention")


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _median(e) -> float | None:
    return None if len(e) == 0 else float(np.median(e))


def table(gpu: str, source: str = "vllm"):
    spec = get_gpu(gpu)
    frame, _ = read_aiconfigurator(spec, "bf16", source)
    return with_floors(frame, spec, "bf16")


def same_source_rows(gpus: list[str]) -> list[dict]:
    rows = []
    for g in gpus:
        fr = table(g)
        for cls in CLASSES:
            sub = fr[fr.op_class == cls].reset_index(drop=True)
            rep, test = heldout_report(cls, sub, 0.2)
            t = test["measured_s"].to_numpy()
            rows.append({"case": f"{g} vllm, held-out shapes", "op_class": cls, "rows": len(test),
                         "floor": rep["floor_median_abs_err"], **{k: _median(abs_errors(test[f"pred_{k}"], t))
                                                                  for k in ("single", "affine", "model")}})
    return rows


def transfer_rows(pairs: list[tuple[str, str, str, str]]) -> list[dict]:
    """(fit gpu, fit source, predict gpu, predict source): fit every row of the first, predict every row of the second."""
    rows = []
    for fg, fs, pg, ps in pairs:
        try:
            fit_t, pred_t = table(fg, fs), table(pg, ps)
        except UserError as e:
            print(f"skipped {fg} {fs} -> {pg} {ps}: {e}", file=sys.stderr)
            continue
        for cls in CLASSES:
            a = fit_t[fit_t.op_class == cls].reset_index(drop=True)
            b = pred_t[pred_t.op_class == cls].reset_index(drop=True)
            if a.empty or b.empty:
                continue
            model = fit_rows(cls, a)
            cols = {c: b[c].to_numpy(float) for c in ("m", "n", "k", "batch", "context", "heads", "kv_heads",
                                                      "head_dim", "bytes")}
            floor, t = b["floor_s"].to_numpy(float), b["measured_s"].to_numpy(float)
            t0, eff = affine_fit(a["floor_s"].to_numpy(float), a["measured_s"].to_numpy(float))
            e1 = single_efficiency(a["floor_s"].to_numpy(float), a["measured_s"].to_numpy(float))
            rows.append({"case": f"fit {fg} {fs} -> {pg} {ps}", "op_class": cls, "rows": len(b),
                         "floor": _median(abs_errors(floor, t)),
                         "single": _median(abs_errors(np.maximum(floor / e1, floor), t)),
                         "affine": _median(abs_errors(np.maximum(t0 + floor / eff, floor), t)),
                         "model": _median(abs_errors(model.predict_many(cols, floor), t))})
    return rows


#: gpuprobe's own recorded H100 measurements (never fitted): Nsight Compute kernel durations under cold caches,
#: and CUDA events around eager ops (launch-bound under about 20 us, tests/fixtures/measured/README.md).
MEASURED = {"ncu fixture": "tests/fixtures/measured/ncu",
            "eager events": "tests/fixtures/measured/timing"}


def measured_rows() -> list[dict]:
    """The shipped H100 calibration against per-op times measured by other methods and kernels."""
    from pathlib import Path

    from gpuprobe.calibration import class_floor_s, shipped_calibration
    from gpuprobe.calibration.shapes import SHAPE_COLUMNS
    from gpuprobe.calibration.sources import load_result, read_gpuprobe

    root = Path(__file__).resolve().parents[1]
    gpu = get_gpu("h100-sxm")
    cal = shipped_calibration(gpu, "bf16")
    rows = []
    for case, folder in MEASURED.items():
        frame = read_gpuprobe(load_result(root / folder, gpu))
        for cls in CLASSES:
            sub = frame[frame.op_class == cls]
            if sub.empty:
                continue
            t = sub["measured_s"].to_numpy(float)
            shapes = [{c: r[c] for c in SHAPE_COLUMNS[cls]} for r in sub.to_dict("records")]
            floor = np.array([class_floor_s(cls, sh, gpu, "bf16") for sh in shapes])
            pred = np.array([cal.predict(cls, sh, f) for sh, f in zip(shapes, floor)])
            rows.append({"case": f"shipped h100 -> h100 {case}", "op_class": cls, "rows": len(sub),
                         "floor": _median(abs_errors(floor, t)), "single": None, "affine": None,
                         "model": _median(abs_errors(pred, t))})
    return rows


COLUMNS = [Column("case", "case", fmt=fmt_text, numeric=False, name=True),
           Column("op_class", "class", fmt=fmt_text, numeric=False), Column("rows", "rows", fmt=fmt_int),
           Column("floor", "bare floor", "floor", "median |error| of the bare floor", fmt=_pct, field="floor_median_abs_err"),
           Column("single", "single eff", "1eff", "one efficiency per class", fmt=_pct, field="single_median_abs_err"),
           Column("affine", "t0+floor/eff", "affine", "affine t0 + floor / eff", fmt=_pct, field="affine_median_abs_err"),
           Column("model", "gpuprobe", "model", "gpuprobe's model", fmt=_pct, field="model_median_abs_err")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", nargs="+", default=["h100-sxm", "h200"])
    ap.add_argument("--format", choices=FORMATS, default=None)
    args = ap.parse_args(argv)
    rows = same_source_rows(args.gpus)
    pairs = [("h100-sxm", "vllm", "h200", "vllm"), ("h200", "vllm", "h100-sxm", "vllm")]
    for g in args.gpus:
        pairs += [(g, "vllm", g, "sglang"), (g, "vllm", g, "trtllm")]
    rows += transfer_rows(pairs)
    rows += measured_rows()
    emit(COLUMNS, rows, args.format, title="median |error| per call (bf16; aiconfigurator-core tables)",
         notes=["held-out: 20% of the shapes (GEMM weight shapes n x k, attention head configurations) never fitted",
                "fit A -> B: fitted on every row of table A, error on every row of table B (roofs of B's GPU)",
                "shipped h100 -> ...: the shipped calibration on gpuprobe's recorded H100 measurements (other kernels "
                "and timing methods)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
