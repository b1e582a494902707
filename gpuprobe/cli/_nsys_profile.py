"""``gpuprobe profile --nsys -- CMD``: trace a command with Nsight Systems, export it, report on it."""
from __future__ import annotations

import argparse
import json
import sys

from gpuprobe.errors import UserError
from gpuprobe.nsys.runner import CAPTURE_RANGES, run_nsys, require_nsys
from gpuprobe.paths import output_dir
from gpuprobe.run.options import ReportOptions


def add_nsys_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Nsight Systems (--nsys): a trace instead of counters; no counter permission needed")
    g.add_argument("--nsys", action="store_true",
                   help="trace with nsys (--trace=cuda,nvtx --cuda-graph-trace=node) instead of ncu")
    g.add_argument("--capture-range", choices=CAPTURE_RANGES, default="none",
                   help="with --nsys: trace only between cudaProfilerStart/Stop, or inside an NVTX range")
    g.add_argument("--nvtx-capture", metavar="RANGE", help="with --capture-range nvtx: the range that opens the capture")
    g.add_argument("--nsys-exe", metavar="PATH", help="the nsys executable (default: found on PATH, CUDA_HOME...)")
    g.add_argument("--model", help="with --nsys: model of the traced decode: also write its roofline (mode nsys)")
    g.add_argument("--batch", type=int, help="with --nsys --model: batch size (default: from step range names)")
    g.add_argument("--context", type=int, help="with --nsys --model: context length (default: from step range names)")
    g.add_argument("--step-regex", default=None, metavar="REGEX", help="with --nsys: NVTX range of one decode step")
    g.add_argument("--step-kernel", default=None, metavar="REGEX", help="with --nsys: marker kernel ending each step")


def run_nsys_profile(args: argparse.Namespace, cmd: list[str]) -> int:
    """Trace ``cmd`` into ``DIR/NAME.nsys-rep`` and ``DIR/NAME.sqlite`` (``DIR/NAME.gpuprobe.json``: the nsys
    command line), then print the report of the trace."""
    from gpuprobe.run.report import run_report

    if args.capture_range == "nvtx" and not args.nvtx_capture:
        raise UserError("--capture-range nvtx needs --nvtx-capture RANGE (e.g. --nvtx-capture decode)")
    exe = require_nsys(args.nsys_exe)
    out = output_dir(args.out, "profile")
    res = run_nsys(cmd, out / args.name, capture_range=args.capture_range, nvtx_capture=args.nvtx_capture,
                   timeout_s=args.timeout, nsys=exe)
    meta = out / f"{args.name}.gpuprobe.json"  # how the trace was made, beside it (as for ncu reports)
    meta.write_text(json.dumps({"tool": "nsys", "command": res.command, "seconds": round(res.seconds, 3),
                                "capture_range": args.capture_range, "nvtx_capture": args.nvtx_capture,
                                "report": str(res.report), "sqlite": str(res.sqlite)}, indent=2) + "\n")
    print(f"traced in {res.seconds:.1f} s: {res.report}, {res.sqlite}", file=sys.stderr)
    return run_report(ReportOptions(file=str(res.sqlite), out=str(out / "report") if args.model else None,
                                    model=args.model, batch=args.batch, context=args.context,
                                    step_regex=args.step_regex, step_kernel=args.step_kernel))
