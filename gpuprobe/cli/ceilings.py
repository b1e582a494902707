"""`gpuprobe ceilings`: measure (or show cached) empirical ceilings of the present GPU."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.ceilings import gpu_or_raise, run_ceilings
from gpuprobe.jsonsafe import dumps
from gpuprobe.render.ceilings_table import print_ceilings
from gpuprobe.render.tables import FORMATS
from gpuprobe.specs.gpus import gpu_from_device_name

NAME = "ceilings"
HELP = "measure the GPU's empirical ceilings (DRAM, L2, shared memory, FP32, tensor) and cache them"
DESCRIPTION = """\
Runs the CUDA microbenchmarks shipped in gpuprobe/csrc (compiled at run time through NVRTC) for a
few seconds: DRAM read/write/copy bandwidth, L2 and shared-memory bandwidth, the FP32 FMA peak and
the FP16/BF16 tensor-core peak of an mma.sync kernel, plus cuBLAS and a torch device-to-device copy
measured in the same run. Prints measured / datasheet / ratio and caches the result per GPU and
driver in the user cache folder; the roofline commands then draw the measured roofs.
Without a GPU: one line saying so, exit 2."""
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refresh", action="store_true", help="measure again even when a cached result exists")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the table's format: table (default on a terminal), tsv (default when piped), csv, json")


def run(args: argparse.Namespace) -> int:
    gpu_or_raise()  # NotAvailable: one line, exit 2
    quiet = args.json

    def log(msg: str) -> None:
        if not quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    result, path, from_cache = run_ceilings(refresh=args.refresh, log=log)
    if args.json:
        d = result.to_dict()
        d["cache_file"] = str(path) if path else None
        d["from_cache"] = from_cache
        d["copy_bytes_per_s"] = result.copy_bytes_per_s
        sys.stdout.write(dumps(d, indent=2) + "\n")
    else:
        print_ceilings(result, gpu_from_device_name(result.device_name), path, from_cache, args.format)
    return 0 if result.all_verified else 1
