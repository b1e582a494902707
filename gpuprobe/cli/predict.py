"""`gpuprobe predict`: floor and calibrated time of op shapes on a GPU."""
from __future__ import annotations

import argparse

from gpuprobe.render.tables import FORMATS

NAME = "predict"
HELP = "predict per-op times of op shapes (CSV) on a GPU: the floor and the calibrated time"
DESCRIPTION = """Predict the time of each op row of a CSV on a GPU.

Columns: op = gemm (m, n, k: y[m,n] = x[m,k] W[n,k]^T), decode_attention (batch, context, heads,
kv_heads, head_dim), elementwise (bytes). A Vidur per-op profile CSV is accepted too (auto-detected):
each row becomes its per-op rows, with the measured time kept beside the prediction.
Output: the input columns, floor_s, predicted_s and calibration (docs/prediction.md)."""
ORDER = 36


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", required=True, help="GPU registry name (see `gpuprobe gpus`)")
    p.add_argument("--dtype", default="bf16", help="bf16 (default), fp16 or fp32")
    p.add_argument("--shapes", required=True, metavar="FILE.csv", help="op shapes, one call per row")
    p.add_argument("--calibration", default=None, metavar="FILE|none|auto",
                   help="a calibration.json of this GPU and dtype, none (the floor), auto (default: the shipped one)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal), tsv (default when piped), csv, json (a list of row objects)")


def run(args: argparse.Namespace) -> int:
    from gpuprobe.run.predict import run_predict

    return run_predict(args.gpu, args.dtype, args.shapes, args.calibration, args.format)
