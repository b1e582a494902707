#!/usr/bin/env python3
"""Speed of the instrument: the default measured roofline sweep, and `ncu --set full` over one whole step.

Times ``python -m gpuprobe roofline --model M`` (default batches, ncu mode when available) end to end
and, with ``--full``, one ``ncu --set full`` run over a whole eager decode step (every layer) at
``--full-batch``, the way a user without gpuprobe would profile it; prints a table (target: the
default sweep of qwen2-0.5b under 3 minutes on an H100).

    python benchmarks/roofline_sweep.py                       # the default sweep only
    python benchmarks/roofline_sweep.py --full --full-timeout 900
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuprobe.errors import NotAvailable
from gpuprobe.measure.point import target_command
from gpuprobe.ncu import load_ncu_report
from gpuprobe.ncu.runner import NcuError, run_ncu
from gpuprobe.run.script import run_script
from gpuprobe.specs.gpus import detect_gpu

TARGET_S = 180.0


def time_sweep(model: str, context: int, mode: str, batch: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "gpuprobe", "roofline", "--model", model, "--context", str(context),
           "--mode", mode, "--out", str(out)]
    if batch:
        cmd += ["--batch", batch]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"what": f"gpuprobe roofline ({mode})", "command": " ".join(cmd[1:]), "wall_s": wall, "rc": r.returncode}
    if r.returncode != 0:
        row["error"] = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        return row
    data = json.loads((out / "roofline.json").read_text())
    kernels = sum(p.get("n_kernels") or 0 for p in data["points"])
    row.update(mode=data["mode"], points=len(data["batch"] or []), kernels=kernels,
               failed=len(data.get("failed_points", [])))
    return row


def time_full(model: str, batch: int, context: int, timeout_s: float, out: Path) -> dict:
    cmd = target_command(model, batch, context, "bf16", None, "all", 3)
    t0 = time.perf_counter()
    row = {"what": f"ncu --set full, whole step, batch {batch}", "command": "ncu --set full --nvtx-include decode/ "
           + " ".join(cmd[1:])}
    try:
        res = run_ncu(cmd, out / "full.ncu-rep", metric_set="roofline", nvtx_include=["decode/"],
                      extra_args=["--set", "full"], timeout_s=timeout_s)
        row.update(wall_s=time.perf_counter() - t0, rc=0, kernels=len(load_ncu_report(res.report)))
    except NcuError as e:
        row.update(wall_s=time.perf_counter() - t0, rc=1, error=str(e).splitlines()[:1],
                   note=f"stopped at the {timeout_s:g} s limit" if "ran past" in str(e) else None)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2-0.5b")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--mode", default="auto", choices=("auto", "ncu", "timing"))
    p.add_argument("--batch", default=None, help="batch list (default: the CLI's default sweep)")
    p.add_argument("--full", action="store_true", help="also time `ncu --set full` over one whole decode step")
    p.add_argument("--full-batch", type=int, default=64)
    p.add_argument("--full-timeout", type=float, default=900.0)
    p.add_argument("--keep", help="keep the outputs in this folder")
    args = p.parse_args(argv)
    if detect_gpu() is None:
        raise NotAvailable("this benchmark times the measured roofline sweep and needs a CUDA GPU; "
                           "`gpuprobe roofline` runs analytically without one.")
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpuprobe-bench-"))
    rows = [time_sweep(args.model, args.context, args.mode, args.batch, base / "sweep")]
    if args.full:
        rows.append(time_full(args.model, args.full_batch, args.context, args.full_timeout, base / "full"))
    print(f"\n{'what':48} {'wall s':>8} {'kernels':>8}  note")
    for r in rows:
        note = r.get("error") or r.get("note") or ""
        if "points" in r:
            note = f"{r['points']} points ({r['failed']} failed), mode {r['mode']}; " + (
                "within" if r["wall_s"] <= TARGET_S else "OVER") + f" the {TARGET_S:.0f} s target"
        print(f"{r['what']:48} {r['wall_s']:8.1f} {r.get('kernels', ''):>8}  {note}")
    if len(rows) == 2 and rows[0].get("rc") == 0 and rows[1].get("wall_s"):
        print(f"\nthe default sweep took {rows[0]['wall_s']:.0f} s for {rows[0].get('points')} batch sizes; one "
              f"`--set full` run over one step took {rows[1]['wall_s']:.0f} s"
              + (" (stopped, so at least that)" if rows[1].get("rc") else ""))
    print(json.dumps(rows, indent=1, default=str))
    return 0 if rows[0].get("rc") == 0 else 1


if __name__ == "__main__":
    run_script(main)
