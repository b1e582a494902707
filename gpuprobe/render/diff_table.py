"""The table of ``gpuprobe diff``: two sides per op or kernel, their ratios, and the rows on one side only."""
from __future__ import annotations

from gpuprobe.render.tables import Column, fmt_int, fmt_num, fmt_text


def diff_columns(by: str) -> list:
    """The comparison's columns; each machine name carries its unit (``time_a_s``, ``dram_b_bytes``)."""
    def num(key, header, short, legend, scale=1.0, field=None):
        return Column(key, header, short, legend, fmt=lambda x, s=scale: fmt_num(x, s), field=field)

    cols = [Column("key", by, fmt=fmt_text, numeric=False, name=True, cut="middle" if by == "op" else "end",
                   field=by)]
    if by == "kernel":
        cols.append(Column("op", "op", fmt=lambda x: "other" if str(x).startswith("other:") else fmt_text(x),
                           numeric=False))
    cols += [
        Column("n_a", "kernels A", "nA", "kernels in A", fmt=fmt_int, field="kernels_a"),
        Column("n_b", "kernels B", "nB", "kernels in B", fmt=fmt_int, field="kernels_b"),
        num("time_a", "time A µs", "tA", "time in A, µs", 1e-6, "time_a_s"),
        num("time_b", "time B µs", "tB", "time in B, µs", 1e-6, "time_b_s"),
        num("time_ratio", "time B/A", "t×", "time ratio B/A"),
        num("time_change_pct", "Δtime %", "Δ%", "how much slower B is, %"),
        num("dram_a", "DRAM A MB", "dA", "DRAM MB in A", 1e6, "dram_a_bytes"), num("dram_b", "DRAM B MB", "dB", "DRAM MB in B", 1e6, "dram_b_bytes"),
        num("dram_ratio", "DRAM B/A", "d×", "DRAM bytes ratio B/A"),
        num("bw_a", "BW A TB/s", "bwA", "achieved DRAM TB/s in A", 1e12, "dram_a_bytes_per_s"),
        num("bw_b", "BW B TB/s", "bwB", "achieved DRAM TB/s in B", 1e12, "dram_b_bytes_per_s"),
        num("bw_ratio", "BW B/A", "bw×", "bandwidth ratio B/A"),
        Column("only", "only in", "in", "row found only in A or only in B", fmt=fmt_text, numeric=False),
    ]
    return cols
