#!/usr/bin/env python3
"""Paged decode attention on the GPU: the issue's target points, or a sweep of batch x context x knobs.

Default run (about a minute on an H100): for Qwen2-0.5B (14/2/64), Qwen2-1.5B (12/2/128) and
Llama-3.2-1B (32/8/64), bf16, page 16, at B=256/C=2048 and B=8/C=32768, v1 beside split-K (heuristic
split count), with time, % of copy bandwidth, ratio to dense SDPA and to the paged reference. The
`target` column says whether the Qwen2-0.5B targets are met (B=256: >= 90% of copy bandwidth and
<= 1.05x dense SDPA; B=8, C=32768: split-K >= 70%) or by how much they are missed.

    python benchmarks/attention.py                       # target table
    python benchmarks/attention.py --markdown            # same, as Markdown for docs/PERFORMANCE.md
    python benchmarks/attention.py --sweep --model qwen2-0.5b --batch 1-512 --context 1024,4096 \
        --knobs "block_kv=32,64,128 num_warps=4,8 num_stages=2,3"
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

TARGET_MODELS = ("qwen2-0.5b", "qwen2-1.5b", "llama-3.2-1b")
TARGET_POINTS = ((256, 2048), (8, 32768))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", action="store_true", help="sweep --batch x --context x --knobs for --model")
    p.add_argument("--model", default="qwen2-0.5b")
    p.add_argument("--batch", default="1-512")
    p.add_argument("--context", default="1024,4096")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--dtype", default="bf16", type=normalize_dtype)
    p.add_argument("--knobs", default="num_splits=1,auto")
    p.add_argument("--no-reference", action="store_true", help="skip timing the paged reference")
    args, knob_sets = parse_bench_args(p, argv, bench.ATTENTION_KNOB_NAMES)

    if args.sweep:
        plan = {args.model: [(b, c) for b in parse_int_list(args.batch, "batch")
                             for c in parse_int_list(args.context, "context")]}
    else:
        plan = {m: list(TARGET_POINTS) for m in TARGET_MODELS}
        knob_sets = [{"num_splits": 1}, {"num_splits": None}]
    for model, points in plan.items():
        shape = bench.HeadShape.of_model(model)
        rows = []
        for batch, context in points:
            for ks in knob_sets:
                row = bench.bench_attention(model=model, shape=shape, batch=batch, context=context,
                                            page_size=args.page_size, dtype=args.dtype, knobs=ks,
                                            reference=not args.no_reference)
                rows.append(row)
                print(f"  {model} B={batch} C={context} {ks}: {row['time_us']:.1f} us, "
                      f"{row['pct_copy_bw']:.1f}% bw", file=sys.stderr)
        bw = rows[0]["copy_bw_gbps"]
        title = (f"{model} ({shape.num_q_heads}/{shape.num_kv_heads} heads, head_dim {shape.head_dim}), "
                 f"page {args.page_size}, {args.dtype}; copy bandwidth {bw:.0f} GB/s")
        emit(spec_columns(bench.ATTENTION_COLUMNS), rows, args.format, title=title)
    return 0


if __name__ == "__main__":
    run_script(main)
