"""GPU-aware targets of the selftest: every threshold that depends on the GPU comes from the GPU
registry (:func:`gpuprobe.specs.gpus.get_gpu`: H100 SXM, H100 PCIe, H200, A100, ...), and each check
reports its figure and the target side by side (:class:`Target`), which ``summary.md`` lists.

A check puts its targets under the ``targets`` key of its figures (:func:`targets_figure`); the
judgement stays the check's own (it raises :class:`CheckFailed` with the failed ones' lines).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from gpuprobe.errors import lookup_or_none
from gpuprobe.specs.gpus import get_gpu

TB = 1e12
#: A measured copy (bytes read + written) reaches 85-92% of the datasheet DRAM bandwidth on Hopper and
#: Ampere (H100 SXM 3.0 of 3.35 TB/s, H200 4.3 of 4.8); under 70% the node or the measurement is off.
COPY_OF_DATASHEET = (0.70, 1.00)
#: A read-only stream may edge past a copy but never past the datasheet by more than rounding.
READ_OF_DATASHEET_MAX = 1.02
#: cuBLAS bf16 at 8192^3 reaches about 80% of the dense datasheet peak (H100 SXM 803 of 989 TFLOP/s,
#: H200 788 of 989); under half means throttling or a wrong library.
TENSOR_OF_DATASHEET = (0.50, 1.05)


@dataclass(frozen=True)
class Target:
    """One figure against its target: ``met`` is None when the figure is missing (never judged as 0)."""

    figure: str
    value: float | None
    unit: str
    target: str  # in words, with the registry figure it comes from
    met: bool | None

    def line(self) -> str:
        value = "-" if self.value is None else f"{self.value:.4g} {self.unit}".strip()
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        return f"{self.figure}: {value} against {self.target}: {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_named(name: str | None):
    """The registry entry for a registry or device name; None when unknown or not given."""
    return lookup_or_none(get_gpu, name)


def spec_here():
    """The registry entry of the GPU this process sees (None without one, or when unknown)."""
    from gpuprobe.specs.gpus import detect_gpu

    det = detect_gpu()
    return det.spec if det is not None else None


def between(figure: str, value: float | None, lo: float | None, hi: float | None, unit: str, basis: str) -> Target:
    """``lo <= value <= hi`` (either bound may be None); ``basis`` says where the bounds come from."""
    parts = ([f">= {lo:.4g}"] if lo is not None else []) + ([f"<= {hi:.4g}"] if hi is not None else [])
    text = " and ".join(parts) + (f" {unit}" if unit else "") + (f" ({basis})" if basis else "")
    met = None if value is None else ((lo is None or value >= lo) and (hi is None or value <= hi))
    return Target(figure, value, unit, text, met)


def copy_bandwidth_target(copy_bytes_per_s: float | None, spec) -> Target | None:
    """A measured copy (read + written) against the registry's datasheet DRAM bandwidth."""
    if spec is None:
        return None
    sheet = spec.dram_bytes_per_s / TB
    lo, hi = COPY_OF_DATASHEET
    value = None if copy_bytes_per_s is None else copy_bytes_per_s / TB
    return between("copy bandwidth", value, lo * sheet, hi * sheet, "TB/s",
                   f"{lo:.0%}-{hi:.0%} of the {spec.name} datasheet {sheet:.2f} TB/s")


def read_ceiling_target(read_bytes_per_s: float | None, spec) -> Target | None:
    """A read-only stream's bandwidth may not exceed the datasheet DRAM figure (an L2-resident buffer would)."""
    if spec is None:
        return None
    sheet = spec.dram_bytes_per_s / TB
    value = None if read_bytes_per_s is None else read_bytes_per_s / TB
    return between("read ceiling", value, None, READ_OF_DATASHEET_MAX * sheet, "TB/s",
                   f"the {spec.name} datasheet {sheet:.2f} TB/s, +{READ_OF_DATASHEET_MAX - 1:.0%}")


