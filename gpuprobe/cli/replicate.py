"""`gpuprobe replicate`: N replicas of a model on one GPU (optionally under CUDA MPS), released together."""
from __future__ import annotations

import argparse
import json
import signal
import sys

from gpuprobe.cli._common import (add_attention_argument, add_dtype_argument, add_model_argument, output_dir,
                                  parse_int_list, positive_float, positive_int)
from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.measure.replicas import measure_fixed_cost_bytes, replicate
from gpuprobe.specs.gpus import detect_gpu
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
    p.add_argument("--json", action="store_true", help="print the runs as JSON on stdout")
    p.add_argument("--out", help="output folder (default: a new folder under ./gpuprobe-out/)")


def _batches(text: str, counts: list[int]) -> list[int]:
    values = [int(x) for x in parse_int_list_keep_order(text)]
    if len(values) == 1:
        return values * len(counts)
    if len(values) != len(counts):
        raise UserError(f"--batch gives {len(values)} values for {len(counts)} replica counts; give one value, "
                        "or one per count in the same order.")
    return values


def parse_int_list_keep_order(text: str) -> list[int]:
    """'512,128,128' -> [512, 128, 128] (order and repeats kept; validated like every int list)."""
    parts = [p.strip() for p in str(text).split(",")]
    for p in parts:
        parse_int_list(p, "batch")
    return [int(p) for p in parts]


def run(args: argparse.Namespace) -> int:
    load_model_spec(args.model)  # a bad name fails here, in one line
    counts = parse_int_list_keep_order(args.replicas)
    batches = _batches(args.batch, counts)
    if detect_gpu() is None:
        raise NotAvailable("replicate runs engine processes on a CUDA GPU and this machine has none.")
    out = output_dir(args.out, "replicate")

    def _term(signum, frame):  # a killed run still ends its children and stops MPS
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        fixed = measure_fixed_cost_bytes()
        runs = replicate(args.model, counts, batches, context=args.context, steps=args.steps,
                         min_seconds=args.min_seconds, dtype=args.dtype, attention=args.attention, mps=args.mps,
                         memory_fraction=args.memory_fraction, fixed_cost_bytes=fixed, out_dir=out,
                         on_run=None if args.json else _print_progress)
    finally:
        signal.signal(signal.SIGTERM, old)
    docs = [r.to_dict() for r in runs]
    (out / "replicate.json").write_text(json.dumps({"fixed_cost_bytes": fixed, "runs": docs}, indent=2, default=str))
    configs = [config_row(r) for r in runs]
    try:
        from gpuprobe.render.plots.pareto import plot_pareto

        plot_pareto(configs, out / "pareto.png", title="replication: Pareto-optimal configurations (filled)")
    except ValueError:
        pass  # no energy figures (no NVML): nothing to plot
    if args.json:
        print(json.dumps({"fixed_cost_bytes": fixed, "runs": docs}, default=str))
    else:
        print_runs(runs)
        print(f"\nwrote {out / 'replicate.json'}")
    return 0 if all(r.ok for r in runs) else 1


def config_row(r) -> dict:
    """One run as a Pareto configuration: label, tokens/s, joules per token, step latency (replicas' mean p50)."""
    lat = [x.result.get("step_latency_p50_s", x.result.get("step_latency_mean_s")) for x in r.ok if x.result]
    lat = [x for x in lat if x is not None]
    return {"label": f"{r.replicas}x B={r.config.get('batch')}{' mps' if r.mps else ''}",
            "tokens_per_s": r.aggregate_tokens_per_s, "joules_per_token": r.joules_per_token,
            "step_latency_s": sum(lat) / len(lat) if lat else None}


def _print_progress(run) -> None:
    c = run.config
    print(f"{run.replicas} x batch {c.get('batch')}{' (MPS)' if run.mps else ''}: "
          f"{len(run.ok)}/{run.replicas} ok, "
          f"{run.aggregate_tokens_per_s or 0:,.0f} tokens/s", file=sys.stderr)


def print_runs(runs) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="replicas on one GPU, released together")
    for col in ("replicas", "batch", "MPS", "ok", "tokens/s (all)", "step ms (p50)", "GPU util %",
                "mem used GiB", "J/token", "throttled"):
        t.add_column(col, justify="right")
    for r in runs:
        row = config_row(r)
        tel = r.telemetry or {}
        t.add_row(str(r.replicas), str(r.config.get("batch")), "yes" if r.mps else "no", f"{len(r.ok)}/{r.replicas}",
                  _f(r.aggregate_tokens_per_s, "{:,.0f}"), _f(row["step_latency_s"], "{:.2f}", 1e3),
                  _f(tel.get("gpu_util_pct_mean"), "{:.0f}"), _f(tel.get("memory_used_bytes_max"), "{:.1f}", 2**-30),
                  _f(r.joules_per_token, "{:.4f}"), ", ".join(tel.get("throttle_reasons") or []) or "no")
    con = Console()
    con.print(t)
    base = runs[0] if runs and runs[0].replicas == 1 and runs[0].aggregate_tokens_per_s else None
    for r in runs[1:] if base else []:
        if r.aggregate_tokens_per_s:
            con.print(f"{r.replicas} replicas at batch {r.config.get('batch')}: "
                      f"{r.aggregate_tokens_per_s / base.aggregate_tokens_per_s:.2f}x the tokens/s of 1 replica "
                      f"at batch {base.config.get('batch')}")
    for r in runs:
        for f in r.failed:
            con.print(f"[red]replica {f.index} of {r.replicas} x batch {r.config.get('batch')} failed:[/] {f.reason}")
        if r.telemetry and not r.telemetry.get("available", True):
            con.print(f"note: no NVML readings ({r.telemetry.get('reason')})")


def _f(v, fmt: str, scale: float = 1.0) -> str:
    return "-" if v is None else fmt.format(v * scale)
