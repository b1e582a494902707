"""``gpuprobe report FILE``: the per-op (or per-kernel) counter roofline of any Nsight Compute report."""
from __future__ import annotations

import argparse
import json
import math
import sys

NAME = "report"
HELP = "read an Nsight Compute report or an Nsight Systems trace: per-op table, roofline.json, plot"
DESCRIPTION = """\
Read a report made by `gpuprobe profile` or by anyone's ncu run (.ncu-rep, .ncu-rep.xz, or a CSV
page from `ncu --import R.ncu-rep --csv --page raw [--print-units base]`), attribute each kernel to
an op by its NVTX ranges, and print FLOPs, DRAM bytes, intensity, achieved rates, % of peak and the
limiter class per op. Needs no GPU and no Nsight Compute install.

examples:
  gpuprobe report decode.ncu-rep
  gpuprobe report decode.csv --by kernel
  gpuprobe report decode.ncu-rep --json > roofline.json
  gpuprobe report decode.ncu-rep --plot roofline.png --gpu h100-sxm

Nsight Systems traces (.sqlite, .sqlite.xz, .nsys-rep, nsys stats CSVs; docs/nsys.md): per-op time of
each decode step, CUDA graphs included; with --model, the trace's roofline (mode nsys):
  gpuprobe report decode.sqlite
  gpuprobe report decode.sqlite --model qwen2-0.5b --batch 64 --context 1024 --out rep
  gpuprobe report graphs.sqlite --align-eager eager.sqlite --step-kernel argmax
"""
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gpuprobe.cli._common import positive_float

    p.add_argument("file", metavar="FILE", help=".ncu-rep, .ncu-rep.xz, an ncu CSV page (raw or details), "
                   "or an nsys .sqlite/.nsys-rep/stats CSV")
    p.add_argument("--by", choices=("op", "kernel"), default="op", help="one row per op (default) or per kernel")
    p.add_argument("--json", action="store_true", help="print roofline.json (mode 'ncu') to stdout instead of a table")
    p.add_argument("--plot", metavar="PNG", help="write the roofline figure here")
    p.add_argument("--out", metavar="DIR", help="also write roofline.json and roofline.csv into DIR")
    p.add_argument("--gpu", help="GPU registry name for datasheet roofs (default: from the report's device name)")
    p.add_argument("--dtype", default="bf16", help="dtype whose tensor roof `bound` uses (default %(default)s)")
    p.add_argument("--measured-dram-tbps", type=positive_float("--measured-dram-tbps"), metavar="TB/s",
                   help="measured copy bandwidth in TB/s: adds the measured DRAM roof and dram_pct_of_measured")
    from gpuprobe.nsys.report import add_trace_arguments

    add_trace_arguments(p)


def _fmt(x, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x / scale:.{digits}g}{unit}"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from gpuprobe.ncu import load_report
    from gpuprobe.ncu.counter_roofline import report_to_roofline
    from gpuprobe.nsys import is_nsys_input

    if is_nsys_input(args.file):
        from gpuprobe.nsys.report import run_trace_report

        return run_trace_report(args)
    df = load_report(args.file)
    measured = args.measured_dram_tbps * 1e12 if args.measured_dram_tbps else None
    result = report_to_roofline(df, gpu=args.gpu, dtype=args.dtype, measured_dram_bytes_per_s=measured,
                                by=args.by)
    if args.out:
        from gpuprobe.cli._common import output_dir

        result.write(output_dir(args.out, "report"))
    if args.plot:
        plot_result(result, args.plot)
    if args.json:
        from gpuprobe.roofline.schema import _json_default

        json.dump(result.to_dict(), sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
        return 0

    con = Console(width=max(Console().width, 150))
    c = result.ceilings
    t = Table(title=f"{df.attrs.get('source')}: {len(df)} kernels on {df.attrs.get('device_name') or result.gpu}, "
                    f"by {args.by}", title_justify="left")
    t.add_column("op", no_wrap=True)
    for col, just in ( ("kernels", "right"), ("time µs", "right"), ("share", "right"),
                      ("GFLOP", "right"), ("DRAM rd MB", "right"), ("DRAM wr MB", "right"),
                      ("FLOP/B", "right"), ("TFLOP/s", "right"), ("DRAM TB/s", "right"),
                      ("DRAM %pk", "right"), ("SM %", "right"), ("tensor %", "right"), ("limiter", "left")):
        t.add_column(col, justify=just)
    total_t = sum(p.time_s or 0.0 for p in result.points)
    for p in result.points:
        t.add_row(p.op, str(p.n_kernels), _fmt(p.time_s, 1e-6, 4), _fmt((p.time_s or 0) / total_t * 100 if total_t else None, 1, 3, "%"),
                  _fmt(p.flops, 1e9), _fmt(p.dram_read_bytes, 1e6), _fmt(p.dram_write_bytes, 1e6),
                  _fmt(p.intensity), _fmt(p.achieved_flops_per_s if p.flops is not None else None, 1e12),
                  _fmt(p.achieved_bytes_per_s if p.dram_bytes is not None else None, 1e12),
                  _fmt(p.dram_pct_of_ncu_peak, 1, 3), _fmt(p.sm_pct, 1, 3), _fmt(p.tensor_pct, 1, 3),
                  p.limiter or "-")
    con.print(t)
    con.print(f"ceilings: DRAM {c.dram_bytes_per_s / 1e12:.3g} TB/s ({c.dram_source}), "
              f"{c.compute_roof} {c.flops_per_s / 1e12:.4g} TFLOP/s ({c.compute_source}); "
              f"limiter: memory if DRAM >= 60% of peak, compute if SM or tensor >= 60%, else latency")
    if result.provenance.get("ceilings_note"):
        con.print("note: " + result.provenance["ceilings_note"])
    missing = df.attrs.get("missing") or []
    if missing:
        con.print(f"not in this report (shown as '-'): {', '.join(missing)}")
    return 0


def plot_result(result, path) -> None:
    """The roofline figure; points whose counters are missing are named on it, not placed."""
    from gpuprobe.render.plots.roofline import plot_roofline

    plot_roofline(result, path)
