"""`gpuprobe calibrate`: fit a calibration.json to measured per-op times."""
from __future__ import annotations

import argparse

from gpuprobe.render.tables import FORMATS

NAME = "calibrate"
HELP = "fit a calibration (measured efficiency vs shape per op class) to measured per-op times"
DESCRIPTION = """Fit a calibration.json to measured per-op times and report its error on held-out shapes.

SRC: aiconfigurator (NVIDIA's published per-op tables in the installed aiconfigurator-core package;
needs --gpu), a `roofline --mode timing|ncu|nsys` results folder or roofline.json, a Vidur per-op
profile CSV, or a CSV in `gpuprobe predict`'s layout plus measured_s (seconds per call); the CSVs need
--gpu. Whole shapes are held out of the fit, never rows of a shape it fitted (docs/prediction.md)."""
ORDER = 35


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--holdout must be a fraction in [0, 1), got '{text}'") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"--holdout must be a fraction in [0, 1), got '{text}'")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="src", required=True, metavar="SRC",
                   help="aiconfigurator, a results folder, a roofline.json, a Vidur CSV or a measurement CSV")
    p.add_argument("--gpu", default=None, help="GPU registry name (needed for aiconfigurator and CSVs)")
    p.add_argument("--dtype", default=None, help="bf16 (default), fp16 or fp32")
    p.add_argument("--holdout", type=_fraction, default=None, metavar="FRACTION",
                   help="share of the shapes held out to measure the error (default 0.2)")
    p.add_argument("--kernel-source", choices=("vllm", "sglang", "trtllm"), default="vllm",
                   help="which framework's tables, with --from aiconfigurator (default vllm)")
    p.add_argument("--out", required=True, metavar="FILE", help="the calibration.json to write")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal), tsv (default when piped), csv, json")


def run(args: argparse.Namespace) -> int:
    from gpuprobe.run.calibrate import run_calibrate

    return run_calibrate(args.src, args.out, args.gpu, args.dtype, args.holdout, args.kernel_source, args.format)
