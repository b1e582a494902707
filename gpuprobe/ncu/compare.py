"""Compare two readings of one report (or two runs of one workload): kernels, NVTX stacks, metrics."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gpuprobe.ncu.readers import ID_COLUMNS


@dataclass
class Comparison:
    same_kernels: bool
    same_stacks: bool
    metrics_compared: int
    mismatches: list[tuple[str, int, float, float]] = field(default_factory=list)  # (metric, row, a, b)
    max_rel_diff: float = 0.0

    @property
    def ok(self) -> bool:
        return self.same_kernels and self.same_stacks and not self.mismatches


def compare_tables(a: pd.DataFrame, b: pd.DataFrame, metrics: list[str] | None = None,
                   rtol: float = 1e-6, atol: float = 0.0) -> Comparison:
    """Kernel by kernel: the same short names and NVTX stacks, and each numeric metric both hold within
    ``rtol`` (relative) or ``atol`` (absolute, in base units)."""
    same_k = len(a) == len(b) and list(a["kernel_short"]) == list(b["kernel_short"])
    same_s = len(a) == len(b) and [tuple(x) for x in a["nvtx_stack"]] == [tuple(x) for x in b["nvtx_stack"]]
    if metrics is None:
        metrics = [c for c in a.columns if c in b.columns and c not in ID_COLUMNS
                   and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]
    res = Comparison(same_k, same_s, 0)
    if len(a) != len(b):
        return res
    for m in metrics:
        if m not in a.columns or m not in b.columns:
            continue
        x = pd.to_numeric(a[m], errors="coerce").to_numpy(float)
        y = pd.to_numeric(b[m], errors="coerce").to_numpy(float)
        res.metrics_compared += 1
        for i, (u, v) in enumerate(zip(x, y)):
            if math.isnan(u) and math.isnan(v):
                continue
            diff = abs(u - v)
            scale = max(abs(u), abs(v))
            rel = diff / scale if scale else 0.0
            if not (diff <= atol or rel <= rtol) or math.isnan(u) != math.isnan(v):
                res.mismatches.append((m, i, float(u), float(v)))
            if np.isfinite(rel):
                res.max_rel_diff = max(res.max_rel_diff, rel)
    return res