def tensor_target(flops_per_s: float | None, spec, dtype: str = "bf16") -> Target | None:
    """cuBLAS's dense tensor rate against the registry's datasheet peak of ``dtype``."""
    if spec is None:
        return None
    sheet = spec.tensor_flops_per_s(dtype) / TB
    lo, hi = TENSOR_OF_DATASHEET
    value = None if flops_per_s is None else flops_per_s / TB
    return between(f"cuBLAS {dtype}", value, lo * sheet, hi * sheet, "TFLOP/s",
                   f"{lo:.0%}-{hi:.0%} of the {spec.name} datasheet {sheet:.0f} TFLOP/s")


def targets_figure(targets: Iterable[Target | None]) -> list[dict[str, Any]]:
    """The ``targets`` entry of a check's figures (the missing ones left out)."""
    return [t.to_dict() for t in targets if t is not None]


def missed(targets: Iterable[Target | None]) -> list[str]:
    """One line per target that was measured and missed."""
    return [t.line() for t in targets if t is not None and t.met is False]


# ---- the fused batch-1 decode step -------------------------------------------------------------------------

#: Seconds one decode layer spends above its weight reads, per GPU family with its reasoning. In
#: shared/fixtures/ncu (H100 80GB HBM3, Qwen2-0.5B layer 0 at B=32, C=512, under ncu with caches flushed
#: before each kernel) the layer's five non-GEMM kernels took 20.5 us and its four GEMMs 28 us against about
#: 10 us of weight reads: 38.5 us above the reads. At batch 1 in a CUDA-graph replay (warm L2, no launch
#: gaps, less data per non-GEMM kernel) a layer spends less, so this is a target the engine can reach, and
#: a step of unfused kernels (about four times as many) misses it. The H200 has the H100's SMs, clocks and
#: launch path (only its memory is faster, which the floor already counts): the same figure. Keys are
#: registry names: a GPU of another SM count or clock (an H100 PCIe) has no figure yet.
LAYER_ABOVE_FLOOR_S: dict[str, tuple[float, str]] = {
    "h100-sxm": (38.5e-6, "the H100 fixture's 48.5 us per Qwen2-0.5B layer under ncu less its 10 us of weight reads"),
    "h200": (38.5e-6, "as on the H100 (same SMs, clocks and launch path): 48.5 us per layer less 10 us of reads"),
}
#: A calibrated prediction states its held-out median |error| m; for normally spread errors about 95% of
#: them lie within 2.9 m (1.96 sigma against 0.674 sigma), so a step is judged against the prediction
#: times 1 + 3 m.
CALIBRATION_ERROR_FACTOR = 3.0


def fused_step_target(step_s: float | None, floor_s: float, num_layers: int, spec, prediction=None) -> Target | None:
    """The fused batch-1 graph step against a target reachable on this GPU: the calibrated prediction
    within its stated error where a calibration exists (``prediction``: a StepPrediction of
    gpuprobe.calibration), else the weight-read floor plus :data:`LAYER_ABOVE_FLOOR_S` per layer for the
    GPU's family; None where neither is known (the ratio to the floor stays a figure)."""
    value = None if step_s is None else step_s * 1e3
    if prediction is not None and getattr(prediction, "predicted_s", None):
        err = getattr(prediction, "error_median", None) or 0.0
        limit = prediction.predicted_s * (1.0 + CALIBRATION_ERROR_FACTOR * err)
        return between("fused batch-1 step", value, None, limit * 1e3, "ms",
                       f"the calibrated prediction {prediction.predicted_s * 1e3:.3f} ms x (1 + "
                       f"{CALIBRATION_ERROR_FACTOR:g} x its held-out median error {err:.1%})")
    if spec is None:
        return None
    if spec.name not in LAYER_ABOVE_FLOOR_S:  # another SM count or clock (an H100 PCIe): no figure measured
        return None
    per_layer, why = LAYER_ABOVE_FLOOR_S[spec.name]
    limit = floor_s + num_layers * per_layer
    return between("fused batch-1 step", value, None, limit * 1e3, "ms",
                   f"the weight-read floor {floor_s * 1e3:.3f} ms + {num_layers} layers x "
                   f"{per_layer * 1e6:.1f} us ({why})")
