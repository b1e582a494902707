"""Calibrated times of a model's decode step: per op, from the analytic costs and a calibration."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpuprobe.analytic import DEFAULT_KERNELS, OpCost, decode_costs
from gpuprobe.calibration.shapes import op_class_and_shape, roofs_of
from gpuprobe.specs.gpus import GPUSpec, normalize_dtype

if TYPE_CHECKING:
    from gpuprobe.calibration.model import Calibration


@dataclass(frozen=True)
class StepPrediction:
    """One decode step: the floor and the calibrated prediction, per op ``(floor_s, predicted_s | None)``
    summed over the op's calls in the step; ``error_median`` is the calibration's held-out median |error|
    of its classes, weighted by each class's share of the predicted step (None without a calibration)."""

    batch: int
    context: int
    floor_s: float
    predicted_s: float
    per_op: dict[str, tuple[float, float | None]]
    error_median: float | None

    @property
    def tokens_per_s_floor(self) -> float:
        return self.batch / self.floor_s

    @property
    def tokens_per_s_predicted(self) -> float:
        return self.batch / self.predicted_s


def floor_per_op(cost: OpCost, gpu: GPUSpec, dtype: str) -> float:
    """An op's floor over its calls in one step, on the datasheet roofs (the roofs calibrations are fitted on)."""
    bw, peak = roofs_of(gpu, dtype)
    return cost.time_s(bw, peak, gpu.fp32_flops_per_s)


def predict_op(calibration: "Calibration | None", spec, cost: OpCost, gpu: GPUSpec, batch: int, context: int,
               dtype: str, kernels: str = DEFAULT_KERNELS) -> tuple[str | None, float | None]:
    """(op class, predicted seconds of the op's calls in one step); None where the calibration lacks the class."""
    found = op_class_and_shape(spec, cost.op, batch, context, dtype, kernels)
    if found is None or calibration is None or found[0] not in calibration.classes or not cost.count:
        return (found[0] if found else None), None
    op_class, shape = found
    per_call_floor = floor_per_op(cost, gpu, dtype) / cost.count
    return op_class, calibration.predict(op_class, shape, per_call_floor) * cost.count


def predict_decode_step(spec, gpu_spec: GPUSpec, batch: int, context: int, dtype: str,
                        calibration: "Calibration | None", kernels: str = DEFAULT_KERNELS) -> StepPrediction:
    """Floor and calibrated time of one decode step of ``spec`` on ``gpu_spec`` (ops run one after another)."""
    dtype = normalize_dtype(dtype)
    per_op: dict[str, tuple[float, float | None]] = {}
    share: dict[str, float] = {}
    for cost in decode_costs(spec, batch, context, dtype, kernels):
        floor = floor_per_op(cost, gpu_spec, dtype)
        op_class, pred = predict_op(calibration, spec, cost, gpu_spec, batch, context, dtype, kernels)
        per_op[cost.op] = (floor, pred)
        if op_class is not None and pred is not None:
            share[op_class] = share.get(op_class, 0.0) + pred
    floor_s = sum(f for f, _ in per_op.values())
    predicted_s = sum(p if p is not None else f for f, p in per_op.values())
    error = None
    if calibration is not None and share:
        known = {c: calibration.heldout_median_abs_err(c) for c in share}
        weights = {c: t for c, t in share.items() if known[c] is not None}
        if weights:
            error = sum(known[c] * t for c, t in weights.items()) / sum(weights.values())
    return StepPrediction(batch, context, floor_s, predicted_s, per_op, error)
