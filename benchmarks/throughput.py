"""Decode throughput of qwen2-0.5b at context 1024, batch 1..1024: CUDA-graph replay against eager.

Prints one table (tokens/s, step time, graph speed-up, graph step over the weight-read floor) and
writes the sweep's files (throughput.csv/.json/.png, results.jsonl) to --out. Needs a CUDA GPU.
Target (CONTRACTS.md section 10): the graph-mode step at batch 1 within 2x of weight bytes / measured
copy bandwidth (the issue's 1.3x needs fused elementwise kernels).

    python benchmarks/throughput.py --out runs/throughput-h100
"""
from __future__ import annotations

import argparse
import sys

from gpuprobe.cli._common import parse_int_list


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2-0.5b")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", default="1-1024")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--attention", default=None)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--out", default="gpuprobe-out/bench-throughput")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/throughput.py needs a CUDA GPU.", file=sys.stderr)
        return 2
    from gpuprobe.engine.attention import default_attention
    from gpuprobe.engine.throughput import copy_bandwidth, rows_from_records, weight_read_floor_s, write_results
    from gpuprobe.sweep import run_sweep

    attention = a.attention or default_attention(torch.device("cuda"))
    batches = parse_int_list(a.batch)
    points = [dict(model=a.model, batch=b, context=a.context, attention=attention, dtype=a.dtype, steps=a.steps,
                   warmup=8, graphs=g, seed=0, device="cuda", page_size=16)
              for g in (True, False) for b in batches]
    records = run_sweep(points, "gpuprobe.engine.throughput:measure_point", a.out, resume=a.resume, timeout_s=900,
                        label=lambda pt: f"{'graph' if pt['graphs'] else 'eager'} batch {pt['batch']}")
    rows = rows_from_records(records)
    write_results(rows, a.out, {"model": a.model, "context": a.context, "attention": attention, "dtype": a.dtype})
    bw, source = copy_bandwidth()
    by = {(r["mode"], r["batch"]): r for r in rows}
    print(f"\n{a.model}, context {a.context}, {a.dtype}, attention {attention}; copy bandwidth "
          f"{bw / 1e12:.2f} TB/s ({source})\n")
    print(f"{'batch':>6} {'graph tok/s':>12} {'graph ms':>9} {'eager ms':>9} {'speed-up':>9} {'x floor':>8}")
    for b in batches:
        g, e = by.get(("graph", b)), by.get(("eager", b))
        gs = g["step_latency_s"] if g and g["status"] == "ok" else None
        es = e["step_latency_s"] if e and e["status"] == "ok" else None
        floor = weight_read_floor_s(g["weights_bytes"], bw) if gs else None
        print(f"{b:>6} {(f'{b / gs:,.0f}' if gs else (g or {}).get('status', '-')):>12} "
              f"{(f'{gs * 1e3:.3f}' if gs else '-'):>9} {(f'{es * 1e3:.3f}' if es else '-'):>9} "
              f"{(f'{es / gs:.1f}x' if gs and es else '-'):>9} {(f'{gs / floor:.2f}' if floor else '-'):>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
