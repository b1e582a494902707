"""Where a run writes: the output folder, made once and checked writable."""
from __future__ import annotations

import os
import time
from pathlib import Path

from gpuprobe.errors import UserError


def output_dir(out: str | Path | None, prefix: str) -> Path:
    """The folder to write into: ``out``, or a new ``./gpuprobe-out/{prefix}-{timestamp}``; must be writable."""
    path = Path(out) if out else Path("gpuprobe-out") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder '{path}': {e.strerror or e}; pass a writable --out.") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder '{path}' is not writable; pass a writable --out.")
    return path
