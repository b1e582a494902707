"""``gpuprobe report`` on an nsys input: the per-op (or per-kernel) time table, the decode steps, and
with ``--model`` the roofline of the trace (roofline.json with mode ``nsys``, figures, report.md)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gpuprobe.errors import UserError


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``report`` takes for Nsight Systems inputs."""
    from gpuprobe.cli._common import positive_int

    g = p.add_argument_group("Nsight Systems traces (.sqlite, .sqlite.xz, .nsys-rep, nsys stats CSVs)")
    g.add_argument("--model", help="model registry name or config.json: writes the trace's roofline (mode nsys)")
    g.add_argument("--batch", type=positive_int("--batch"), help="batch size of the traced steps "
                   "(default: from the step range names, e.g. 'decode b=64 c=1024')")
    g.add_argument("--context", type=positive_int("--context"), help="context length of the traced steps "
                   "(default: from the step range names)")
    g.add_argument("--step-regex", default=None, metavar="REGEX",
                   help="NVTX range name of one decode step (default '^decode\\b')")
    g.add_argument("--step-kernel", default=None, metavar="REGEX",
                   help="cut steps at a marker kernel that ends each step instead (e.g. argmax)")
    g.add_argument("--align-eager", default=None, metavar="EAGER",
                   help="an eager NVTX-ranged trace of the same step: graph-replayed kernels take its ops")


def _fmt_us(x: float | None) -> str:
    """Seconds as microseconds: ``12.3``, ``28,350``; ``-`` when missing."""
    if x is None or x != x:
        return "-"
    us = x * 1e6
    return f"{us:,.0f}" if us >= 1000 else f"{us:.3g}"


def _steps_or_none(trace, args) -> Any:
    try:
        return trace.steps(args.step_regex, args.step_kernel)
    except UserError as e:
        if args.step_regex or args.step_kernel or args.model:
            raise
        return e


def print_tables(trace, stats, by: str) -> None:
    """Per-op (or per-kernel) totals over the trace, and per-step medians when steps were found."""
    from rich.console import Console
    from rich.table import Table

    df = trace.kernels
    con = Console(width=max(Console().width, 140))
    key = "op" if by == "op" else "kernel_short"
    g = df.groupby(key, dropna=False).agg(kernels=("instances", "sum"), time_s=("time_s", "sum"),
                                          source=("op_source", "first")).sort_values("time_s", ascending=False)
    total = float(g["time_s"].sum())
    med = stats.op_median_s if (stats is not None and not isinstance(stats, Exception) and by == "op") else {}
    t = Table(title=f"{df.attrs.get('source')}: {int(df['instances'].sum())} kernels on "
                    f"{df.attrs.get('device_name') or 'unknown GPU'} (nsys {df.attrs.get('nsys_version') or '?'}), "
                    f"by {by}", title_justify="left")
    for col, just in ((key, "left"), ("kernels", "right"), ("time µs", "right"), ("share", "right"),
                      ("median µs / step", "right"), ("named by", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for name, r in g.iterrows():
        label = str(name) if len(str(name)) <= 72 else str(name)[:71] + "…"
        t.add_row(label, str(int(r["kernels"])), _fmt_us(r["time_s"]),
                  f"{100 * r['time_s'] / total:.3g}%" if total else "-", _fmt_us(med.get(name)), str(r["source"]))
    con.print(t)
    if isinstance(stats, Exception):
        con.print(f"no decode steps: {stats}")
    elif stats is not None:
        s = stats.summary
        con.print(f"{s['n_steps']} steps: kernel time per step median {_fmt_us(s['kernel_time_s_median'])} µs "
                  f"(min {_fmt_us(s['kernel_time_s_min'])}, max {_fmt_us(s['kernel_time_s_max'])}), "
                  f"GPU idle inside a step median {_fmt_us(s['idle_s_median'])} µs of "
                  f"{_fmt_us(s['span_s_median'])} µs, {s['n_kernels_median']:.0f} kernels per step")
    if df.attrs.get("alignment"):
        a = df.attrs["alignment"]
        con.print(f"aligned {sum(x['paired'] for x in a)} of {sum(x['kernels'] for x in a)} graph-replayed kernels "
                  f"({len(a)} graph launches) with {df.attrs.get('aligned_to')}")


def run_trace_report(args: argparse.Namespace) -> int:
    """``gpuprobe report TRACE [--model M --batch B --context C]``."""
    from gpuprobe.nsys import load_trace

    trace = load_trace(args.file, align_eager=getattr(args, "align_eager", None), rules=getattr(args, "rules", None),
                       step_regex=getattr(args, "step_regex", None))
    if trace.kernels.attrs.get("format") == "nsys-csv" and not getattr(args, "step_kernel", None):
        stats = None
    else:
        stats = _steps_or_none(trace, args)
    if not getattr(args, "model", None):
        if args.json or args.out or args.plot:
            raise UserError("a roofline from an nsys trace needs the model whose bytes and FLOPs it ran: "
                            "pass --model M (and --batch/--context unless the step ranges record them)")
        print_tables(trace, stats, args.by)
        return 0
    return _roofline(trace, stats, args)


def _roofline(trace, stats, args) -> int:
    from gpuprobe.roofline.schema import _json_default
    from gpuprobe.roofline.plan import cached_roofs
    from gpuprobe.specs.gpus import DEFAULT_GPU, get_gpu, match_device_name
    from gpuprobe.specs.models import load_model_spec
    from gpuprobe.nsys.trace_roofline import trace_roofline

    spec = load_model_spec(args.model)
    device = trace.kernels.attrs.get("device_name")
    gpu = get_gpu(args.gpu) if args.gpu else (match_device_name(device) if device else None) or get_gpu(DEFAULT_GPU)
    measured = args.measured_dram_tbps * 1e12 if args.measured_dram_tbps else None
    result = trace_roofline(stats, spec=spec, gpu=gpu, dtype=args.dtype, batch=args.batch, context=args.context,
                            device_name=device, source=str(args.file), copy_bw=measured,
                            copy_source="--measured-dram-tbps" if measured else None,
                            extra_roofs=cached_roofs(gpu, args.dtype),
                            nsys_version=trace.kernels.attrs.get("nsys_version"))
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
        return 0
    from gpuprobe.cli._common import output_dir
    from gpuprobe.render.report_md import verdict_lines
    from gpuprobe.render.tables import print_roofline_table
    from gpuprobe.roofline.outputs import write_outputs

    print_tables(trace, stats, args.by)
    print_roofline_table(result)
    for line in verdict_lines(result):
        print(line)
    if result.provenance.get("limiter_note"):
        print("note: " + result.provenance["limiter_note"])
    out = output_dir(args.out, "report")
    files = write_outputs(result, out)
    if args.plot:
        from gpuprobe.render.plots.roofline import plot_roofline

        plot_roofline(result, args.plot)
    for name in ("report", "json", "csv", "roofline"):
        if name in files:
            print(f"wrote {files[name]}")
    return 0
