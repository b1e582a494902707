"""`gpuprobe gpus`: the GPU registry and the GPU present, if any."""
from __future__ import annotations

import argparse
import json

from gpuprobe.specs.gpus import detect_gpu, list_gpus

NAME = "gpus"
HELP = "list datasheet figures of known GPUs and detect the present one"
ORDER = 81


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table


    det = detect_gpu()
    if args.json:
        print(json.dumps({
            "detected": None if det is None else {"device_name": det.device_name, "memory_bytes": det.memory_bytes,
                                                  "registry": det.spec.name if det.spec else None, "via": det.via},
            "gpus": [g.to_dict() for g in list_gpus()],
        }, indent=2))
        return 0
    t = Table(title="gpuprobe gpus (datasheet, dense; sources in gpuprobe/specs/gpus.py)")
    for col in ("gpu", "name", "DRAM TB/s", "bf16 TFLOP/s", "fp16 TFLOP/s", "fp32 TFLOP/s", "memory GB",
                "SMs", "L2 MB", "ridge bf16"):
        t.add_column(col, justify="left" if col in ("gpu", "name") else "right")
    for g in list_gpus():
        t.add_row(g.name, g.display_name, f"{g.dram_bytes_per_s / 1e12:.3g}", f"{g.bf16_flops_per_s / 1e12:.4g}",
                  f"{g.fp16_flops_per_s / 1e12:.4g}", f"{g.fp32_flops_per_s / 1e12:.3g}",
                  f"{g.memory_bytes / 1e9:.0f}", str(g.sm_count), f"{g.l2_bytes / 2**20:.0f}",
                  f"{g.ridge_bf16:.0f}")
    con = Console()
    con.print(t)
    if det is None:
        con.print("detected: no GPU on this machine (NVML and torch see none)")
    else:
        reg = det.spec.name if det.spec else "not in the registry: pass --gpu NAME to the roofline"
        con.print(f"detected: {det.device_name} ({(det.memory_bytes or 0) / 2**30:.0f} GiB) via {det.via} -> {reg}")
    return 0
