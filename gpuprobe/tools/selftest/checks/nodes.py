"""Selftest checks of the GPU-node tooling: the doctor, and the pytest tests marked ``gpu``."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from gpuprobe.system.children import end_tree, start_child
from gpuprobe.tools import doctor as doc
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check
import gpuprobe

#: Environment variable naming the tests folder for ``gpu_tests`` (e.g. a checkout beside an installed gpuprobe).
TESTS_ENV = "GPUPROBE_TESTS"


@check("doctor", owner="gpu_nodes", gpu=False, budget_s=90, estimate_s=25)
def doctor(ctx: CheckContext) -> dict[str, Any]:
    """`gpuprobe doctor` runs to the end here; figures are the status of every item.

    Takes ~10 s for the imports (torch, triton, cupy) and `nvidia-smi`, and with ``--gpu`` the run's
    one counter-permission probe (a tiny kernel profiled for one metric, ~15 s), which the ncu
    checks reuse (:mod:`gpuprobe.tools.selftest.counters`)."""

    report = doc.collect(probe_counters=bool(ctx.gpu), counter_timeout_s=max(15.0, min(60.0, ctx.budget_s - 30.0)))
    (ctx.out_dir / "doctor.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (ctx.out_dir / "doctor.txt").write_text(doc.render_text(report) + "\n")
    counts = report.counts()
    modes = [m for m, ok in report.modes.items() if ok]
    return {**counts, "modes": "/".join(modes) or "none", **report.statuses()}


def find_tests_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The project's tests folder (one holding conftest.py): ``explicit`` alone when given, else
    $GPUPROBE_TESTS alone when set, else the folder beside the gpuprobe package, else ./tests."""

    if explicit or os.environ.get(TESTS_ENV):
        candidates = [Path(explicit or os.environ[TESTS_ENV])]
    else:
        candidates = [Path(gpuprobe.__file__).resolve().parent.parent / "tests", Path.cwd() / "tests"]
    return next((c.resolve() for c in candidates if (c / "conftest.py").is_file()), None)


def files_with_gpu_tests(tests: Path) -> list[Path]:
    """The test files under ``tests`` that mark tests ``gpu`` (``pytest.mark.gpu``, ``pytestmark``)."""
    out = []
    for f in sorted(tests.rglob("test_*.py")):
        try:
            if re.search(r"mark\.gpu\b", f.read_text(errors="replace")):
                out.append(f)
        except OSError:
            continue
    return out


def count_junit(path: Path) -> dict[str, Any]:
    """passed/failed/errors/skipped and the failing test ids from a pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing: list[str] = []
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if "failure" in tags:
            counts["failed"] += 1
            failing.append(test_id)
        elif "error" in tags:
            counts["errors"] += 1
            failing.append(test_id)
        elif "skipped" in tags:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {**counts, "failing": failing}


def count_terminal(text: str) -> dict[str, int]:
    """The counts from pytest's last summary line ('3 passed, 1 failed, 2 skipped in 4.1s')."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    lines = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|errors|skipped)\b", ln)]
    for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", lines[-1] if lines else ""):
        counts["errors" if word.startswith("error") else word] += int(n)
    return counts


@check("gpu_tests", owner="gpu_nodes", gpu=True, budget_s=180, estimate_s=120)
def gpu_tests(ctx: CheckContext) -> dict[str, Any]:
    """The project's pytest tests marked `gpu` pass on this GPU."""
    tests = find_tests_dir(ctx.options.get("tests_dir"))
    if tests is None:
        raise Skip(f"no tests folder here (an installed gpuprobe has none): run from a source checkout, "
                   f"or set {TESTS_ENV}=/path/to/gpuprobe/tests")
    if importlib.util.find_spec("pytest") is None:
        raise Skip("pytest is not installed")
    junit = ctx.out_dir / "junit.xml"
    log = ctx.out_dir / "pytest.txt"
    timeout = max(10.0, ctx.budget_s - 15.0)
    files = files_with_gpu_tests(tests)
    if not files:
        raise Skip(f"no test marked gpu under {tests}")
    # Only the files that mark tests `gpu` are collected: collecting the whole folder costs time and
    # imports test modules whose optional packages (notebooks...) a GPU node need not have.
    cmd = [sys.executable, "-m", "pytest", *map(str, files), "-m", "gpu", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--rootdir={tests.parent}", f"--junitxml={junit}"]
    ctx.log(f"running: {' '.join(cmd)} (cwd {tests.parent}, {timeout:.0f} s)")
    with open(log, "w") as out:
        proc = start_child(cmd, cwd=tests.parent, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            end_tree(proc, grace_s=3.0)
            figures = count_terminal(log.read_text(errors="replace"))
            raise CheckFailed(f"the gpu tests ran past {timeout:.0f} s and were stopped", figures) from None
        except BaseException:  # stopped by the runner: pytest and what it started go too
            end_tree(proc, grace_s=3.0)
            raise
    text = log.read_text(errors="replace")
    if code == 5:
        raise Skip(f"no test marked gpu was collected under {tests}")
    if junit.is_file():
        counts = count_junit(junit)
    else:
        counts = {**count_terminal(text), "failing": []}
    failing = counts.pop("failing")
    figures: dict[str, Any] = {**counts, "exit_code": code}
    if counts["failed"] or counts["errors"] or code not in (0, 5):
        tail = "; ".join(failing[:3]) or (text.strip().splitlines() or ["no output"])[-1]
        raise CheckFailed(f"{counts['failed']} failed, {counts['errors']} errors (pytest exit {code}): {tail}",
                          figures)
    if not counts["passed"] and counts["skipped"]:  # this check only runs where CUDA is: none should skip all
        raise CheckFailed(f"all {counts['skipped']} gpu-marked tests skipped on a CUDA machine: see pytest.txt",
                          figures)
    return figures
