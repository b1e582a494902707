"""``gpuprobe diff A B``: two reports (or two roofline.json) side by side, per op or per kernel."""
from __future__ import annotations

import argparse
import sys

NAME = "diff"
HELP = "compare two reports or roofline.json per op or kernel: time, DRAM bytes, bandwidth, ratios"
DESCRIPTION = """\
Compare two Nsight Compute reports (.ncu-rep, CSV pages) or two roofline.json files, per op or per
kernel: time, DRAM bytes and achieved DRAM bandwidth on each side, their ratios (B / A), and the
rows found on one side only. Kernels are matched by their short name and template signature.
With --fail-if-slower PCT, exits 1 when the total or any op present on both sides is slower in B
by more than PCT percent (a CI regression gate).

examples:
  gpuprobe diff before.ncu-rep after.ncu-rep
  gpuprobe diff b32.csv b64.csv --by kernel
  gpuprobe diff base/roofline.json new/roofline.json --fail-if-slower 5
"""
ORDER = 42


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gpuprobe.render.tables import FORMATS

    p.add_argument("a", metavar="A", help="the baseline: a report or a roofline.json")
    p.add_argument("b", metavar="B", help="the report compared with it")
    p.add_argument("--by", choices=("op", "kernel"), default="op", help="one row per op (default) or per kernel")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table format: table (default on a terminal), tsv (default when piped), csv, json")
    p.add_argument("--fail-if-slower", type=_pct, metavar="PCT", default=None,
                   help="exit 1 when the total or any op on both sides is more than PCT %% slower in B")
    p.add_argument("--rules", metavar="RULES", help="your kernel rules file (as for `gpuprobe report`)")
    p.add_argument("--batch", type=int, default=None, help="the batch to compare in a multi-batch roofline.json")


def _pct(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fail-if-slower must be a percentage, got '{text}'") from None
    if not (v >= 0 and v < 1e6):
        raise argparse.ArgumentTypeError(f"--fail-if-slower must be a percentage >= 0, got '{text}'")
    return v


def diff_columns(by: str) -> list:
    from gpuprobe.render.tables import Column, fmt_int, fmt_num, fmt_text

    def num(key, header, short, legend, scale=1.0):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s))

    cols = [Column("key", by, fmt=fmt_text, numeric=False, name=True, cut="middle" if by == "op" else "end")]
    if by == "kernel":
        cols.append(Column("op", "op", fmt=lambda x: "other" if str(x).startswith("other:") else fmt_text(x),
                           numeric=False))
    cols += [
        Column("n_a", "kernels A", "nA", "kernels in A", fmt=fmt_int),
        Column("n_b", "kernels B", "nB", "kernels in B", fmt=fmt_int),
        num("time_a", "time A µs", "tA", "time in A, µs", 1e-6),
        num("time_b", "time B µs", "tB", "time in B, µs", 1e-6),
        num("time_ratio", "time B/A", "t×", "time ratio B/A"),
        num("time_change_pct", "Δtime %", "Δ%", "how much slower B is, %"),
        num("dram_a", "DRAM A MB", "dA", "DRAM MB in A", 1e6), num("dram_b", "DRAM B MB", "dB", "DRAM MB in B", 1e6),
        num("dram_ratio", "DRAM B/A", "d×", "DRAM bytes ratio B/A"),
        num("bw_a", "BW A TB/s", "bwA", "achieved DRAM TB/s in A", 1e12),
        num("bw_b", "BW B TB/s", "bwB", "achieved DRAM TB/s in B", 1e12),
        num("bw_ratio", "BW B/A", "bw×", "bandwidth ratio B/A"),
        Column("only", "only in", "in", "row found only in A or only in B", fmt=fmt_text, numeric=False),
    ]
    return cols


def run(args: argparse.Namespace) -> int:
    from gpuprobe.diff import compare, diff_json, side_table, slower_than
    from gpuprobe.render.tables import emit

    a = side_table(args.a, args.by, rules=args.rules, batch=args.batch)
    b = side_table(args.b, args.by, rules=args.rules, batch=args.batch)
    for w in a.notes + b.notes:
        print(f"warning: {w}", file=sys.stderr)
    d = compare(a, b)
    slower = slower_than(d, args.fail_if_slower) if args.fail_if_slower is not None else []
    if args.json:
        sys.stdout.write(diff_json(d, args.fail_if_slower) + "\n")
    else:
        notes = [f"A = {a.source}" + (f" ({a.gpu})" if a.gpu else ""),
                 f"B = {b.source}" + (f" ({b.gpu})" if b.gpu else ""),
                 "ratios are B / A; '-' = missing on a side, or a ratio of a missing or zero value"]
        la = set(a.table["layers_profiled"].dropna()) if args.by == "op" else set()
        lb = set(b.table["layers_profiled"].dropna()) if args.by == "op" else set()
        if la and lb and la != lb:
            notes.append(f"A profiled {'/'.join(str(int(x)) for x in sorted(la))} layer(s) per op, B "
                         f"{'/'.join(str(int(x)) for x in sorted(lb))}: times are sums over the layers profiled")
        emit(diff_columns(args.by), d.rows + [d.total], args.format,
             title=f"diff by {args.by}: {len(d.rows)} rows", notes=notes)
    if slower:
        worst = ", ".join(f"{k if len(k) <= 60 else k[:59] + '…'} +{v:.1f}%" for k, v in slower[:5])
        if len(slower) > 5:
            worst += f" and {len(slower) - 5} more"
        print(f"gpuprobe diff: slower than {args.fail_if_slower:g}% in B: {worst}", file=sys.stderr)
        return 1
    return 0
