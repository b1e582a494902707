"""`gpuprobe gpus`: the GPU registry and the GPU present, if any."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.jsonsafe import dumps
from gpuprobe.specs.gpus import detect_gpu, list_gpus
from gpuprobe.render.tables import FORMATS, Column, choose_format, emit, fmt_num, fmt_text

NAME = "gpus"
HELP = "list datasheet figures of known GPUs and detect the present one"
ORDER = 81


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (registry rows and the detected GPU)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default on a terminal), tsv (default when piped), csv, json")


def _columns():
    def num(key, header, short, legend, scale):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s))

    return [Column("gpu", "gpu", fmt=fmt_text, numeric=False, name=True),
            Column("display_name", "name", fmt=fmt_text, numeric=False),
            num("dram_bytes_per_s", "DRAM TB/s", "TB/s", "DRAM TB/s", 1e12),
            num("bf16_flops_per_s", "bf16 TFLOP/s", "bf16", "bf16 tensor TFLOP/s (dense)", 1e12),
            num("fp16_flops_per_s", "fp16 TFLOP/s", "fp16", "fp16 tensor TFLOP/s (dense)", 1e12),
            num("fp32_flops_per_s", "fp32 TFLOP/s", "fp32", "fp32 TFLOP/s", 1e12),
            num("memory_bytes", "memory GiB", "GiB", "memory as the device reports it, GiB", 2**30),
            Column("sm_count", "SMs", fmt=fmt_text),
            num("l2_bytes", "L2 MiB", "L2", "L2 cache MiB", 2**20),
            Column("ridge_bf16", "ridge bf16", "ridge", "bf16 ridge, FLOP per DRAM byte", fmt=fmt_num,
                   field="ridge_bf16_flop_per_byte")]


def run(args: argparse.Namespace) -> int:
    det = detect_gpu()
    if args.json:
        print(dumps({
            "detected": None if det is None else {"device_name": det.device_name, "memory_bytes": det.memory_bytes,
                                                  "registry": det.spec.name if det.spec else None, "via": det.via},
            "gpus": [g.to_dict() for g in list_gpus()],
        }, indent=2))
        return 0
    rows = [dict(g.to_dict(), gpu=g.name, display_name=g.display_name, ridge_bf16=g.ridge_bf16) for g in list_gpus()]
    if det is None:
        note = "detected: no GPU on this machine (NVML and torch see none)"
    else:
        reg = det.spec.name if det.spec else "not in the registry: pass --gpu NAME to the roofline"
        note = f"detected: {det.device_name} ({(det.memory_bytes or 0) / 2**30:.1f} GiB) via {det.via} -> {reg}"
    fmt = choose_format(args.format)
    emit(_columns(), rows, fmt, title="gpuprobe gpus (datasheet, dense; sources in gpuprobe/specs/gpus.py)",
         notes=[note])
    if fmt != "table":  # machine formats carry rows only: the detection goes to stderr
        print(note, file=sys.stderr)
    return 0
