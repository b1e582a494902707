"""Shared look of gpuprobe figures: one colour and marker per op, and figures that never touch pyplot.

Figures are :class:`matplotlib.figure.Figure` objects saved to files: no window opens, and importing or
calling gpuprobe's plots never changes the backend of the session (a notebook keeps its inline figures).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from gpuprobe.errors import UserError
from gpuprobe.ops import GEMM_OPS

_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173",
]
#: Ops that carry the story get strong colours; elementwise ops get muted ones.
OP_COLORS = {
    "attention": "#d62728", "qkv_proj": "#1f77b4", "o_proj": "#ff7f0e", "gate_up_proj": "#2ca02c",
    "down_proj": "#9467bd", "lm_head": "#222222", "mlp": "#2ca02c", "attn_block": "#9467bd",
    "embed": "#c7c7c7", "input_norm": "#aec7e8", "rope": "#ffbb78", "kv_write": "#c49c94",
    "residual_add": "#bcbd22", "post_norm": "#98df8a", "act": "#c5b0d5", "final_norm": "#dbdb8d",
    "sample": "#9edae5",
}
_MARKERS = {"attention": "*", "qkv_proj": "s", "o_proj": "D", "gate_up_proj": "^", "down_proj": "v",
            "lm_head": "P", "mlp": "^", "attn_block": "*"}


def new_figure(**kwargs: Any):
    """A figure outside pyplot's state (``figsize``, ``dpi``...): save it with ``fig.savefig``; nothing to close."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def check_figure_path(path: str | Path) -> Path:
    """``path`` as a figure file, checked before any work: a file name (not a folder) with an image type
    matplotlib writes, in a folder that exists; :class:`~gpuprobe.errors.UserError` (one line) otherwise."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"--plot '{p}' is a folder; give a file name, e.g. {p / 'roofline.png'}.")
    kinds = new_figure().canvas.get_supported_filetypes()
    kind = p.suffix.lower().lstrip(".")
    if kind not in kinds:
        raise UserError(f"--plot '{p}': '{kind or 'no extension'}' is not an image type matplotlib writes; "
                        f"end the name with one of {', '.join('.' + k for k in sorted(kinds))}.")
    if not p.parent.is_dir():
        raise UserError(f"--plot '{p}': the folder '{p.parent}' does not exist; create it or choose another.")
    return p


def op_color(op: str) -> str:
    """The op's colour; any other name (a kernel class, ``other:*``) gets a palette colour chosen by a
    checksum of the name, the same in every process (``hash`` of a str changes with PYTHONHASHSEED)."""
    if op in OP_COLORS:
        return OP_COLORS[op]
    return _PALETTE[zlib.crc32(op.encode("utf-8")) % len(_PALETTE)]


def op_marker(op: str) -> str:
    return _MARKERS.get(op, "o")


def is_major(op: str) -> bool:
    """Attention and the GEMMs: the ops a decode roofline is about."""
    return op == "attention" or op in GEMM_OPS or op in ("mlp", "attn_block")
