"""When an ncu filter matched nothing: which NVTX ranges does the program open? (one cheap second run)

Above both :mod:`gpuprobe.ncu.runner` (runs ncu) and :mod:`gpuprobe.ncu.readers` (reads its report), so
that neither imports the other's layer: :func:`run_ncu_with_diagnosis` is :func:`gpuprobe.ncu.runner.run_ncu` with
this diagnosis plugged in, the one ``gpuprobe profile`` uses.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gpuprobe.errors import GpuprobeError
from gpuprobe.ncu import runner
from gpuprobe.ncu.readers import read_report


def seen_nvtx_stacks(command: list[str], ncu: runner.NcuInstall, timeout_s: float | None = None,
                     launch_count: int = runner.SEEN_LAUNCHES) -> list[tuple[str, ...]]:
    """Distinct NVTX push/pop stacks around the first ``launch_count`` kernels (one cheap metric).

    Runs the whole command once more under ncu: a program that launches many kernels before its
    annotated part (warm-up steps) shows none of its ranges here; callers that know their ranges use
    :func:`gpuprobe.ncu.runner.run_ncu` (no second run) instead."""
    with tempfile.TemporaryDirectory(prefix="gpuprobe-nvtx-") as tmp:
        rep = Path(tmp) / "seen.ncu-rep"
        cmd = [str(ncu.path), "--target-processes", "all", "--nvtx", "--metrics", "gpu__time_duration.sum",
               "--launch-count", str(launch_count), "--force-overwrite", "--export", str(rep)[:-8]] + list(command)
        runner._run(cmd, timeout_s)
        if not rep.exists():
            return []
        try:
            df = read_report(rep)
        except GpuprobeError:
            return []
    return list(dict.fromkeys(tuple(s) for s in df["nvtx_stack"]))


def run_ncu_with_diagnosis(command: list[str], out_rep: str | Path, metric_set: str = "roofline",
                           **kw: Any) -> runner.ProfileResult:
    """:func:`gpuprobe.ncu.runner.run_ncu` that, when the filter matched nothing, names the NVTX stacks
    the program opened (:func:`seen_nvtx_stacks`)."""
    return runner.run_ncu(command, out_rep, metric_set, diagnose=lambda *a, **k: seen_nvtx_stacks(*a, **k), **kw)
