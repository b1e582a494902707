"""``gpuprobe advise``: a throughput curve (read, or measured here) -> the advisor's choice of B_opt, the
memory it frees and the replicas that fit; the table on stdout, ``advice.json`` and the figures on disk."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

from gpuprobe.advise import advisor
from gpuprobe.advise.curves import Curve, load_curve, with_meta
from gpuprobe.errors import UserError, lookup_or_none
from gpuprobe.jsonsafe import dumps
from gpuprobe.measure.replicas import measure_fixed_cost_bytes
from gpuprobe.measure.throughput import sweep_throughput
from gpuprobe.parsing import parse_int_list
from gpuprobe.paths import output_dir
from gpuprobe.render.advice_table import advice_summary, print_advice
from gpuprobe.render.plots.advisor import plot_advice
from gpuprobe.render.plots.pareto import plot_pareto
from gpuprobe.render.tables import choose_format
from gpuprobe.render.throughput import write_results
from gpuprobe.run.options import AdviseOptions
from gpuprobe.run.plan import gpu_and_device
from gpuprobe.specs.gpus import get_gpu
from gpuprobe.specs.models import load_model_spec


def measure_curve(model: str, batches: str | Iterable[int], context: int, dtype: str, attention: str | None,
                  out: str | Path) -> Curve:
    """Tokens/s and memory against batch, measured now: the engine's throughput sweep in CUDA-graph mode
    (:func:`gpuprobe.measure.throughput.sweep_throughput`) into ``out/throughput`` (its CSV, JSON,
    figure and ``results.jsonl``, as ``gpuprobe throughput`` writes them); returns the curve."""
    wanted = parse_int_list(batches, "batch") if isinstance(batches, str) else sorted(set(batches))
    folder = Path(out) / "throughput"
    folder.mkdir(parents=True, exist_ok=True)
    rows = sweep_throughput(model, wanted, context, folder, dtype=dtype, attention=attention)
    write_results(rows, folder, {"model": model, "context": context, "dtype": dtype, "attention": attention,
                                 "mode": "graph"})
    return load_curve(folder, context=context, model=model)


def _gpu_memory(name: str | None, detected) -> tuple[str | None, int | None]:
    """(name, memory bytes): ``--gpu`` wins, else the GPU on this machine, else unknown."""
    if name:
        g = get_gpu(name)
        return g.display_name, g.memory_bytes
    if detected is not None:
        return detected.device_name, detected.memory_bytes
    return None, None


def _registry_memory(name: str) -> tuple[str | None, int | None]:
    g = lookup_or_none(get_gpu, name)
    return (None, None) if g is None else (g.display_name, g.memory_bytes)


def _fixed_cost(options: AdviseOptions, detected) -> tuple[int | None, str]:
    if options.fixed_cost_bytes is not None:
        return options.fixed_cost_bytes, "given"
    if detected is None:
        return None, "default"
    got = measure_fixed_cost_bytes()
    return (got, "measured") if got is not None else (None, "default")


def _maybe_pareto(curve, out) -> None:
    """With joules per token in the curve, the Pareto figure of its batches too."""
    if not curve.has("joules_per_token"):
        return

    lat, _ = curve.latencies()
    configs = [{"label": f"B={p.batch}", "tokens_per_s": p.tokens_per_s, "joules_per_token": p.joules_per_token,
                "step_latency_s": l} for p, l in zip(curve.points, lat)]
    plot_pareto(configs, out / "pareto.png")


def run_advise(options: AdviseOptions) -> int:
    """Advise; the exit status (1 when no batch passes the rule, with the reason on stderr)."""
    spec = load_model_spec(options.model) if options.model else None
    _, detected = gpu_and_device(options.gpu)
    gpu_name, gpu_bytes = _gpu_memory(options.gpu, detected)
    if options.from_path:
        curve = load_curve(options.from_path)
        out = output_dir(options.out, "advise")
    else:
        if spec is None:
            raise UserError("give --model to measure (e.g. --model qwen2-0.5b), or --from FILE to read a curve.")
        if detected is None:
            raise UserError("no GPU on this machine to measure on; pass --from FILE (a CSV with "
                            "batch,tokens_per_s or a `gpuprobe throughput` results folder).")
        out = output_dir(options.out, "advise")
        curve = measure_curve(options.model, options.batches, options.context or 1024, options.dtype,
                              options.attention, out)
    if spec is None and curve.model:
        spec = lookup_or_none(load_model_spec, curve.model)
    curve = with_meta(curve, model=spec.name if spec is not None else None, context=options.context)
    if gpu_bytes is None and curve.gpu:
        gpu_name, gpu_bytes = _registry_memory(curve.gpu)
    fixed, fixed_src = _fixed_cost(options, detected)
    adv = advisor.advise(
        curve, options.rule, epsilon=options.epsilon, latency_slo_s=options.latency_slo_s,
        min_efficiency=options.min_efficiency, latency_factor=options.latency_factor,
        reference_batch=options.reference_batch, spec=spec, context=options.context or curve.context,
        dtype=options.dtype if (spec is not None and not curve.dtype) else curve.dtype,
        gpu_memory_bytes=gpu_bytes, gpu_name=gpu_name, fixed_cost_bytes=fixed, fixed_cost_source=fixed_src)
    doc = adv.to_json()
    (out / "advice.json").write_text(dumps(doc, indent=2) + "\n")

    png = plot_advice(adv, out / "advise.png")
    _maybe_pareto(curve, out)
    if options.as_json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        print_advice(adv, options.fmt)
        if choose_format(options.fmt) != "table":  # the machine formats carry the rows; the summary goes aside
            for line in advice_summary(adv):
                print(line, file=sys.stderr)
    print(f"wrote {out / 'advice.json'} and {png}", file=sys.stderr)
    if adv.choice.b_opt is None:
        print(f"gpuprobe advise: no batch passes the {adv.choice.rule} rule: "
              f"{adv.choice.reason or 'see the verdicts above'}", file=sys.stderr)
        return 1
    return 0
