"""`gpuprobe advise`: the batching configuration advisor (B_opt, memory freed, replicas that fit)."""
from __future__ import annotations

import argparse
import json
import sys

from gpuprobe.advise import advisor
from gpuprobe.advise.advisor import (DEFAULT_EPSILON, DEFAULT_FIXED_COST_BYTES, PAPER_LATENCY_FACTOR,
                                     PAPER_MIN_EFFICIENCY, PAPER_REFERENCE_BATCH, RULES)
from gpuprobe.advise.curves import load_curve, measure_curve, with_meta
from gpuprobe.cli._common import (DEFAULT_BATCHES, add_attention_argument, add_dtype_argument, output_dir,
                                  positive_float, positive_int)
from gpuprobe.errors import UserError
from gpuprobe.measure.replicas import measure_fixed_cost_bytes
from gpuprobe.specs.gpus import detect_gpu, get_gpu
from gpuprobe.specs.models import load_model_spec

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
    p.add_argument("--json", action="store_true", help="print the advice as one JSON object on stdout")
    p.add_argument("--out", help="output folder for advice.json and advise.png (default: a new folder under ./gpuprobe-out/)")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.epsilon < 1:
        raise UserError(f"--epsilon is a fraction of the best throughput (0 <= epsilon < 1), got {args.epsilon}.")
    if args.min_efficiency < 0:
        raise UserError(f"--min-efficiency must be >= 0, got {args.min_efficiency}.")
    spec = _spec(args.model) if args.model else None
    gpu_name, gpu_bytes, detected = _gpu_memory(args.gpu)
    if args.from_path:
        curve = load_curve(args.from_path)
        out = output_dir(args.out, "advise")
    else:
        if spec is None:
            raise UserError("give --model to measure (e.g. --model qwen2-0.5b), or --from FILE to read a curve.")
        if detected is None:
            raise UserError("no GPU on this machine to measure on; pass --from FILE (a CSV with "
                            "batch,tokens_per_s or a `gpuprobe throughput` results folder).")
        out = output_dir(args.out, "advise")
        curve = measure_curve(args.model, args.batch, args.context or 1024, args.dtype, args.attention, out)
    if spec is None and curve.model:
        spec = _spec(curve.model, quiet=True)

    curve = with_meta(curve, model=spec.name if spec is not None else None, context=args.context)
    if gpu_bytes is None and curve.gpu:
        gpu_name, gpu_bytes = _registry_memory(curve.gpu)
    context = args.context or curve.context
    if args.fixed_cost_mib is not None:
        fixed, fixed_src = int(args.fixed_cost_mib * 2**20), "given"
    else:
        fixed, fixed_src = _measured_fixed_cost(detected)
    adv = advisor.advise(
        curve, args.rule, epsilon=args.epsilon,
        latency_slo_s=args.latency_slo_ms / 1e3 if args.latency_slo_ms else None,
        min_efficiency=args.min_efficiency, latency_factor=args.latency_factor,
        reference_batch=args.reference_batch, spec=spec, context=context,
        dtype=args.dtype if (spec is not None and not curve.dtype) else curve.dtype,
        gpu_memory_bytes=gpu_bytes, gpu_name=gpu_name, fixed_cost_bytes=fixed, fixed_cost_source=fixed_src)
    doc = adv.to_json()
    (out / "advice.json").write_text(json.dumps(doc, indent=2, default=str))
    from gpuprobe.render.plots.advisor import plot_advice

    png = plot_advice(adv, out / "advise.png")
    _maybe_pareto(curve, out)
    if args.json:
        print(json.dumps(doc, default=str))
        print(f"wrote {out / 'advice.json'} and {png}", file=sys.stderr)
    else:
        print_advice(adv)
        print(f"\nwrote {out / 'advice.json'} and {png}")
    if adv.choice.b_opt is None:
        print(f"gpuprobe advise: no batch passes the {adv.choice.rule} rule: "
              f"{adv.choice.reason or 'see the verdicts above'}", file=sys.stderr)
        return 1
    return 0


def _spec(name: str, quiet: bool = False):
    try:
        return load_model_spec(name)
    except UserError:
        if quiet:
            return None
        raise


def _registry_memory(name: str):
    try:
        g = get_gpu(name)
    except UserError:
        return None, None
    return g.display_name, g.memory_bytes


def _gpu_memory(name: str | None):
    """(name, memory bytes, detected GPU or None): --gpu wins, else the GPU on this machine."""
    det = detect_gpu()
    if name:
        g = get_gpu(name)
        return g.display_name, g.memory_bytes, det
    if det is not None:
        return det.device_name, det.memory_bytes, det
    return None, None, None


def _measured_fixed_cost(detected):
    if detected is None:
        return None, "default"

    got = measure_fixed_cost_bytes()
    return (got, "measured") if got is not None else (None, "default")


