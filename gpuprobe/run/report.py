"""``gpuprobe report FILE``: any report or trace, read through :func:`gpuprobe.reports.open_report`'s
dispatcher, to its per-op (or per-kernel) table, ``roofline.json`` and figure.

Nsight Compute inputs (``.ncu-rep``, CSV pages) become a counter roofline (mode ``ncu``); Nsight Systems
inputs (``.sqlite``, ``.nsys-rep``, stats CSVs) go to :mod:`gpuprobe.run.trace_report`, which adds the
decode steps and, with a model, the trace's roofline (mode ``nsys``).
"""
from __future__ import annotations

import sys

from gpuprobe.errors import UserError
from gpuprobe.jsonsafe import dumps
from gpuprobe.ncu.counter_roofline import report_to_roofline
from gpuprobe.paths import output_dir, require_writable_dir, require_writable_file
from gpuprobe.render.plots.roofline import plot_roofline
from gpuprobe.render.plots.style import check_figure_path
from gpuprobe.render.report_tables import report_columns, report_rows, roofs_line
from gpuprobe.render.tables import emit
from gpuprobe.reports import open_report
from gpuprobe.roofline.schema import LIMITER_RULE
from gpuprobe.run.options import ReportOptions
from gpuprobe.run.trace_report import run_trace_report


def run_report(options: ReportOptions) -> int:
    """Read the report, print its table (or ``roofline.json``), write what was asked; the exit status."""
    if options.plot:
        check_figure_path(options.plot)
        require_writable_file(options.plot, "--plot")
    if options.out:
        require_writable_dir(options.out, "--out")
    report = open_report(options.file, rules=options.rules, align_eager=options.align_eager,
                         step_regex=options.step_regex)
    if report.trace is not None:
        return run_trace_report(options, report.trace)
    df = report.kernels
    for w in df.attrs.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    result = report_to_roofline(df, gpu=options.gpu, dtype=options.dtype,
                                measured_dram_bytes_per_s=options.measured_dram_bytes_per_s, by=options.by)
    if options.plot and result.ceilings is None:
        raise UserError(f"cannot plot '{options.file}': {result.provenance.get('ceilings_note')}")
    if options.out:
        for path in result.write(output_dir(options.out, "report")):
            print(f"wrote {path}", file=sys.stderr)
    if options.plot:
        print(f"wrote {plot_roofline(result, options.plot)}", file=sys.stderr)
    if options.as_json:
        sys.stdout.write(dumps(result.to_dict(), indent=2) + "\n")
        return 0
    device = df.attrs.get("device_name") or (result.gpu if result.gpu != "unknown" else "a GPU it does not name")
    notes = [roofs_line(result),
             f"limiter: memory if DRAM >= {LIMITER_RULE['threshold_pct']:.0f}% of peak, compute if SM or tensor >= "
             f"{LIMITER_RULE['threshold_pct']:.0f}%, else latency; '-' = not in this report"]
    if result.provenance.get("ceilings_note"):
        notes.append("note: " + result.provenance["ceilings_note"])
    notes += [f"derived: {d}" for d in df.attrs.get("derived", [])]
    missing = df.attrs.get("missing") or []
    if missing:
        notes.append(f"not in this report: {', '.join(missing)}")
    emit(report_columns(options.by), report_rows(result), options.fmt,
         title=f"{options.file}: {len(df)} kernels on {device}, by {options.by}", notes=notes)
    return 0
