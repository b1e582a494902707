"""``gpuprobe selftest``: check every GPU-side claim of gpuprobe in one short run, and keep the evidence."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from gpuprobe.errors import UserError
from gpuprobe.tools.selftest import runner
from gpuprobe.tools.selftest.plan import make_plan, render_plan
from gpuprobe.tools.selftest.registry import EXTRA
from gpuprobe.tools.selftest.runner import DEFAULT_BUDGET_S, EXIT_NO_GPU_VERDICT, install_stop_handlers

NAME = "selftest"
HELP = "run the registered checks (CPU ones; with --gpu every GPU-side claim) and write summary + evidence"
DESCRIPTION = """\
Each check runs in its own process with its own time budget; a check that fails, crashes or runs
over its own budget is recorded and the run goes on. A check starts only when its estimate fits in
what is left of the total budget (else it is skipped, "not enough budget left"); a check still running
when the budget runs out, or when the run is stopped (Ctrl-C, SIGTERM), is skipped with that reason.
Without --gpu (or without CUDA) the GPU checks are listed as skipped with the reason. The output folder
gets summary.md, summary.json and evidence.tar.gz (at most 16 MiB), also when the run is stopped.
--plan prints the order, each check's estimate and the total against --budget-s, and runs nothing.

Exit code: 0 when no check failed, 1 when one did, 3 with --gpu when GPU checks were asked for and none
got a verdict (no usable GPU), 130 after Ctrl-C, 143 after SIGTERM, 2 on bad arguments.
"""
ORDER = 95


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="run the GPU checks too (needs CUDA)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default ./gpuprobe-out/selftest-<timestamp>)")
    p.add_argument("--budget-s", default=f"{DEFAULT_BUDGET_S:g}", metavar="S",
                   help="total seconds for the run (and for --plan); a check starts only when its estimate fits in "
                        f"what is left (default {DEFAULT_BUDGET_S:g}: scripts/device_selftest.sh's in a 7-minute slot)")
    p.add_argument("--check", nargs="+", action="extend", default=None, metavar="NAME",
                   help="run only these checks, the extra ones too (see --list or --plan)")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--plan", action="store_true",
                   help="print the run order, each check's estimate and the total; run nothing")
    p.add_argument("--gpu-name", default=None, metavar="GPU",
                   help="with --plan: the GPU to plan for (a registry name, e.g. h200; default: the GPU here)")
    p.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UserError(f"--budget-s must be a positive number of seconds, got '{text}'.")
    return value


def _out_dir(out: str | None) -> Path:
    path = Path(out) if out else Path("gpuprobe-out") / f"selftest-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder '{path}': {e.strerror or e}; pass a writable --out.") \
            from None
    return path


def _list(checks: dict, errors: dict[str, str]) -> None:
    width = max(len(n) for n in checks)
    print(f"{'check':<{width}}  kind  estimate  budget  description")
    for name, chk in checks.items():
        extra = " (extra: run with --check)" if name in EXTRA else ""
        if chk is None:
            print(f"{name:<{width}}  {'':<4}  {'':>8}  {'':>6}  not built{extra}")
        else:
            kind = "gpu" if chk.gpu else "cpu"
            print(f"{name:<{width}}  {kind:<4}  {chk.estimate():>7.0f}s  {chk.budget_s:>5.0f}s  "
                  f"{chk.description}{extra}")
    for module, error in errors.items():
        print(f"(checks module {module} does not import: {error})")


def _plan_gpu(name: str | None) -> str | None:
    """The registry name to plan for: ``--gpu-name``, else the GPU here (None: the default class)."""
    from gpuprobe.specs.gpus import detect_gpu, get_gpu

    if name:
        return get_gpu(name).name  # unknown: one line listing how to see the known ones
    det = detect_gpu()
    return det.spec.name if det is not None and det.spec is not None else None


def _print_plan(args: argparse.Namespace, checks: dict, budget: float) -> None:
    plan = make_plan(checks, _plan_gpu(args.gpu_name), budget, args.check)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render_plan(plan))


def _interrupt_on_term() -> None:
    """SIGTERM (a batch system's or a watchdog's stop), SIGHUP and Ctrl-C stop the run: the check in
    flight is stopped and skipped, the summary of what ran and the evidence are written
    (:func:`gpuprobe.tools.selftest.runner.install_stop_handlers`)."""
    install_stop_handlers()


#: Exit status of a run stopped by a signal: 128 + its number, as a shell reports it.
_STOP_EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def run(args: argparse.Namespace) -> int:
    _interrupt_on_term()
    checks, errors = runner.discover_checks()
    if args.list:
        _list(checks, errors)
        return 0
    budget = _budget(args.budget_s)
    runner.select(checks, args.check)  # unknown names fail before anything is written
    if args.plan:
        _print_plan(args, checks, budget)
        return 0
    if args.gpu_name or args.json:
        raise UserError("--gpu-name and --json go with --plan; a run finds its GPU itself.")
    out = _out_dir(args.out)
    command = " ".join(["gpuprobe selftest", *(["--gpu"] if args.gpu else []), "--out", str(out),
                        "--budget-s", f"{budget:g}", *(["--check", *args.check] if args.check else [])])
    mode = "CPU and GPU checks" if args.gpu else "CPU checks (GPU checks are skipped without --gpu)"
    print(f"gpuprobe selftest: {mode}; total budget {budget:.0f} s; output in {out}", flush=True)
    run_ = runner.run_selftest(out, names=args.check, gpu=args.gpu, budget_s=budget,
                               progress=lambda line: print(line, flush=True), command=command)
    c = run_.counts()
    no_verdict = run_.no_gpu_verdict()
    print(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped in {run_.wall_s:.0f} s"
          + (f"; NO GPU VERDICT: {no_verdict}" if no_verdict else "")
          + f"; summary: {os.path.join(out, 'summary.md')}; evidence: {os.path.join(out, 'evidence.tar.gz')}")
    if run_.interrupted:
        print(f"gpuprobe selftest: stopped ({run_.stop_signal}); the summary holds what ran", file=sys.stderr)
        return _STOP_EXIT.get(run_.stop_signal or "SIGINT", 130)
    if no_verdict:
        print(f"gpuprobe selftest: --gpu, but {no_verdict}", file=sys.stderr)
        return EXIT_NO_GPU_VERDICT
    return 1 if c["failed"] else 0
