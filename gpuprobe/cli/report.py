"""``gpuprobe report FILE``: parsing only; the run is :func:`gpuprobe.run.report.run_report`."""
from __future__ import annotations

import argparse

from gpuprobe.cli._common import positive_float, positive_int
from gpuprobe.render.tables import FORMATS
from gpuprobe.run.options import ReportOptions
from gpuprobe.specs.gpus import normalize_dtype

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
    p.add_argument("file", metavar="FILE", help=".ncu-rep, .ncu-rep.xz, an ncu CSV page (raw or details), "
                   "or an nsys .sqlite/.nsys-rep/stats CSV")
    p.add_argument("--by", choices=("op", "kernel"), default="op", help="one row per op (default) or per kernel")
    p.add_argument("--json", action="store_true", help="print roofline.json (mode 'ncu') to stdout instead of a table")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table format: table (default on a terminal), tsv (default when piped), csv, json (the rows)")
    p.add_argument("--plot", metavar="PNG", help="write the roofline figure here")
    p.add_argument("--out", metavar="DIR", help="also write roofline.json and roofline.csv into DIR")
    p.add_argument("--gpu", help="GPU registry name for datasheet roofs (default: from the report's device name)")
    p.add_argument("--dtype", default="bf16", help="dtype whose tensor roof `bound` uses (default %(default)s)")
    p.add_argument("--measured-dram-tbps", type=positive_float("--measured-dram-tbps"), metavar="TB/s",
                   help="measured copy bandwidth in TB/s: adds the measured DRAM roof and dram_pct_of_measured")
    p.add_argument("--rules", metavar="RULES",
                   help="your kernel rules file (CSV: pattern,op,example,engine), matched before the built-in table "
                        "for kernels outside NVTX op ranges")
    add_trace_arguments(p)


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``report`` takes for Nsight Systems inputs."""
    g = p.add_argument_group("Nsight Systems traces (.sqlite, .sqlite.xz, .nsys-rep, nsys stats CSVs)")
    g.add_argument("--model", help="model registry name or config.json: writes the trace's roofline (mode nsys)")
    g.add_argument("--batch", type=positive_int("--batch"), help="batch size of the traced steps "
                   "(default: from the step range names, e.g. 'decode b=64 c=1024')")
    g.add_argument("--context", type=positive_int("--context"), help="context length of the traced steps "
                   "(default: from the step range names)")
    g.add_argument("--step-regex", default=None, metavar="REGEX",
                   help="NVTX range name of one decode step (default '^decode\\b')")
    g.add_argument("--step-kernel", default=None, metavar="REGEX",
                   help="cut steps at a marker kernel that ends each step instead (e.g. argmax)")
    g.add_argument("--align-eager", default=None, metavar="EAGER",
                   help="an eager NVTX-ranged trace of the same step: graph-replayed kernels take its ops")


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    return ReportOptions(
        file=args.file, by=args.by, as_json=args.json, fmt=args.format, plot=args.plot, out=args.out, gpu=args.gpu,
        dtype=normalize_dtype(args.dtype),
        measured_dram_bytes_per_s=args.measured_dram_tbps * 1e12 if args.measured_dram_tbps else None,
        rules=args.rules, model=args.model, batch=args.batch, context=args.context, step_regex=args.step_regex,
        step_kernel=args.step_kernel, align_eager=args.align_eager)


def run(args: argparse.Namespace) -> int:
    from gpuprobe.run.report import run_report  # the readers load pandas: not when the parser is built

    return run_report(options_from_args(args))
