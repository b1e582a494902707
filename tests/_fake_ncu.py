"""A stand-in ``ncu`` executable that replays real recorded Nsight Compute output (for CPU tests).

It runs the profiled command for real (so the target program is exercised), then writes a real H100
report from ``tests/fixtures/ncu`` where ncu would have written its ``--export`` file; ``--import
... --csv --page raw`` prints a real raw-page CSV capture. Nothing it prints is made up: the only ncu
lines it can print are the recorded ones in :data:`LINES` (from the ncu help/version output and from
public issue threads, see tests/test_ncu_runner.py). Every call is appended to a JSON-lines log.

Environment of the fake: ``FAKE_NCU_REP`` (report to export, ``.xz`` allowed), ``FAKE_NCU_CSV``
(CSV printed by ``--import``), ``FAKE_NCU_MODE`` (``ok`` | ``perm`` | ``nokernels``), ``FAKE_NCU_LOG``.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

#: Real ncu output lines (version banner of ncu 2025.3.1; ERR_NVGPUCTRPERM and "No kernels were
#: profiled" as recorded in public issue threads).
LINES = {
    "version": "NVIDIA (R) Nsight Compute Command Line Profiler\nCopyright (c) 2018-2025 NVIDIA Corporation\n"
               "Version 2025.3.1.0 (build 36398880) (public-release)",
    "perm": "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance "
            "Counters on the target device 0. For instructions on enabling permissions and to get more "
            "information see https://developer.nvidia.com/ERR_NVGPUCTRPERM",
    "nokernels": "==WARNING== No kernels were profiled.",
}

SCRIPT = '''#!{python}
import json, lzma, os, shutil, subprocess, sys
LINES = {lines!r}
argv = sys.argv[1:]
log = os.environ.get("FAKE_NCU_LOG")
def record(**kw):
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(dict(argv=argv, **kw)) + "\\n")
if argv[:1] in (["--version"], ["-v"]):
    print(LINES["version"]); record(); sys.exit(0)
if "--import" in argv:
    record()
    with open(os.environ["FAKE_NCU_CSV"]) as f:
        sys.stdout.write(f.read())
    sys.exit(0)
mode = os.environ.get("FAKE_NCU_MODE", "ok")
if mode == "perm":
    print(LINES["perm"]); record(); sys.exit(1)
i = argv.index("--export")
rep, cmd = argv[i + 1] + ".ncu-rep", argv[i + 2:]
rc = subprocess.call(cmd)
record(target=cmd, target_rc=rc)
if rc != 0:
    sys.exit(rc)
if mode == "nokernels":
    print(LINES["nokernels"]); sys.exit(0)
src = os.environ["FAKE_NCU_REP"]
opener = lzma.open if src.endswith(".xz") else open
with opener(src, "rb") as s, open(rep, "wb") as d:
    shutil.copyfileobj(s, d)
sys.exit(0)
'''


def install(folder: Path) -> Path:
    """Write the fake ``ncu`` into ``folder`` (put that folder first on PATH) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "ncu"
    p.write_text(SCRIPT.format(python=sys.executable, lines=LINES))
    p.chmod(p.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return p


def use(monkeypatch, folder: Path, *, rep: Path | None = None, csv: Path | None = None, mode: str = "ok") -> Path:
    """Install the fake, put it first on PATH and configure it; returns the log file."""
    from gpuprobe.ncu import ncu_report_loader

    install(folder)
    log = folder / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NCU_LOG", str(log))
    monkeypatch.setenv("FAKE_NCU_MODE", mode)
    if rep is not None:
        monkeypatch.setenv("FAKE_NCU_REP", str(rep))
    if csv is not None:
        monkeypatch.setenv("FAKE_NCU_CSV", str(csv))
    monkeypatch.setattr(ncu_report_loader, "_cached", ncu_report_loader._cached)  # restored after the test
    return log
