"""``gpuprobe throughput``: decode tokens/s, step latency and memory per batch size."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.cli._common import (add_attention_argument, add_batch_argument, add_context_argument,
                                  add_dtype_argument, add_kernels_argument, add_model_argument, check_context,
                                  positive_float, positive_int)
from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.jsonsafe import dumps
from gpuprobe.measure.throughput import sweep_throughput
from gpuprobe.parsing import parse_int_list
from gpuprobe.paths import output_dir
from gpuprobe.render.plots.throughput import series
from gpuprobe.render.tables import FORMATS, Column, emit, fmt_num, fmt_text
from gpuprobe.render.throughput import write_results
from gpuprobe.specs.gpus import normalize_dtype
from gpuprobe.specs.models import load_model_spec

NAME = "throughput"
HELP = "decode tokens/s, step latency p50/p90 and memory per batch size (CUDA graphs or eager)"
DESCRIPTION = """\
Measure decode throughput of a model (random weights, or a local HF folder's) at one context length
over batch sizes. Each batch runs in its own process: a batch that does not fit is recorded as
out of memory and the sweep goes on. Every step runs at the given context (random KV fill), timed
with CUDA events; tokens/s = batch / median step time.

Writes throughput.csv, throughput.json, results.jsonl and throughput.png to --out.

  gpuprobe throughput --model qwen2-0.5b --batch 1,8,64,256 --context 1024 --steps 64
  gpuprobe throughput --model qwen2-0.5b --batch 1-512 --eager --out runs/eager
  gpuprobe throughput --model qwen2-0.5b --batch 1,8,64 --kernels unfused   # PyTorch elementwise ops
  gpuprobe throughput --model qwen2-0.5b --batch 1,8,64 --compile   # the torch.compile-fused step
  gpuprobe throughput --resume runs/eager          # finish an interrupted sweep
"""
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, required=False)
    add_batch_argument(p, default="1,8,64,256")
    add_context_argument(p)
    p.add_argument("--steps", type=positive_int("--steps"), default=64, help="timed steps per batch (default %(default)s)")
    p.add_argument("--warmup", type=positive_int("--warmup"), default=8, help="untimed steps first (default %(default)s)")
    add_attention_argument(p)
    add_dtype_argument(p)
    add_kernels_argument(p)
    p.add_argument("--eager", action="store_true", help="eager steps instead of CUDA-graph replay")
    p.add_argument("--compile", action="store_true",
                   help="fuse the step with torch.compile (inductor, no cudagraphs of its own) before capture; "
                        "compiling takes tens of seconds per batch size")
    p.add_argument("--out", default=None, help="output folder (default ./gpuprobe-out/throughput-TIME)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the sweep in DIR: batches already measured there are skipped")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default), or cpu: for tiny models and tests only (eager, no graphs)")
    p.add_argument("--page-size", type=positive_int("--page-size"), default=16, help="KV page size in tokens")
    p.add_argument("--json", action="store_true", help="print the rows (and the run's settings) as JSON to stdout")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the table's format: table (default on a terminal), tsv (default when piped), csv, json")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and KV fill")
    p.add_argument("--timeout", type=positive_float("--timeout"), default=900.0,
                   help="seconds allowed per batch (default %(default)s)")
    p.add_argument("--inline", action="store_true",
                   help="run batches in this process (faster start; an out-of-memory batch is still recorded)")


def run(args: argparse.Namespace) -> int:
    import torch

    from gpuprobe.engine.attention import default_attention

    if args.device == "cuda" and not torch.cuda.is_available():
        raise NotAvailable("throughput needs a CUDA GPU and none is visible; `gpuprobe roofline` works "
                           "analytically without one (and --device cpu runs tiny models on the CPU, eager).")
    spec = load_model_spec(args.model)  # an unknown model is a one-line error here, not one per batch
    batches = parse_int_list(args.batch, "batch")
    context = check_context(args.context, spec, args.beyond_max_context)
    dtype = normalize_dtype(args.dtype)
    attention = args.attention or default_attention(torch.device(args.device))
    if args.compile and args.kernels == "fused":
        raise UserError("--compile fuses the unfused PyTorch step with torch.compile; drop --kernels fused "
                        "(or use --kernels unfused).")
    out = output_dir(args.resume or args.out, "throughput")
    graphs = not args.eager and args.device == "cuda"
    rows = sweep_throughput(args.model, batches, context, out, dtype=dtype, attention=attention, steps=args.steps,
                            warmup=args.warmup, graphs=graphs, compile=args.compile, seed=args.seed,
                            device=args.device, page_size=args.page_size, resume=bool(args.resume),
                            timeout_s=args.timeout, isolate=not args.inline, name=spec.name,
                            kernel_mode=args.kernels)
    meta = {"model": spec.name, "context": context, "dtype": dtype, "attention": attention,
            "mode": "graph" if graphs else "eager", "compiled": args.compile, "kernels": args.kernels, "steps": args.steps,
            "warmup": args.warmup}
    paths = write_results(rows, out, meta)
    if args.json:
        print(dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        _print_table(rows, args.format)
    print(f"wrote {paths['csv']}, {paths['json']}, {paths['png']}, {out / 'results.jsonl'}", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in rows) else 1


def _columns():
    def num(key, header, short, legend, scale):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s))

    return [Column("batch", "batch", fmt=fmt_text),
            Column("series", "mode", fmt=fmt_text, numeric=False, field="mode"),
            num("tokens_per_s", "tokens/s", "tok/s", "tokens per second", 1),
            num("step_latency_s", "step p50 ms", "p50", "step latency p50, ms", 1e-3),
            num("step_latency_p90_s", "step p90 ms", "p90", "step latency p90, ms", 1e-3),
            num("weights_bytes", "weights GB", "wGB", "weights, GB", 1e9),
            num("kv_cache_bytes", "KV cache GB", "kvGB", "KV cache, GB", 1e9),
            num("peak_memory_bytes", "peak GB", "pkGB", "peak memory, GB", 1e9),
            Column("status", "status", fmt=fmt_text, numeric=False, name=True)]


def _print_table(rows: list[dict], fmt: str | None = None) -> None:
    shown = [dict(r, series=series(r), status=r["status"] if r["status"] == "ok"
                  else f"{r['status']}: {r['reason'] or ''}") for r in rows]
    emit(_columns(), shown, fmt, title="decode throughput")
