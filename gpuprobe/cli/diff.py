"""``gpuprobe diff A B``: two reports (or two roofline.json) side by side, per op or per kernel."""
from __future__ import annotations

import argparse

from gpuprobe.render.tables import FORMATS
from gpuprobe.run.options import DiffOptions

NAME = "diff"
HELP = "compare two reports or roofline.json per op or kernel: time, DRAM bytes, bandwidth, ratios"
DESCRIPTION = """\
Compare two Nsight Compute reports (.ncu-rep, CSV pages) or two roofline.json files, per op or per
kernel: time, DRAM bytes and achieved DRAM bandwidth on each side, their ratios (B / A), and the
rows found on one side only. Kernels are matched by their short name and template signature.
With --fail-if-slower PCT, exits 1 when the total or any op present on both sides is slower in B
by more than PCT percent (a CI regression gate).

examples:
  gpuprobe diff before.ncu-rep after.ncu-rep
  gpuprobe diff b32.csv b64.csv --by kernel
  gpuprobe diff base/roofline.json new/roofline.json --fail-if-slower 5
"""
ORDER = 42


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A", help="the baseline: a report or a roofline.json")
    p.add_argument("b", metavar="B", help="the report compared with it")
    p.add_argument("--by", choices=("op", "kernel"), default="op", help="one row per op (default) or per kernel")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table format: table (default on a terminal), tsv (default when piped), csv, json")
    p.add_argument("--fail-if-slower", type=_pct, metavar="PCT", default=None,
                   help="exit 1 when the total or any op on both sides is more than PCT %% slower in B")
    p.add_argument("--rules", metavar="RULES", help="your kernel rules file (as for `gpuprobe report`)")
    p.add_argument("--batch", type=int, default=None, help="the batch to compare in a multi-batch roofline.json")


def _pct(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fail-if-slower must be a percentage, got '{text}'") from None
    if not (v >= 0 and v < 1e6):
        raise argparse.ArgumentTypeError(f"--fail-if-slower must be a percentage >= 0, got '{text}'")
    return v


def run(args: argparse.Namespace) -> int:
    from gpuprobe.run.diff import run_diff  # the readers load pandas: not when the parser is built

    return run_diff(DiffOptions(a=args.a, b=args.b, by=args.by, as_json=args.json, fmt=args.format,
                                fail_if_slower=args.fail_if_slower, rules=args.rules, batch=args.batch))
