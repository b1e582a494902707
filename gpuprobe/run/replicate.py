"""``gpuprobe replicate``: N replicas of a model on one GPU, released together; the runs' table on stdout,
``replicate.json`` and the Pareto figure on disk."""
from __future__ import annotations

import sys

from gpuprobe.errors import NotAvailable
from gpuprobe.jsonsafe import dumps
from gpuprobe.measure.replicas import measure_fixed_cost_bytes, replicate
from gpuprobe.paths import output_dir
from gpuprobe.render.replicate_table import config_row, print_runs
from gpuprobe.run.options import ReplicateOptions
from gpuprobe.specs.gpus import detect_gpu


def _print_progress(run) -> None:
    c = run.config
    print(f"{run.replicas} x batch {c.get('batch')}{' (MPS)' if run.mps else ''}: "
          f"{len(run.ok)}/{run.replicas} ok, {run.aggregate_tokens_per_s or 0:,.0f} tokens/s", file=sys.stderr)


def run_replicate(options: ReplicateOptions) -> int:
    """Run every replica count; the exit status (1 when a replica failed). Ctrl-C, SIGTERM and SIGHUP end
    the replicas and stop the MPS daemon (the command line turns them into KeyboardInterrupt)."""
    if detect_gpu() is None:
        raise NotAvailable("replicate runs engine processes on a CUDA GPU and this machine has none.")
    out = output_dir(options.out, "replicate")
    fixed = measure_fixed_cost_bytes()
    runs = replicate(options.model, list(options.counts), list(options.batches), context=options.context,
                     steps=options.steps, min_seconds=options.min_seconds, dtype=options.dtype,
                     attention=options.attention, mps=options.mps, memory_fraction=options.memory_fraction,
                     fixed_cost_bytes=fixed, out_dir=out, on_run=_print_progress)
    doc = {"fixed_cost_bytes": fixed, "runs": [r.to_dict() for r in runs]}
    (out / "replicate.json").write_text(dumps(doc, indent=2) + "\n")
    try:
        from gpuprobe.render.plots.pareto import plot_pareto  # matplotlib: loaded when drawing

        plot_pareto([config_row(r) for r in runs], out / "pareto.png",
                    title="replication: Pareto-optimal configurations (filled)")
    except ValueError:
        pass  # no energy figures (no NVML): nothing to plot
    if options.as_json:
        sys.stdout.write(dumps(doc) + "\n")
    else:
        print_runs(runs, options.fmt)
    print(f"wrote {out / 'replicate.json'}", file=sys.stderr)
    return 0 if all(r.ok for r in runs) else 1
