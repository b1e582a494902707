"""``gpuprobe doctor``: what works on this machine, and what to fix."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.jsonsafe import dumps
from gpuprobe.render.tables import Column, FORMATS, choose_format, emit, fmt_text, terminal_width
from gpuprobe.tools import doctor

NAME = "doctor"
HELP = "check this machine: packages, GPU, driver, NVML, ncu and counter permission, MPS; which modes work"
DESCRIPTION = """\
One line per item, each ok, missing or failing, with what to do when it is not ok; it ends with the
modes that work here (analytic, report, timing, ncu, replicate --mps). Runs on any machine, with or
without a GPU; the exit code is 0 whenever the checks ran, whatever they found.

Counter permission is checked by profiling a tiny kernel for one metric (a few seconds); --quick skips it.
"""
ORDER = 90


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal: one wrapped line per item), tsv (default when piped), csv, "
                        "json (a list of items)")
    p.add_argument("--quick", action="store_true", help="skip the ncu run that checks counter permission")


#: The machine formats' columns: one row per item.
COLUMNS = [Column("status", "status", numeric=False), Column("group", "group", numeric=False),
           Column("item", "item", numeric=False), Column("detail", "detail", fmt=fmt_text, numeric=False),
           Column("fix", "fix", fmt=fmt_text, numeric=False)]


def run(args: argparse.Namespace) -> int:
    report = doctor.collect(probe_counters=not args.quick)
    fmt = choose_format(args.format)
    if args.json:
        sys.stdout.write(dumps(report.to_dict(), indent=2) + "\n")
    elif fmt == "table":
        print(doctor.render_text(report, terminal_width()))
    else:
        emit(COLUMNS, doctor.report_rows(report), fmt)
    return 0