def _maybe_pareto(curve, out) -> None:
    """With joules per token in the curve, the Pareto figure of its batches too."""
    if not curve.has("joules_per_token"):
        return
    from gpuprobe.render.plots.pareto import plot_pareto

    lat, _ = curve.latencies()
    configs = [{"label": f"B={p.batch}", "tokens_per_s": p.tokens_per_s, "joules_per_token": p.joules_per_token,
                "step_latency_s": l} for p, l in zip(curve.points, lat)]
    plot_pareto(configs, out / "pareto.png")


def _gib(v) -> str:
    """Bytes as GiB, or MiB below 1 GiB, with the unit."""
    if v is None:
        return "-"
    return f"{v / 2**30:.2f} GiB" if abs(v) >= 2**30 else f"{v / 2**20:.1f} MiB"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def print_advice(adv) -> None:
    """The advisor's table and summary, for a terminal."""
    from rich.console import Console
    from rich.table import Table

    c, m, curve = adv.choice, adv.memory, adv.curve
    con = Console()
    t = Table(title=f"{curve.model or 'curve'} from {curve.source}" if curve.source else None)
    for col in ("batch", "tokens/s", "% of best", "step ms" + (" (derived)" if c.latency_source == "derived" else "")):
        t.add_column(col, justify="right")
    if c.rule == "paper":
        t.add_column("E(B)", justify="right")
    t.add_column("KV cache", justify="right")
    if curve.has("memory_bytes"):
        t.add_column("peak memory", justify="right")
    t.add_column("verdict")
    for v in c.verdicts:
        row = [str(v.batch), _rate(v.tokens_per_s), f"{v.tokens_per_s / c.best_tokens_per_s:.1%}",
               f"{v.latency_s * 1e3:.2f}"]
        if c.rule == "paper":
            row.append(f"{v.efficiency:.3f}")
        row.append(_gib(m.kv_bytes_by_batch.get(v.batch)))
        if curve.has("memory_bytes"):
            row.append(_gib(curve.point(v.batch).memory_bytes))
        row.append(_verdict(v, c))
        t.add_row(*row, style="bold green" if v.chosen else None)
    con.print(t)
    if c.b_opt is None:
        con.print(f"[bold red]No B_opt:[/] {c.reason}")
    else:
        con.print(f"[bold]B_opt = {c.b_opt}[/] ({c.rule} rule): {_rate(c.tokens_per_s_at_b_opt)} tokens/s, "
                  f"{c.tokens_per_s_at_b_opt / c.best_tokens_per_s:.1%} of the best measured "
                  f"({_rate(c.best_tokens_per_s)} at batch {c.best_batch}).")
        if m.kv_bytes_at_b_opt is not None:
            con.print(f"KV cache at B_opt x context {m.context}: {_gib(m.kv_bytes_at_b_opt)} "
                      f"against {_gib(m.kv_bytes_at_largest)} at batch {m.largest_batch} ({m.kv_source}).")
        if m.memory_freed_bytes is not None:
            con.print(f"Memory freed: {_gib(m.memory_freed_bytes)} ({m.memory_freed_basis.replace('_', ' ')}).")
        if m.replicas_that_fit is not None:
            con.print(f"Replicas that fit in {m.gpu_name or 'the GPU'} ({_gib(m.gpu_memory_bytes)}) at B_opt: "
                      f"[bold]{m.replicas_that_fit}[/] (each {_gib(m.replica_bytes)} incl. "
                      f"{_gib(m.fixed_cost_bytes)} fixed cost, {m.fixed_cost_source}); "
                      f"at batch {m.largest_batch}: {m.replicas_at_largest}.")
        if m.serving:
            con.print(f"Serving-engine settings: {m.serving['max_concurrent_sequences']} concurrent sequences, "
                      f"memory fraction {m.serving['gpu_memory_fraction']:.2f} (vLLM: {m.serving['vllm_flags']}).")
    for note in c.notes + m.notes + curve.notes:
        con.print(f"note: {note}")
    for s in curve.skipped:
        con.print(f"note: batch {s['batch']} was not measured ({s['status']}{': ' + s['reason'] if s.get('reason') else ''})")
    for miss in m.missing:
        if miss != "b_opt":
            con.print(f"[dim]not reported, input lacks: {miss}[/]")


def _verdict(v, c) -> str:
    if v.chosen:
        return "B_opt"
    bits = []
    if v.outlier:
        bits.append("outlier")
    if not v.meets_slo:
        bits.append("over SLO")
    if c.rule == "paper":
        if v.efficiency is not None and not v.efficiency > c.params["min_efficiency"]:
            bits.append("E too low")
        if v.within_latency_limit is False:
            bits.append("over latency limit")
    elif not bits and not v.passes:
        bits.append("below bar")
    return ", ".join(bits) or ("passes" if v.passes else "")
