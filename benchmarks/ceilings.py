#!/usr/bin/env python3
"""Empirical ceilings of the present GPU: every csrc microbenchmark, cuBLAS and torch's copy, with targets.

Measures afresh (a few seconds; the user cache is left alone unless --cache), prints the table
`gpuprobe ceilings` prints, then each device target (docs/ceilings.md) with its figure and whether
it holds: DRAM copy kernel >= 95% of torch's copy (and within 5%), FP32 FMA within 10% of the
datasheet scaled to the SM clock seen, mma.sync tensor kernel >= 60% of cuBLAS.

    python benchmarks/ceilings.py                 # table and targets
    python benchmarks/ceilings.py --markdown      # the same figures as Markdown, for docs/PERFORMANCE.md
    python benchmarks/ceilings.py --backend nvrtc-ctypes   # compile without CuPy
"""
from __future__ import annotations

import argparse
import sys

from gpuprobe import ceilings as C
from gpuprobe.errors import NotAvailable
from gpuprobe.render.ceilings_table import ceilings_rows, print_ceilings
from gpuprobe.run.script import run_script
from gpuprobe.specs.gpus import gpu_from_device_name


def markdown(result, spec) -> str:
    """The rows of ``gpuprobe ceilings`` (:func:`gpuprobe.render.ceilings_table.ceilings_rows`) as Markdown."""
    rows = ["| ceiling | measured | datasheet | ratio | result check |", "|---|---|---|---|---|"]
    for r in ceilings_rows(result, spec):
        unit = "TB/s" if r["unit"] == "bytes/s" else "TFLOP/s"
        value, sheet = r["measured"], r["datasheet"]
        rows.append(f"| {r['ceiling']} | {value / 1e12:.3f} {unit} | "
                    f"{'—' if not sheet else f'{sheet / 1e12:.3f} {unit}'} | "
                    f"{'—' if not sheet else f'{value / sheet:.1%}'} | {r['check'] or '—'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=C.BACKENDS, default=None, help="compile path (default: CuPy if importable)")
    p.add_argument("--quick", action="store_true", help="shorter loops and a 4096^3 GEMM")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--cache", action="store_true", help="also write the result to the user cache")
    args = p.parse_args(argv)
    try:
        result = C.measure_ceilings(quick=args.quick, backend=args.backend,
                                    log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    except NotAvailable as e:
        print(f"benchmarks/ceilings.py: {e}", file=sys.stderr)
        return 2
    spec = gpu_from_device_name(result.device_name)
    if args.markdown:
        print(markdown(result, spec))
    else:
        path = C.save_cached(result) if args.cache and result.all_verified else None
        print_ceilings(result, spec, path, from_cache=False)
    figures, failures = C.evaluate_targets(result, spec)
    print(f"\ncopy kernel / torch copy: {figures.get('copy_vs_torch')} (target >= 0.95, within 0.05)")
    print(f"FP32 FMA / datasheet at the SM clock seen: {figures.get('fp32_vs_scaled_datasheet')} (target 0.90-1.10)")
    for dt in ("bf16", "fp16"):
        print(f"mma.sync {dt} / cuBLAS {dt}: {figures.get(f'mma_{dt}_vs_cublas')} (target >= 0.60)")
    print("targets: " + ("all met" if not failures else "MISSED: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    run_script(main)
