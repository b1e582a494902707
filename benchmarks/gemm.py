#!/usr/bin/env python3
"""Decode GEMM on the GPU against cuBLAS (torch.matmul) on a model's projection shapes.

For each projection (qkv_proj, o_proj, gate_up_proj, down_proj) and each M (batch rows), time
`decode_gemm` with its heuristic knobs (and any --knobs sweep) beside cuBLAS; the `target` column
says whether M <= 64 is within 1.2x of cuBLAS.

    python benchmarks/gemm.py --model qwen2-0.5b --m 1,8,16,32,64,256,1024
    python benchmarks/gemm.py --knobs "split_k=1,2,4,8 block_n=32,64"
"""
from __future__ import annotations

import argparse
import sys

from bench_args import parse_bench_args
from gpuprobe.ceilings import kernel_bench as bench
from gpuprobe.parsing import parse_int_list
from gpuprobe.render.tables import emit, spec_columns
from gpuprobe.run.script import run_script
from gpuprobe.specs.gpus import normalize_dtype


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2-0.5b")
    p.add_argument("--m", default="1,8,16,32,64,256,1024", help="batch rows")
    p.add_argument("--dtype", default="bf16", type=normalize_dtype)
    p.add_argument("--knobs", default=None, help="e.g. 'split_k=1,auto block_n=32,64'")
    args, knob_sets = parse_bench_args(p, argv, bench.GEMM_KNOB_NAMES)
    rows = []
    for op, (k, n) in bench.model_gemm_shapes(args.model).items():
        for m in parse_int_list(args.m, "m"):
            for ks in knob_sets:
                row = bench.bench_gemm(m=m, n=n, k=k, dtype=args.dtype, knobs=ks, op=op)
                rows.append(row)
                print(f"  {op} M={m} {ks}: {row['time_us']:.1f} us vs cuBLAS {row['cublas_us']:.1f} us",
                      file=sys.stderr)
    emit(spec_columns(bench.GEMM_COLUMNS), rows, args.format, title=f"{args.model} projections, {args.dtype}")
    return 0


if __name__ == "__main__":
    run_script(main)
