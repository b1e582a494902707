"""What an ncu run costs in wall time: the profiled program's own start, plus replay passes of the metric
set for every kernel profiled.

ncu (``--replay-mode kernel``) runs each profiled kernel once per pass, saving and restoring the memory it
writes between passes, and collects a group of counters per pass; how many passes a metric set takes
depends on the counters, not on the kernel. The one figure measured so far (shared/fixtures/ncu,
H100 80GB HBM3, Nsight Compute 2025.3.1, ``--clock-control none``): one Qwen2-0.5B decode layer, 10
kernels, profiled with the sections SpeedOfLight, SpeedOfLight_RooflineChart,
SpeedOfLight_HierarchicalTensorRooflineChart, MemoryWorkloadAnalysis, Occupancy and LaunchStats took
**12 to 17 s of wall time, 18 replay passes per kernel**. gpuprobe's ``roofline`` and ``memory`` metric
sets (:mod:`gpuprobe.ncu.metrics`) ask only for counters those sections collect (time, DRAM bytes and
throughput, SM and tensor-pipe throughput, tensor and FP thread-instruction counts, L1/L2 traffic and
hit rates, clocks, per-cycle peaks), so they take at most those 18 passes. ``stalls`` adds warp-state
counters that capture did not collect: its passes are not known.

A pass's cost is the capture's wall time less the program's own start, over kernels x passes: 39 to 67
ms. The start of that capture (a two-layer torch program) was not timed apart from its wall time;
:data:`MEASURED_START_S` is an allowance, and the pass cost follows from it. The first GPU run
records each point's ncu seconds and kernel count (``roofline.json``'s steps, the selftest's figures):
those replace these figures.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.errors import UserError

#: The measured capture (see the module docstring).
MEASURED_KERNELS = 10
MEASURED_PASSES = 18
MEASURED_WALL_S = (12.0, 17.0)
#: Seconds of that capture's wall time spent starting the program (python, torch, a CUDA context under
#: ncu, two layers built): an allowance, not a reading.
MEASURED_START_S = 5.0

#: Replay passes per kernel of gpuprobe's metric sets, where known (an upper bound: see the docstring).
METRIC_SET_PASSES: dict[str, int] = {"roofline": MEASURED_PASSES, "memory": MEASURED_PASSES}


def pass_seconds(upper: bool = False) -> float:
    """Seconds per kernel per replay pass, from the measured capture: its fastest run (``upper`` False) or
    its slowest (True)."""
    wall = MEASURED_WALL_S[1] if upper else MEASURED_WALL_S[0]
    return (wall - MEASURED_START_S) / (MEASURED_KERNELS * MEASURED_PASSES)


def replay_passes(metric_set: str) -> int:
    """Replay passes per kernel of a gpuprobe metric set; a UserError for one whose passes are not known."""
    try:
        return METRIC_SET_PASSES[metric_set]
    except KeyError:
        raise UserError(f"the replay passes of metric set '{metric_set}' are not known (known: "
                        f"{', '.join(METRIC_SET_PASSES)}); time one run of it and add the figure.") from None


@dataclass(frozen=True)
class NcuCost:
    """An ncu run's expected and longest wall time, and what they are made of."""

    kernels: int
    passes: int
    start_s: float
    expected_s: float
    upper_s: float

    def limit_s(self, margin: float = 1.5) -> float:
        """A time limit for the run: ``margin`` times the longest the figures allow."""
        return margin * self.upper_s


def ncu_cost(kernels: int, metric_set: str = "roofline", *, start_s: float = MEASURED_START_S) -> NcuCost:
    """What profiling ``kernels`` kernels with ``metric_set`` costs, the profiled program taking ``start_s``
    to reach its first profiled kernel (its imports, CUDA context, model build and warm-up under ncu)."""
    if kernels < 0 or start_s < 0:
        raise UserError(f"kernels and start seconds must not be negative, got {kernels} and {start_s}.")
    passes = replay_passes(metric_set)
    replays = kernels * passes
    return NcuCost(kernels, passes, start_s, start_s + replays * (pass_seconds() + pass_seconds(True)) / 2,
                   start_s + replays * pass_seconds(True))
