"""``gpuprobe profile -- CMD``: run any command under Nsight Compute, keep the report and its parsed table."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.cli._common import positive_float, positive_int
from gpuprobe.cli._nsys_profile import add_nsys_arguments, run_nsys_profile
from gpuprobe.errors import UserError
from gpuprobe.ncu import load_ncu_report
from gpuprobe.ncu.metrics import METRIC_SETS
from gpuprobe.ncu.runner import CACHE_CONTROLS, CLOCK_CONTROLS, REPLAY_MODES
from gpuprobe.paths import output_dir
from gpuprobe.run.options import ReportOptions

NAME = "profile"
HELP = "run a command under Nsight Compute (ncu) or Nsight Systems (--nsys): report + per-op table"
DESCRIPTION = """\
Wrap ncu around any command (put it after `--`). Collects a named metric set, optionally only the
kernels inside NVTX ranges, writes DIR/NAME.ncu-rep, DIR/NAME.csv (the parsed per-kernel table in
base units, with op and layer) and DIR/NAME.gpuprobe.json (how it was made), then prints the per-op
table. Needs a GPU, ncu, and permission to read the GPU counters.

defaults: --clock-control none (the card's clocks are left alone; `base` locks them to base clock),
--cache-control all (caches flushed before each kernel: DRAM bytes are cold-cache figures),
--target-processes all, --replay-mode kernel.

NVTX filters use ncu's syntax: a push/pop path ends with a slash (decode/layer0/attention/), a
start/end range is a bare name (step), a named domain is dom@range.

examples:
  gpuprobe profile -- python decode.py
  gpuprobe profile --nvtx-include decode/layer0/ --out prof -- python decode.py --batch 64
  gpuprobe profile --set memory --kernel-name 'paged_attention' --launch-count 4 -- python bench.py

--nsys traces instead (nsys profile --trace=cuda,nvtx --cuda-graph-trace=node; docs/nsys.md): kernel
times of every step, CUDA graphs included, no counter permission needed; writes DIR/NAME.nsys-rep and
DIR/NAME.sqlite and prints the per-op time per decode step:
  gpuprobe profile --nsys -- python decode.py
  gpuprobe profile --nsys --capture-range nvtx --nvtx-capture decode --model qwen2-0.5b -- python serve.py
"""
ORDER = 41


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="metric_set", choices=tuple(METRIC_SETS), default="roofline",
                   help="metric set (default %(default)s)")
    p.add_argument("--metrics", default="", help="extra metric names, comma separated")
    p.add_argument("--nvtx-include", action="append", default=[], metavar="EXPR",
                   help="profile only kernels inside this NVTX range (repeatable)")
    p.add_argument("--nvtx-exclude", action="append", default=[], metavar="EXPR", help="skip kernels in this range")
    p.add_argument("--kernel-name", metavar="REGEX", help="profile only kernels whose name matches")
    p.add_argument("--launch-skip", type=int, metavar="N", help="skip the first N matching launches")
    p.add_argument("--launch-count", type=positive_int("--launch-count"), metavar="N", help="profile at most N launches")
    p.add_argument("--replay-mode", choices=REPLAY_MODES, default="kernel")
    p.add_argument("--clock-control", choices=CLOCK_CONTROLS, default="none",
                   help="none (default): leave clocks alone; base: lock to base clock")
    p.add_argument("--cache-control", choices=CACHE_CONTROLS, default="all",
                   help="all (default): flush caches before each kernel; none: keep them warm")
    p.add_argument("--out", metavar="DIR", help="output folder (default ./gpuprobe-out/profile-<time>)")
    p.add_argument("--name", default="profile", help="file name stem (default %(default)s)")
    p.add_argument("--timeout", type=positive_float("--timeout"), metavar="S", help="stop the run after S seconds")
    p.add_argument("--ncu", metavar="PATH", help="the ncu executable (default: found on PATH, CUDA_HOME...)")

    add_nsys_arguments(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to profile")


def run(args: argparse.Namespace) -> int:
    from gpuprobe.ncu.diagnose import run_ncu_with_diagnosis

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UserError("no command to profile; put it after `--`, e.g. gpuprobe profile -- python script.py")
    if args.nsys:
        return run_nsys_profile(args, cmd)
    out = output_dir(args.out, "profile")
    res = run_ncu_with_diagnosis(
        cmd, out / f"{args.name}.ncu-rep", metric_set=args.metric_set, nvtx_include=args.nvtx_include,
        nvtx_exclude=args.nvtx_exclude, kernel_name=args.kernel_name, launch_skip=args.launch_skip,
        launch_count=args.launch_count, replay_mode=args.replay_mode, clock_control=args.clock_control,
        cache_control=args.cache_control, extra_metrics=[m for m in args.metrics.split(",") if m.strip()],
        timeout_s=args.timeout, ncu=args.ncu)
    df = load_ncu_report(res.report)
    table = write_table(df, out / f"{args.name}.csv")
    print(f"profiled {len(df)} kernels in {res.seconds:.1f} s with ncu {res.ncu.version or '?'}: "
          f"{res.report}, {table}", file=sys.stderr)

    from gpuprobe.run.report import run_report

    return run_report(ReportOptions(file=str(res.report)))


def write_table(df, path):
    """The parsed per-kernel table as CSV: identity and standard columns first, then every metric."""
    from gpuprobe.ncu.counters import STANDARD_COLUMNS
    from gpuprobe.ncu.readers import ID_COLUMNS

    first = [c for c in (*ID_COLUMNS, "op", "layer", *STANDARD_COLUMNS) if c in df.columns]
    out = df[first + [c for c in df.columns if c not in first]].copy()
    for c in ("grid", "block", "nvtx_stack", "nvtx_ranges"):
        out[c] = ["/".join(map(str, v)) if c.startswith("nvtx") else "x".join(map(str, v)) if v else ""
                  for v in out[c]]
    out.to_csv(path, index=False)
    return path
