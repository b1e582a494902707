"""``gpuprobe attention-bench``: time the Triton paged decode attention against its baselines."""
from __future__ import annotations

import argparse

from gpuprobe.ceilings import kernel_bench as bench
from gpuprobe.cli._common import add_dtype_argument, add_model_argument, positive_int
from gpuprobe.errors import UserError
from gpuprobe.parsing import parse_int_list
from gpuprobe.render.tables import FORMATS, emit, spec_columns
from gpuprobe.specs.gpus import normalize_dtype

NAME = "attention-bench"
HELP = "time the Triton paged decode attention kernel (v1 / split-K) against dense SDPA and the reference"
DESCRIPTION = """\
Sweep batch x context x kernel knobs for a model's attention heads on the GPU and print, per point:
time, achieved bandwidth (K, V, q and out bytes over time) as % of the measured copy bandwidth,
and the time ratio to torch SDPA on a dense cache of the same shape and to the paged reference.

Knobs (--knobs, space separated, each NAME=V1,V2 or 'auto'):
  block_kv   tokens per tile (power of two >= 16)     num_warps   warps per program
  num_stages software pipeline depth                  num_splits  1 = v1, N = split-K, auto = heuristic

example: gpuprobe attention-bench --model qwen2-0.5b --batch 8,256 --context 2048,32768 \\
           --knobs "num_splits=1,auto block_kv=32,64"
"""
ORDER = 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, required=False)
    p.add_argument("--batch", default="256", help="batch sizes, e.g. 8,256 or 1-512 (default %(default)s)")
    p.add_argument("--context", default="2048", help="context lengths, e.g. 2048,32768 (default %(default)s)")
    p.add_argument("--page-size", type=positive_int("--page-size"), default=16, help="tokens per KV page (default 16)")
    add_dtype_argument(p)
    p.add_argument("--knobs", default=None, help="kernel knobs to sweep, e.g. 'block_kv=32,64 num_splits=1,auto'")
    p.add_argument("--no-baselines", action="store_true", help="skip dense SDPA and the paged reference")
    p.add_argument("--rep-ms", type=positive_int("--rep-ms"), default=100,
                   help="milliseconds of repetitions per timing (default %(default)s)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal), tsv (default when piped), csv, json (a list of points)")


def run(args: argparse.Namespace) -> int:
    # the kernels package is installed as gpuprobe.kernels (it is absent from a bare checkout): loaded
    # here, so `gpuprobe --help` works wherever the CLI does

    batches = parse_int_list(args.batch, "batch")
    contexts = parse_int_list(args.context, "context")
    dtype = normalize_dtype(args.dtype)
    try:
        knob_sets = bench.parse_knobs(args.knobs, bench.ATTENTION_KNOB_NAMES)
    except ValueError as e:
        raise UserError(f"--knobs: {e}") from None
    for ks in knob_sets:
        bkv = ks.get("block_kv")
        if bkv is not None and (bkv < 16 or bkv & (bkv - 1)):
            raise UserError(f"--knobs: block_kv must be a power of two >= 16, got {bkv}.")
    shape = bench.HeadShape.of_model(args.model)
    bench.require_cuda()
    rows = []
    for b in batches:
        for c in contexts:
            for ks in knob_sets:
                rows.append(bench.bench_attention(model=args.model, shape=shape, batch=b, context=c,
                                                  page_size=args.page_size, dtype=dtype, knobs=ks,
                                                  baselines=not args.no_baselines,
                                                  reference=not args.no_baselines, rep_ms=args.rep_ms))
    title = (f"{args.model}: {shape.num_q_heads}/{shape.num_kv_heads} heads, head_dim {shape.head_dim}, "
             f"page {args.page_size}, {dtype}; copy bw {rows[0]['copy_bw_gbps']:.0f} GB/s "
             f"({rows[0]['copy_bw_source']})") if rows else None
    emit(spec_columns(bench.ATTENTION_COLUMNS), rows, args.format, title=title)
    return 0
