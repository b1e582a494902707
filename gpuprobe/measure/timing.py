"""The one step timer: seconds of each call of a decode step (eager, or a CUDA-graph replay).

On a GPU each call sits between two CUDA events on the current stream (what the GPU spent, launch gaps
included when the CPU cannot keep up); on a CPU ``time.perf_counter`` around each call. Per-op times
inside one step are :meth:`gpuprobe.engine.engine.Engine.time_step`'s (NVTX-ranged CUDA events).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable


def time_steps(run: Callable[[], object], steps: int, warmup: int = 0, cuda: bool = True) -> list[float]:
    """Seconds of each of ``steps`` calls of ``run`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    if not cuda:
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            run()
            out.append(time.perf_counter() - t0)
        return out
    import torch

    torch.cuda.synchronize()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for i in range(steps):
        run()
        events[i + 1].record()
    torch.cuda.synchronize()
    return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, linear between the two nearest ranks."""
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass(frozen=True)
class StepStats:
    """Summary of step times (seconds)."""

    p50_s: float
    p90_s: float
    mean_s: float
    steps: int

    @classmethod
    def of(cls, times: list[float]) -> "StepStats":
        return cls(statistics.median(times), percentile(times, 0.9), statistics.fmean(times), len(times))
