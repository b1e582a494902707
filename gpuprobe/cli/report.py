"""``gpuprobe report FILE``: the per-op (or per-kernel) counter roofline of any Nsight Compute report."""
from __future__ import annotations

import argparse
import math
import sys

from gpuprobe.jsonsafe import dumps
from gpuprobe.render.plots.style import check_figure_path

NAME = "report"
HELP = "read an Nsight Compute report or an Nsight Systems trace: per-op table, roofline.json, plot"
DESCRIPTION = """\
Read a report made by `gpuprobe profile` or by anyone's ncu run (.ncu-rep, .ncu-rep.xz, or a CSV
page from `ncu --import R.ncu-rep --csv --page raw [--print-units base]`), attribute each kernel to
an op by its NVTX ranges, and print FLOPs, DRAM bytes, intensity, achieved rates, % of peak and the
limiter class per op. Needs no GPU and no Nsight Compute install.

examples:
  gpuprobe report decode.ncu-rep
  gpuprobe report decode.csv --by kernel
  gpuprobe report decode.ncu-rep --json > roofline.json
  gpuprobe report decode.ncu-rep --plot roofline.png --gpu h100-sxm

Nsight Systems traces (.sqlite, .sqlite.xz, .nsys-rep, nsys stats CSVs; docs/nsys.md): per-op time of
each decode step, CUDA graphs included; with --model, the trace's roofline (mode nsys):
  gpuprobe report decode.sqlite
  gpuprobe report decode.sqlite --model qwen2-0.5b --batch 64 --context 1024 --out rep
  gpuprobe report graphs.sqlite --align-eager eager.sqlite --step-kernel argmax
"""
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gpuprobe.cli._common import positive_float
    from gpuprobe.render.tables import FORMATS

    p.add_argument("file", metavar="FILE", help=".ncu-rep, .ncu-rep.xz, an ncu CSV page (raw or details), "
                   "or an nsys .sqlite/.nsys-rep/stats CSV")
    p.add_argument("--by", choices=("op", "kernel"), default="op", help="one row per op (default) or per kernel")
    p.add_argument("--json", action="store_true", help="print roofline.json (mode 'ncu') to stdout instead of a table")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table format: table (default on a terminal), tsv (default when piped), csv, json (the rows)")
    p.add_argument("--plot", metavar="PNG", help="write the roofline figure here")
    p.add_argument("--out", metavar="DIR", help="also write roofline.json and roofline.csv into DIR")
    p.add_argument("--gpu", help="GPU registry name for datasheet roofs (default: from the report's device name)")
    p.add_argument("--dtype", default="bf16", help="dtype whose tensor roof `bound` uses (default %(default)s)")
    p.add_argument("--measured-dram-tbps", type=positive_float("--measured-dram-tbps"), metavar="TB/s",
                   help="measured copy bandwidth in TB/s: adds the measured DRAM roof and dram_pct_of_measured")
    p.add_argument("--rules", metavar="RULES",
                   help="your kernel rules file (CSV: pattern,op,example,engine), matched before the built-in table "
                        "for kernels outside NVTX op ranges")
    from gpuprobe.cli._nsys_report import add_trace_arguments

    add_trace_arguments(p)


def _time_cell(p) -> str:
    from gpuprobe.render.tables import fmt_num

    text = fmt_num(p.get("time_s"), 1e-6)
    return text + "*" if p.get("time_derived") and text != "-" else text


