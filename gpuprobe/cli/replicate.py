"""`gpuprobe replicate`: N replicas of a model on one GPU (optionally under CUDA MPS), released together."""
from __future__ import annotations

import argparse

from gpuprobe.cli._common import (add_attention_argument, add_dtype_argument, add_model_argument, add_output_arguments,
                                  positive_float, positive_int)
from gpuprobe.errors import UserError
from gpuprobe.parsing import parse_int_sequence
from gpuprobe.run.options import ReplicateOptions
from gpuprobe.run.replicate import run_replicate
from gpuprobe.specs.gpus import normalize_dtype
from gpuprobe.specs.models import load_model_spec

NAME = "replicate"
HELP = "run N replicas of a model on one GPU together: aggregate tokens/s, latency, utilization, energy"
ORDER = 41
DESCRIPTION = """\
Start N engine processes on GPU 0, each capped to its share of memory (optionally under a private
CUDA MPS daemon that is always stopped afterwards), release their decode loops together, and
measure aggregate tokens/s, per-replica step latency, GPU utilization and memory (NVML) and energy
per token (the GPU's energy counter). A replica that fails is reported; the others' results stand.

The headline comparison (docs/advisor.md): one replica at its maximum batch against N replicas at
B_opt in the same memory, e.g.
  gpuprobe replicate --model qwen2-0.5b --replicas 1,2,4 --batch 512,128,128 [--mps]"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--replicas", default="1,2,4", help="replica counts to run, e.g. 1,2,4 (default %(default)s)")
    p.add_argument("--batch", required=True,
                   help="batch per replica: one value for every count, or one per count (e.g. 512,128,128)")
    p.add_argument("--context", type=positive_int("--context"), default=1024, help="context length (default %(default)s)")
    p.add_argument("--steps", type=positive_int("--steps"), default=64, help="at least this many decode steps (default %(default)s)")
    p.add_argument("--min-seconds", type=positive_float("--min-seconds"), default=6.0,
                   help="and at least this long, so energy is read over >= 5 s (default %(default)s)")
    p.add_argument("--mps", action="store_true", help="run the replicas under a private CUDA MPS daemon")
    p.add_argument("--memory-fraction", type=positive_float("--memory-fraction"), default=None,
                   help="cap each replica's allocator at this fraction of GPU memory (default: an equal share)")
    add_dtype_argument(p)
    add_attention_argument(p)
    add_output_arguments(p, json_help="print the runs as JSON on stdout")


def _batches(text: str, counts: list[int]) -> list[int]:
    values = parse_int_sequence(text, "batch")
    if len(values) == 1:
        return values * len(counts)
    if len(values) != len(counts):
        raise UserError(f"--batch gives {len(values)} values for {len(counts)} replica counts; give one value, "
                        "or one per count in the same order.")
    return values


def run(args: argparse.Namespace) -> int:
    load_model_spec(args.model)  # a bad name fails here, in one line
    counts = parse_int_sequence(args.replicas, "replicas")
    batches = _batches(args.batch, counts)

    return run_replicate(ReplicateOptions(
        model=args.model, counts=tuple(counts), batches=tuple(batches), context=args.context, steps=args.steps,
        min_seconds=args.min_seconds, mps=args.mps, memory_fraction=args.memory_fraction,
        dtype=normalize_dtype(args.dtype), attention=args.attention, out=args.out, fmt=args.format,
        as_json=args.json))
