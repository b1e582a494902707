"""`gpuprobe advise`: the batching configuration advisor (B_opt, memory freed, replicas that fit)."""
from __future__ import annotations

import argparse

from gpuprobe.advise.advisor import (DEFAULT_EPSILON, DEFAULT_FIXED_COST_BYTES, PAPER_LATENCY_FACTOR,
                                     PAPER_MIN_EFFICIENCY, PAPER_REFERENCE_BATCH, RULES)
from gpuprobe.cli._common import (add_attention_argument, add_dtype_argument, add_output_arguments, positive_float,
                                  positive_int)
from gpuprobe.errors import UserError
from gpuprobe.run.advise import run_advise
from gpuprobe.run.options import AdviseOptions, DEFAULT_BATCHES
from gpuprobe.specs.gpus import normalize_dtype

NAME = "advise"
HELP = "recommend a batch size (B_opt) from a throughput curve, and the memory and replicas it frees"
ORDER = 40
DESCRIPTION = """\
Measure tokens/s against batch in CUDA-graph mode (or read --from a CSV or a results folder) and
recommend B_opt, then report the KV cache at B_opt against the largest batch, the memory freed,
how many replicas of the model fit, and the equivalent serving-engine settings.

Rules (docs/advisor.md):
  default   the smallest batch within --epsilon (a fraction) of the best sustained tokens/s, under
            --latency-slo-ms; a lone outlier can neither set the bar nor be chosen
  paper     the published advisor script of "Mind the Memory Gap": E(B) = T(B)/(B*T(B_1)) above
            --min-efficiency, latency at most --latency-factor x the latency at the batch nearest
            --reference-batch, B_opt = the largest batch passing both
  marginal  the same rule as paper (the script's 'dT_dB' is a scaling efficiency)

--from accepts: a CSV with batch,tokens_per_s[,step_latency_s,memory_bytes]; a folder written by
`gpuprobe throughput` (throughput.csv or results.jsonl); a folder with roofline.json whose
`throughput` section holds tokens/s per batch."""

MEASURE_BATCHES = ",".join(map(str, DEFAULT_BATCHES))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="registry name or folder with config.json (needed to measure; with --from it adds "
                        "analytic weight and KV sizes)")
    p.add_argument("--context", type=positive_int("--context"), default=None,
                   help="context length in tokens (default 1024 when measuring; with --from, the file's)")
    p.add_argument("--from", dest="from_path", metavar="FILE",
                   help="read the curve instead of measuring: CSV, or a throughput/roofline results folder")
    p.add_argument("--rule", choices=RULES, default="default",
                   help="how to choose B_opt (default: %(default)s; marginal = paper)")
    p.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON,
                   help="default rule: tolerated shortfall from the best tokens/s, a fraction (default %(default)s)")
    p.add_argument("--latency-slo-ms", type=positive_float("--latency-slo-ms"), default=None,
                   help="only batches whose step latency is at most this many milliseconds")
    p.add_argument("--min-efficiency", type=float, default=PAPER_MIN_EFFICIENCY,
                   help="paper rule: E(B) must exceed this (default %(default)s)")
    p.add_argument("--latency-factor", type=positive_float("--latency-factor"), default=PAPER_LATENCY_FACTOR,
                   help="paper rule: latency limit as a multiple of the reference latency (default %(default)s)")
    p.add_argument("--reference-batch", type=positive_int("--reference-batch"), default=PAPER_REFERENCE_BATCH,
                   help="paper rule: the reference latency is at the measured batch nearest this (default %(default)s)")
    p.add_argument("--batch", default=MEASURE_BATCHES, help="batches to measure (default %(default)s)")
    p.add_argument("--gpu", help="GPU registry name for its memory (default: the detected GPU)")
    p.add_argument("--fixed-cost-mib", type=positive_float("--fixed-cost-mib"), default=None,
                   help="per-replica memory beyond weights and KV cache (default: measured on a GPU, else "
                        f"{DEFAULT_FIXED_COST_BYTES // 2**20})")
    add_dtype_argument(p)
    add_attention_argument(p)
    add_output_arguments(p, json_help="print the advice as one JSON object on stdout",
                         out_help="output folder for advice.json and advise.png (default: a new folder under "
                                  "./gpuprobe-out/)")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.epsilon < 1:
        raise UserError(f"--epsilon is a fraction of the best throughput (0 <= epsilon < 1), got {args.epsilon}.")
    if args.min_efficiency < 0:
        raise UserError(f"--min-efficiency must be >= 0, got {args.min_efficiency}.")

    return run_advise(AdviseOptions(
        model=args.model, from_path=args.from_path, context=args.context, rule=args.rule, epsilon=args.epsilon,
        latency_slo_s=args.latency_slo_ms / 1e3 if args.latency_slo_ms else None,
        min_efficiency=args.min_efficiency, latency_factor=args.latency_factor,
        reference_batch=args.reference_batch, batches=args.batch, gpu=args.gpu,
        fixed_cost_bytes=int(args.fixed_cost_mib * 2**20) if args.fixed_cost_mib is not None else None,
        dtype=normalize_dtype(args.dtype), attention=args.attention, out=args.out, fmt=args.format,
        as_json=args.json))
