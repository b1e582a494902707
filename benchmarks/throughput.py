"""Decode throughput of qwen2-0.5b at context 1024, batch 1..1024: CUDA-graph replay against eager.

Prints one table (tokens/s, step time, graph speed-up, graph step over the weight-read floor) and
writes the sweep's files (throughput.csv/.json/.png, results.jsonl) to --out. Needs a CUDA GPU.
Target (docs/contracts.md section 10): the graph-mode step at batch 1 within 2x of weight bytes / measured
copy bandwidth (the issue's 1.3x needs fused elementwise kernels). ``--compile`` adds a third series:
the graph of the ``torch.compile``-fused step (tens of seconds of compilation per batch size).

    python benchmarks/throughput.py --out runs/throughput-h100
    python benchmarks/throughput.py --compile --batch 1,8,64,256 --out runs/throughput-h100-fused
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
    p.add_argument("--compile", action="store_true", help="also measure the torch.compile-fused step in graph mode")
    a = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/throughput.py needs a CUDA GPU.", file=sys.stderr)
        return 2
    from gpuprobe.engine.attention import default_attention
    from gpuprobe.ceilings.bandwidth import copy_bandwidth_and_source
    from gpuprobe.measure.throughput import rows_from_records, weight_read_floor_s
    from gpuprobe.render.plots.throughput import series
    from gpuprobe.render.throughput import write_results
    from gpuprobe.measure.sweep import run_sweep

    attention = a.attention or default_attention(torch.device("cuda"))
    batches = parse_int_list(a.batch)
    modes = [(True, False), (False, False)] + ([(True, True)] if a.compile else [])  # (graphs, compile)
    points = [dict(model=a.model, batch=b, context=a.context, attention=attention, dtype=a.dtype, steps=a.steps,
                   warmup=8, graphs=g, seed=0, device="cuda", page_size=16, compile=c)
              for g, c in modes for b in batches]
    records = run_sweep(points, "gpuprobe.measure.throughput:measure_point", a.out, resume=a.resume, timeout_s=900,
                        label=lambda pt: f"{'graph' if pt['graphs'] else 'eager'}{'+compile' if pt['compile'] else ''} "
                                         f"batch {pt['batch']}")
    rows = rows_from_records(records)
    write_results(rows, a.out, {"model": a.model, "context": a.context, "attention": attention, "dtype": a.dtype})
    bw, source = copy_bandwidth_and_source()
    by = {(series(r), r["batch"]): r for r in rows}
    print(f"\n{a.model}, context {a.context}, {a.dtype}, attention {attention}; copy bandwidth "
          f"{bw / 1e12:.2f} TB/s ({source})\n")
    fused = f" {'fused ms':>9} {'fused x floor':>14} {'compile s':>10}" if a.compile else ""
    print(f"{'batch':>6} {'graph tok/s':>12} {'graph ms':>9} {'eager ms':>9} {'speed-up':>9} {'x floor':>8}{fused}")

    def ok_s(row):
        return row["step_latency_s"] if row and row["status"] == "ok" else None

    for b in batches:
        g, e, f = by.get(("graph", b)), by.get(("eager", b)), by.get(("graph+compile", b))
        gs, es, fs = ok_s(g), ok_s(e), ok_s(f)
        weights = next((r["weights_bytes"] for r in (g, f, e) if r and r["weights_bytes"]), None)
        floor = weight_read_floor_s(weights, bw) if weights else None
        line = (f"{b:>6} {(f'{b / gs:,.0f}' if gs else (g or {}).get('status', '-')):>12} "
                f"{(f'{gs * 1e3:.3f}' if gs else '-'):>9} {(f'{es * 1e3:.3f}' if es else '-'):>9} "
                f"{(f'{es / gs:.1f}x' if gs and es else '-'):>9} {(f'{gs / floor:.2f}' if gs and floor else '-'):>8}")
        if a.compile:
            cs = f["compile_s"] if fs else None
            line += (f" {(f'{fs * 1e3:.3f}' if fs else (f or {}).get('status', '-')):>9}"
                     f" {(f'{fs / floor:.2f}' if fs and floor else '-'):>14} {(f'{cs:.1f}' if cs else '-'):>10}")
        print(line)
    return 0


if __name__ == "__main__":
    from gpuprobe.cli._common import run_script

    run_script(main)
