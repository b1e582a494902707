"""CUDA-event timing of a launch closure, and rates from per-launch times."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable

from gpuprobe.ceilings.clocks import ClockSampler


@dataclass
class Timer:
    """Times a launch closure with CUDA events: per-launch seconds of each trial."""

    trial_s: float = 0.05
    trials: int = 5
    clocks: ClockSampler | None = None
    event: Callable[[], Any] | None = None  # makes a timing event; torch.cuda.Event by default

    def run(self, launch: Callable[[], None]) -> tuple[list[float], int]:
        """(seconds per launch of each trial, launches made in all, warm-ups included)."""
        if self.event is None:
            import torch

            self.event = lambda: torch.cuda.Event(enable_timing=True)
        start, end = self.event(), self.event()
        launch()  # warm-up: first-use costs (module load, caches, clocks ramping up)
        start.record()
        launch()
        end.record()
        end.synchronize()
        once = max(start.elapsed_time(end) / 1e3, 1e-6)
        n = max(1, math.ceil(self.trial_s / once))
        per_launch = []
        for _ in range(self.trials):
            start.record()
            for _ in range(n):
                launch()
            end.record()
            if self.clocks is not None:
                self.clocks.sample()  # the GPU is busy with this trial now
            end.synchronize()
            per_launch.append(start.elapsed_time(end) / 1e3 / n)
        return per_launch, 2 + self.trials * n


def rate(work: float, per_launch: list[float]) -> tuple[float, list[float]]:
    """The median rate over trials (``work`` per second) and each trial's rate."""
    rates = [work / t for t in per_launch]
    return statistics.median(rates), rates
