"""Terminal tables of roofline results (rich): op x batch with time, bound and intensity."""
from __future__ import annotations

import shutil

from rich.console import Console
from rich.table import Table

from gpuprobe.ops import OPS
from gpuprobe.roofline.schema import RooflineResult


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def _op_order(op: str) -> tuple[int, str]:
    return (OPS.index(op), op) if op in OPS else (len(OPS), op)


def print_roofline_table(result: RooflineResult, footer: str | None = None, console: Console | None = None) -> None:
    """Rows: ops; columns: batch sizes; each cell 'time bound / intensity'; last rows: step totals."""
    con = console or Console(width=max(shutil.get_terminal_size((200, 40)).columns, 160))
    by_op = result.points_by_op()
    batches = sorted({p.batch for p in result.points if p.batch is not None})
    t = Table(title=f"{result.model} on {result.gpu} ({result.mode})", show_lines=False)
    t.add_column("op", style="bold")
    for b in batches:
        t.add_column(f"B={b}", justify="right")
    for op in sorted(by_op, key=_op_order):
        cells = {p.batch: p for p in by_op[op]}
        row = []
        for b in batches:
            p = cells.get(b)
            if p is None:
                row.append("-")
                continue
            tag = "[red]M[/red]" if p.bound == "memory" else "[green]C[/green]"
            lim = f" {p.limiter[0]}" if p.limiter else ""
            inten = "-" if p.intensity is None else f"{p.intensity:.3g}"
            row.append(f"{fmt_time(p.time_s)} {tag}{lim}\n[dim]{inten}[/dim]")
        t.add_row(op, *row)
    totals = []
    for b in batches:
        ts = [p.time_s for p in result.points if p.batch == b and p.time_s]
        step = sum(ts)
        totals.append(f"{fmt_time(step)}\n{b / step:,.0f} tok/s" if step else "-")
    t.add_row("[bold]step[/bold]", *totals, end_section=True)
    con.print(t)
    con.print("each cell: an op's time summed over the layers of one step, its bound (M/C), and below it "
              "its intensity (FLOP/B)")
    con.print(f"M = memory-bound, C = compute-bound: intensity against the ridge "
              f"{result.ceilings.ridge:.0f} FLOP/B ({result.ceilings.dram_source} DRAM "
              f"{result.ceilings.dram_bytes_per_s / 1e12:.2f} TB/s, {result.ceilings.compute_roof} "
              f"{result.ceilings.flops_per_s / 1e12:.0f} TFLOP/s)")
    if footer:
        con.print(footer)
