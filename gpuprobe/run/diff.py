"""``gpuprobe diff A B``: two reports or ``roofline.json`` files side by side, and a regression gate."""
from __future__ import annotations

import sys

from gpuprobe.diff import compare, diff_json, side_table, slower_than
from gpuprobe.render.diff_table import diff_columns
from gpuprobe.render.tables import emit
from gpuprobe.run.options import DiffOptions


def run_diff(options: DiffOptions) -> int:
    """Compare, print the table (or the JSON), and gate on ``fail_if_slower``; the exit status."""
    a = side_table(options.a, options.by, rules=options.rules, batch=options.batch)
    b = side_table(options.b, options.by, rules=options.rules, batch=options.batch)
    for w in a.notes + b.notes:
        print(f"warning: {w}", file=sys.stderr)
    d = compare(a, b)
    for w in getattr(d, "warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    slower = slower_than(d, options.fail_if_slower) if options.fail_if_slower is not None else []
    if options.as_json:
        sys.stdout.write(diff_json(d, options.fail_if_slower) + "\n")
    else:
        notes = [f"A = {a.source}" + (f" ({a.gpu})" if a.gpu else ""),
                 f"B = {b.source}" + (f" ({b.gpu})" if b.gpu else ""),
                 "ratios are B / A; '-' = missing on a side, or a ratio of a missing or zero value"]
        la = set(a.table["layers_profiled"].dropna()) if options.by == "op" else set()
        lb = set(b.table["layers_profiled"].dropna()) if options.by == "op" else set()
        if la and lb and la != lb:
            notes.append(f"A profiled {'/'.join(str(int(x)) for x in sorted(la))} layer(s) per op, B "
                         f"{'/'.join(str(int(x)) for x in sorted(lb))}: times are sums over the layers profiled")
        emit(diff_columns(options.by), d.rows + [d.total], options.fmt,
             title=f"diff by {options.by}: {len(d.rows)} rows", notes=notes)
    if slower:
        worst = ", ".join(f"{k if len(k) <= 60 else k[:59] + '…'} +{v:.1f}%" for k, v in slower[:5])
        if len(slower) > 5:
            worst += f" and {len(slower) - 5} more"
        print(f"gpuprobe diff: slower than {options.fail_if_slower:g}% in B: {worst}", file=sys.stderr)
        return 1
    return 0