def report_columns(by: str) -> list:
    """The columns of the report table, per op or per kernel (rows are roofline points as dicts)."""
    from gpuprobe.render.tables import Column, fmt_num, fmt_text

    def num(key, header, short, legend, scale=1.0):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s))

    cols = []
    if by == "kernel":
        cols += [Column("kernel_id", "id", fmt=fmt_text),
                 Column("kernel", "kernel", fmt=fmt_text, numeric=False, name=True),
                 Column("kernel_op", "op", fmt=fmt_text, numeric=False)]
    else:
        cols += [Column("op", "op", fmt=fmt_text, numeric=False, name=True, cut="middle"),
                 Column("n_kernels", "kernels", "n", "kernels", fmt=fmt_text)]
    cols += [
        Column("time_row", "time µs", "µs", "time in µs (* derived from SM cycles / SM clock)", fmt=fmt_text,
               raw_key="time_s"),
        num("share_pct", "share %", "%t", "share of the total time, %"),
        num("flops", "GFLOP", "GF", "GFLOP executed", 1e9),
        num("dram_read_bytes", "DRAM rd MB", "rdMB", "DRAM MB read", 1e6),
        num("dram_write_bytes", "DRAM wr MB", "wrMB", "DRAM MB written", 1e6),
        num("intensity", "FLOP/B", "F/B", "FLOP per DRAM byte"),
        num("flops_per_s", "TFLOP/s", "TF/s", "achieved TFLOP/s", 1e12),
        num("bytes_per_s", "DRAM TB/s", "TB/s", "achieved DRAM TB/s", 1e12),
        num("dram_pct_of_ncu_peak", "DRAM %pk", "D%", "DRAM % of ncu's peak"),
        num("sm_pct", "SM %", "S%", "SM throughput % of peak"),
        num("tensor_pct", "tensor %", "T%", "tensor pipe % of peak"),
        Column("limiter", "limiter", "lim", "limiter (memory, compute, latency)", fmt=fmt_text, numeric=False),
    ]
    return cols


def report_rows(result) -> list[dict]:
    """Roofline points as row dicts with the derived figures the table shows (missing stays None)."""
    import math

    times = [p.time_s for p in result.points]
    known = all(t is not None and math.isfinite(t) for t in times)
    total = sum(times) if known and times else None
    rows = []
    for p in result.points:
        d = p.to_dict()
        t = p.time_s if p.time_s is not None and math.isfinite(p.time_s) else None
        d["time_row"] = _time_cell(d)
        if str(d.get("kernel_op", "")).startswith("other:"):
            d["kernel_op"] = "other"  # the kernel column already names it
        d["share_pct"] = t / total * 100.0 if t is not None and total else None
        d["flops_per_s"] = p.flops / t if t and p.flops is not None else None
        d["bytes_per_s"] = p.dram_bytes / t if t and p.dram_bytes is not None else None
        rows.append(d)
    return rows


def roofs_line(result) -> str:
    """Which roofs the result knows and which two ``bound`` uses, with their sources."""
    def val(r):
        return (f"{r.value / 1e12:.3g} TB/s" if r.kind == "memory" else f"{r.value / 1e12:.4g} TFLOP/s")

    known = ", ".join(f"{r.name} {val(r)} ({r.source})" for r in result.roofs) or "none"
    c = result.ceilings
    used = ("none: no bound" if c is None else
            f"DRAM {c.dram_bytes_per_s / 1e12:.3g} TB/s ({c.dram_source}), {c.compute_roof} "
            f"{c.flops_per_s / 1e12:.4g} TFLOP/s ({c.compute_source})")
    return f"roofs: {known}. bound uses: {used}"


def run(args: argparse.Namespace) -> int:
    from gpuprobe.errors import UserError
    from gpuprobe.ncu import load_report
    from gpuprobe.ncu.counter_roofline import report_to_roofline
    from gpuprobe.nsys import is_nsys_input
    from gpuprobe.render.tables import emit
    from gpuprobe.roofline.schema import LIMITER_RULE

    if args.plot:
        check_figure_path(args.plot)
    if is_nsys_input(args.file):
        from gpuprobe.cli._nsys_report import run_trace_report

        return run_trace_report(args)
    df = load_report(args.file, rules=args.rules)
    for w in df.attrs.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    measured = args.measured_dram_tbps * 1e12 if args.measured_dram_tbps else None
    result = report_to_roofline(df, gpu=args.gpu, dtype=args.dtype, measured_dram_bytes_per_s=measured,
                                by=args.by)
    if args.plot and result.ceilings is None:
        raise UserError(f"cannot plot '{args.file}': {result.provenance.get('ceilings_note')}")
    if args.out:
        from gpuprobe.cli._common import output_dir

        result.write(output_dir(args.out, "report"))
    if args.plot:
        plot_result(result, args.plot)
    if args.json:
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
    emit(report_columns(args.by), report_rows(result), args.format,
         title=f"{args.file}: {len(df)} kernels on {device}, by {args.by}", notes=notes)
    return 0


def plot_result(result, path) -> None:
    """The roofline figure; points whose counters are missing are named on it, not placed."""
    from gpuprobe.render.plots.roofline import plot_roofline

    plot_roofline(result, path)
