"""Find ``nsys``, run a command under it, and export its ``.nsys-rep`` to SQLite.

``gpuprobe profile --nsys -- CMD`` runs::

    nsys profile --trace=cuda,nvtx --cuda-graph-trace=node --trace-fork-before-exec=true
                 [--capture-range=cudaProfilerApi|nvtx ...] --force-overwrite=true -o DIR/NAME CMD

(``--cuda-graph-trace=node``: each kernel a CUDA graph replays is traced as its own record, with its
``graphNodeId``, instead of one record per graph launch), then ``nsys export --type sqlite``.
"""
from __future__ import annotations

import glob
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.system.children import run_child

GET_NSYS = ("Nsight Systems is not installed (no `nsys` on PATH, in $CUDA_HOME/bin or /opt/nvidia/nsight-systems); "
            "install it (https://developer.nvidia.com/nsight-systems) or export the report where it is: "
            "`nsys export --type sqlite -o R.sqlite R.nsys-rep`, then `gpuprobe report R.sqlite`")
CAPTURE_RANGES = ("none", "cudaProfilerApi", "nvtx")


def _candidates() -> list[Path]:
    out: list[Path] = []
    w = shutil.which("nsys")
    if w:
        out.append(Path(w))
    for root in filter(None, (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"))):
        out.append(Path(root) / "bin" / "nsys")
    out += [Path(p) for p in sorted(glob.glob("/opt/nvidia/nsight-systems/*/bin/nsys"), reverse=True)]
    out += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*/bin/nsys"), reverse=True)]
    return out


def find_nsys() -> Path | None:
    """The first executable ``nsys`` on PATH, in $CUDA_HOME/bin, /opt/nvidia/nsight-systems/*/bin, /usr/local/cuda*/bin."""
    for c in _candidates():
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def require_nsys(nsys: str | Path | None = None) -> Path:
    if nsys is not None:
        p = Path(nsys)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise UserError(f"'{p}' is not an executable nsys")
        return p
    found = find_nsys()
    if found is None:
        raise NotAvailable(GET_NSYS)
    return found


def _tail(text: str, n: int = 400) -> str:
    return " ".join(text.strip().splitlines()[-3:])[-n:]


def export_sqlite(rep: str | Path, nsys: str | Path | None = None, timeout_s: float = 600) -> Path:
    """``R.nsys-rep`` -> ``R.sqlite`` beside it (reused when newer than the report)."""
    rep = Path(rep)
    if not rep.is_file():
        raise UserError(f"'{rep}': no such file")
    out = rep.with_suffix(".sqlite")
    if out.is_file() and out.stat().st_mtime >= rep.stat().st_mtime:
        return out
    try:
        exe = require_nsys(nsys)
    except NotAvailable:
        raise NotAvailable(f"'{rep}' is an Nsight Systems report and no nsys is here to export it: run "
                           f"`nsys export --type sqlite -o {out.name} {rep.name}` where nsys is installed, "
                           f"then `gpuprobe report {out.name}`") from None
    r = run_child([str(exe), "export", "--type", "sqlite", "--force-overwrite", "true", "-o", str(out), str(rep)],
                  timeout_s)
    code, text, timed_out = r.returncode, r.output, r.timed_out
    if code != 0 or not out.is_file():
        why = "timed out" if timed_out else f"exit {code}"
        raise UserError(f"nsys export of '{rep}' failed ({why}): {_tail(text)}")
    return out


def profile_command(nsys: str | Path, command: Sequence[str], out_stem: str | Path, *,
                    capture_range: str = "none", nvtx_capture: str | None = None,
                    extra_args: Sequence[str] = ()) -> list[str]:
    """The ``nsys profile`` command line that traces CUDA and NVTX, CUDA graphs node by node."""
    if capture_range not in CAPTURE_RANGES:
        raise UserError(f"--capture-range must be one of {', '.join(CAPTURE_RANGES)}, got '{capture_range}'")
    # --trace-fork-before-exec: serving engines start their GPU workers as child processes
    cmd = [str(nsys), "profile", "--trace=cuda,nvtx", "--cuda-graph-trace=node", "--trace-fork-before-exec=true",
           "--force-overwrite=true", "-o", str(out_stem)]
    if capture_range != "none":
        cmd += [f"--capture-range={capture_range}", "--capture-range-end=stop"]
        if capture_range == "nvtx":
            if not nvtx_capture:
                raise UserError("--capture-range nvtx needs --nvtx-capture RANGE (the range that starts the capture)")
            cmd += [f"--nvtx-capture={nvtx_capture}", "--env-var=NSYS_NVTX_PROFILER_REGISTER_ONLY=0"]
    return cmd + list(extra_args) + list(command)


@dataclass
class NsysRun:
    report: Path
    sqlite: Path
    command: list[str]
    seconds: float


def run_nsys(command: Sequence[str], out_stem: str | Path, *, capture_range: str = "none",
             nvtx_capture: str | None = None, timeout_s: float | None = None,
             nsys: str | Path | None = None) -> NsysRun:
    """Run ``command`` under nsys into ``out_stem.nsys-rep`` and export ``out_stem.sqlite``."""
    exe = require_nsys(nsys)
    stem = Path(out_stem)
    cmd = profile_command(exe, command, stem, capture_range=capture_range, nvtx_capture=nvtx_capture)
    t0 = time.perf_counter()
    r = run_child(cmd, timeout_s)
    code, text, timed_out = r.returncode, r.output, r.timed_out
    rep = stem.with_name(stem.name + ".nsys-rep")
    if timed_out or not rep.is_file():
        why = "timed out" if timed_out else f"exit {code}, no report written"
        raise UserError(f"nsys profile {why}: {_tail(text)}")
    return NsysRun(rep, export_sqlite(rep, exe), cmd, time.perf_counter() - t0)
