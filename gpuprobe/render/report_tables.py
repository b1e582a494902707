"""The tables of ``gpuprobe report``: per op or per kernel from a report's roofline points, and the roofs
line beneath them."""
from __future__ import annotations

import math

from gpuprobe.render.tables import Column, fmt_num, fmt_text


def _time_cell(p) -> str:
    text = fmt_num(p.get("time_s"), 1e-6)
    return text + "*" if p.get("time_derived") and text != "-" else text


def report_columns(by: str) -> list:
    """The columns of the report table, per op or per kernel (rows are roofline points as dicts)."""
    def num(key, header, short, legend, scale=1.0, field=None):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s), field=field)

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
        num("intensity", "FLOP/B", "F/B", "FLOP per DRAM byte", field="intensity_flop_per_byte"),
        num("flops_per_s", "TFLOP/s", "TF/s", "achieved TFLOP/s", 1e12),
        num("bytes_per_s", "DRAM TB/s", "TB/s", "achieved DRAM TB/s", 1e12, field="dram_bytes_per_s"),
        num("dram_pct_of_ncu_peak", "DRAM %pk", "D%", "DRAM % of ncu's peak"),
        num("sm_pct", "SM %", "S%", "SM throughput % of peak"),
        num("tensor_pct", "tensor %", "T%", "tensor pipe % of peak"),
        Column("limiter", "limiter", "lim", "limiter (memory, compute, latency)", fmt=fmt_text, numeric=False),
    ]
    return cols


def report_rows(result) -> list[dict]:
    """Roofline points as row dicts with the derived figures the table shows (missing stays None)."""
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
