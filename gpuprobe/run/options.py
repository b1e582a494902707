"""What a run was asked for: one options object per command (:class:`RooflineOptions`,
:class:`ReportOptions`), built once by the command line (or by a caller such as the study sweep or the
selftest) and handed down whole; nothing below the command line sees argparse's namespace. Light: the
command line imports it when it builds its parser."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gpuprobe.analytic import DEFAULT_KERNELS
from gpuprobe.errors import UserError

MODES = ("auto", "analytic", "timing", "ncu", "nsys")
LAYERS = ("one", "all")
#: The batch sizes a roofline takes when none are named (measured modes cut them at what fits).
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True, kw_only=True)
class _PrintOptions:
    """How a command prints: ``fmt``, the table's format (``None``: table on a terminal, TSV when piped);
    ``as_json``, JSON on stdout instead. Keyword-only, so each command's own fields keep their places."""

    fmt: str | None = None
    as_json: bool = False


@dataclass(frozen=True, kw_only=True)
class _FolderOptions(_PrintOptions):
    """A printing command that also writes files: ``out``, their folder (``None``: the command's default)."""

    out: str | None = None


@dataclass(frozen=True, kw_only=True)
class _EngineOptions(_FolderOptions):
    """A command that runs the engine: its ``dtype`` and ``attention`` backend (``None``: the engine's choice)."""

    dtype: str = "bf16"
    attention: str | None = None


@dataclass(frozen=True)
class RooflineOptions(_EngineOptions):
    """A roofline run's settings.

    ``batches_given``: the user named the batch sizes (kept as given) rather than taking the default
    list (cut at what fits). ``use_cached_roofs``: add the measured roofs ``gpuprobe ceilings`` cached
    for this GPU (False with ``--datasheet``). ``resume``: the folder of a sweep to continue.
    ``executor``: where a measured sweep's points run (``None``: here, one child process each; else an
    executor of :mod:`gpuprobe.measure.executors`). ``calibration``: ``None``/``"auto"`` (the shipped
    calibration of the GPU), ``"none"`` (the bare floor) or a ``calibration.json`` path; the analytic mode
    predicts with it. ``write_calibration``: a measured run also fits a calibration of its own into this
    file. ``as_json``: print ``roofline.json`` to stdout instead of the table.
    """

    model: str
    batches: tuple[int, ...] = DEFAULT_BATCHES
    context: int = 1024
    batches_given: bool = False
    gpu: str | None = None
    mode: str = "auto"
    layers: str = "one"
    resume: str | None = None
    use_cached_roofs: bool = True
    kernels: str = DEFAULT_KERNELS  # the engine's kernel mode (docs/engine.md): fused | unfused
    executor: Any = None
    calibration: str | None = None
    write_calibration: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got '{self.mode}'.")
        if self.layers not in LAYERS:
            raise UserError(f"--layers must be 'one' or 'all', got '{self.layers}'.")

    def with_(self, **changes: Any) -> "RooflineOptions":
        """A copy with some settings changed (checked again)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class ReportOptions(_FolderOptions):
    """What ``gpuprobe report`` was asked for (built once by the command line, or by ``profile``).

    ``measured_dram_bytes_per_s``: a measured copy bandwidth (adds the measured DRAM roof). The trace
    options (``model`` ... ``align_eager``) apply to Nsight Systems inputs only."""

    file: str
    by: str = "op"
    plot: str | None = None
    gpu: str | None = None
    dtype: str = "bf16"
    measured_dram_bytes_per_s: float | None = None
    rules: str | None = None
    model: str | None = None
    batch: int | None = None
    context: int | None = None
    step_regex: str | None = None
    step_kernel: str | None = None
    align_eager: str | None = None


@dataclass(frozen=True)
class AdviseOptions(_EngineOptions):
    """What ``gpuprobe advise`` was asked for: the curve (``from_path``, else measured for ``model`` at
    ``batches``), the rule and its parameters, and the GPU whose memory the replicas fill."""

    model: str | None = None
    from_path: str | None = None
    context: int | None = None
    rule: str = "default"
    epsilon: float = 0.05
    latency_slo_s: float | None = None
    min_efficiency: float = 0.2
    latency_factor: float = 5.0
    reference_batch: int = 32
    batches: str = ",".join(map(str, DEFAULT_BATCHES))
    gpu: str | None = None
    fixed_cost_bytes: int | None = None


@dataclass(frozen=True)
class ReplicateOptions(_EngineOptions):
    """What ``gpuprobe replicate`` was asked for: replica counts and the batch of each, and the run's setup."""

    model: str
    counts: tuple[int, ...]
    batches: tuple[int, ...]
    context: int = 1024
    steps: int = 64
    min_seconds: float = 6.0
    mps: bool = False
    memory_fraction: float | None = None


@dataclass(frozen=True)
class DiffOptions(_PrintOptions):
    """What ``gpuprobe diff`` was asked for: the two sides, the grouping, the output, the regression gate."""

    a: str
    b: str
    by: str = "op"
    fail_if_slower: float | None = None
    rules: str | None = None
    batch: int | None = None
