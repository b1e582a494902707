"""``gpuprobe report`` on an Nsight Systems input: the per-op (or per-kernel) time table, the decode steps,
and with ``--model`` the roofline of the trace (``roofline.json`` with mode ``nsys``, figures, report.md)."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from gpuprobe.errors import UserError
from gpuprobe.nsys.trace_roofline import trace_roofline
from gpuprobe.paths import output_dir
from gpuprobe.render.outputs import write_outputs
from gpuprobe.render.plots.roofline import plot_roofline
from gpuprobe.render.report_md import verdict_lines
from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num, fmt_text, print_roofline_table
from gpuprobe.run.plan import cached_roofs
from gpuprobe.specs.gpus import resolve_gpu
from gpuprobe.specs.models import load_model_spec

if TYPE_CHECKING:
    from gpuprobe.nsys import Trace
    from gpuprobe.run.report import ReportOptions


def _steps_or_error(trace, options: "ReportOptions") -> Any:
    """The trace's decode steps; the reason as an exception when none are found and none were asked for."""
    try:
        return trace.steps(options.step_regex, options.step_kernel)
    except UserError as e:
        if options.step_regex or options.step_kernel or options.model:
            raise
        return e


def trace_columns(by: str) -> list[Column]:
    """Per-op (or per-kernel) totals over the trace, with the median time per step where steps were found."""
    key = "op" if by == "op" else "kernel"
    return [Column(key, key, fmt=fmt_text, numeric=False, name=True, cut="middle" if by == "op" else "end"),
            Column("kernels", "kernels", "n", "kernel launches", fmt=fmt_int),
            Column("time_s", "time µs", "µs", "total time in µs", fmt=lambda x: fmt_num(x, 1e-6)),
            Column("share_pct", "share %", "%t", "share of the total time, %", fmt=fmt_num),
            Column("step_median_s", "median µs / step", "µs/st", "median time per decode step, µs",
                   fmt=lambda x: fmt_num(x, 1e-6)),
            Column("named_by", "named by", "by", "how the op was found (nvtx, rule, ...)", fmt=fmt_text,
                   numeric=False)]


def trace_rows(trace, stats, by: str) -> list[dict]:
    """One row per op (or kernel name), longest first; missing values stay None."""
    df = trace.kernels
    key = "op" if by == "op" else "kernel_short"
    g = df.groupby(key, dropna=False, observed=True).agg(
        kernels=("instances", "sum"), time_s=("time_s", lambda s: s.sum(min_count=1)),
        source=("op_source", "first")).sort_values("time_s", ascending=False)
    total = float(g["time_s"].sum())
    med = stats.op_median_s if (stats is not None and not isinstance(stats, Exception) and by == "op") else {}
    return [{("op" if by == "op" else "kernel"): str(name), "kernels": int(r["kernels"]), "time_s": r["time_s"],
             "share_pct": 100 * r["time_s"] / total if total else None, "step_median_s": med.get(name),
             "named_by": r["source"]} for name, r in g.iterrows()]


def trace_notes(trace, stats) -> list[str]:
    """The steps found, and how graph-replayed kernels were aligned."""
    df = trace.kernels
    notes = []
    if isinstance(stats, Exception):
        notes.append(f"no decode steps: {stats}")
    elif stats is not None:
        s = stats.summary
        us = lambda x: fmt_num(x, 1e-6)  # noqa: E731
        notes.append(f"{s['n_steps']} steps: kernel time per step median {us(s['kernel_time_s_median'])} µs "
                     f"(min {us(s['kernel_time_s_min'])}, max {us(s['kernel_time_s_max'])}), GPU idle inside a "
                     f"step median {us(s['idle_s_median'])} µs of {us(s['span_s_median'])} µs, "
                     f"{s['n_kernels_median']:.0f} kernels per step")
    if df.attrs.get("alignment"):
        a = df.attrs["alignment"]
        notes.append(f"aligned {sum(x['paired'] for x in a)} of {sum(x['kernels'] for x in a)} graph-replayed "
                     f"kernels ({len(a)} graph launches) with {df.attrs.get('aligned_to')}")
    return notes


def print_trace_tables(trace, stats, by: str, fmt: str | None) -> None:
    """The trace's table on stdout in ``fmt``; title and notes with the ``table`` format."""
    df = trace.kernels
    title = (f"{df.attrs.get('source')}: {int(df['instances'].sum())} kernels on "
             f"{df.attrs.get('device_name') or 'unknown GPU'} (nsys {df.attrs.get('nsys_version') or '?'}), by {by}")
    emit(trace_columns(by), trace_rows(trace, stats, by), fmt, title=title, notes=trace_notes(trace, stats))


def run_trace_report(options: "ReportOptions", trace: "Trace") -> int:
    """``gpuprobe report TRACE [--model M --batch B --context C]`` on the trace read by
    :func:`gpuprobe.reports.open_report`."""
    if trace.kernels.attrs.get("format") == "nsys-csv" and not options.step_kernel:
        stats = None
    else:
        stats = _steps_or_error(trace, options)
    if not options.model:
        if options.as_json or options.out or options.plot:
            raise UserError("a roofline from an nsys trace needs the model whose bytes and FLOPs it ran: "
                            "pass --model M (and --batch/--context unless the step ranges record them)")
        print_trace_tables(trace, stats, options.by, options.fmt)
        return 0
    return _trace_roofline(trace, stats, options)


def _trace_roofline(trace, stats, options: "ReportOptions") -> int:
    spec = load_model_spec(options.model)
    device = trace.kernels.attrs.get("device_name")
    gpu = resolve_gpu(options.gpu, device_name=device)
    measured = options.measured_dram_bytes_per_s
    result = trace_roofline(stats, spec=spec, gpu=gpu, dtype=options.dtype, batch=options.batch,
                            context=options.context, device_name=device, source=str(options.file), copy_bw=measured,
                            copy_source="--measured-dram-tbps" if measured else None,
                            extra_roofs=cached_roofs(gpu, options.dtype),
                            nsys_version=trace.kernels.attrs.get("nsys_version"))
    if options.as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_roofline_table(result, fmt=options.fmt)
    sys.stdout.flush()
    say = sys.stderr
    for line in verdict_lines(result):
        print(line, file=say)
    if result.provenance.get("limiter_note"):
        print("note: " + result.provenance["limiter_note"], file=say)
    files = write_outputs(result, output_dir(options.out, "report"))
    if options.plot:
        files["plot"] = plot_roofline(result, options.plot)
    for name in ("report", "json", "csv", "roofline", "plot"):
        if name in files:
            print(f"wrote {files[name]}", file=say)
    return 0
