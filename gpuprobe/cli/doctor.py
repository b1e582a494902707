"""``gpuprobe doctor``: what works on this machine, and what to fix."""
from __future__ import annotations

import argparse
import json
import sys

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
    p.add_argument("--json", action="store_true", help="print the items as JSON")
    p.add_argument("--quick", action="store_true", help="skip the ncu run that checks counter permission")


def run(args: argparse.Namespace) -> int:
    report = doctor.collect(probe_counters=not args.quick)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif sys.stdout.isatty():
        doctor.render_rich(report)
    else:
        print(doctor.render_text(report))
    return 0
