"""The analytic roofline: points from the cost model, times from the roofs (or a calibration); runs anywhere."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from gpuprobe.analytic import (DEFAULT_KERNELS, DEFAULT_MEMORY_FRACTION, decode_costs, max_batch_that_fits,
                               memory_footprint)
from gpuprobe.errors import UserError
from gpuprobe.roofline.schema import (Roof, RooflineResult, make_point, provenance, roofs_and_ceilings,
                                      select_ceilings)
from gpuprobe.specs.gpus import GPUSpec, normalize_dtype
from gpuprobe.specs.models import ModelSpec

if TYPE_CHECKING:  # the calibration stage is handed in by the caller, never imported here
    from gpuprobe.calibration.model import Calibration

#: ``time_source`` of a point whose time is the bare floor.
FLOOR_SOURCE = "floor: max(flops / peak, bytes / bandwidth)"


def analytic_roofline(spec: ModelSpec, gpu: GPUSpec, batches: Sequence[int], context: int,
                      dtype: str = "bf16", extra_roofs: Sequence[Roof] = (),
                      kernels: str = DEFAULT_KERNELS, calibration: "Calibration | None" = None) -> RooflineResult:
    """One point per op per batch; each op's floor is ``max(flops/peak, bytes/bandwidth)``.

    ``extra_roofs`` (e.g. cached measured ceilings) join the datasheet roofs; the ceilings that
    decide ``bound`` prefer measured roofs (docs/contracts.md section 2). ``kernels``: the engine's kernel
    mode the ops follow (``fused`` | ``unfused``, docs/analytic.md). With a ``calibration``
    (docs/prediction.md) each point's ``time_s`` is the calibrated prediction (never below its ``floor_s``)
    and ``time_source`` names the calibration; without one ``time_s`` is the floor.
    """
    dtype = normalize_dtype(dtype)
    gpu.require_tensor_flops(dtype)  # one line when the GPU has no such peak (bf16 on V100, T4)
    if calibration is not None and calibration.gpu != gpu.name:
        raise UserError(f"the calibration ({calibration.label}) is of {calibration.gpu}, not {gpu.name}; pass one of "
                        f"{gpu.name} or none.")
    if calibration is not None and dtype not in (normalize_dtype(calibration.dtype), calibration.served_as):
        raise UserError(f"the calibration ({calibration.label}) is for {calibration.dtype}, not {dtype}.")
    roofs, ceilings, _ = roofs_and_ceilings(gpu, dtype, extra_roofs=extra_roofs)
    fp32 = select_ceilings(roofs, "fp32").flops_per_s
    source = calibration.label if calibration is not None else FLOOR_SOURCE
    points = []
    for b in batches:
        for c in decode_costs(spec, b, context, dtype, kernels):
            floor = c.time_s(ceilings.dram_bytes_per_s, ceilings.flops_per_s, fp32)
            pred = None if calibration is None else calibration.predict_op_time(spec, c, gpu, b, context, dtype, kernels)
            pred = None if pred is None else max(pred, floor)
            points.append(make_point(
                c.op, b, c.flops, c.dram_bytes, floor if pred is None else pred, ceilings,
                flops_useful=c.flops, dram_read_bytes=c.dram_read_bytes, dram_write_bytes=c.dram_write_bytes,
                layers_profiled=None, scaled=False, floor_s=floor, predicted_s=pred,
                time_source=FLOOR_SOURCE if pred is None else source,
                extra={"weight_bytes": c.weight_bytes, "kv_read_bytes": c.kv_read_bytes,
                       "kv_write_bytes": c.kv_write_bytes, "count": c.count},
            ))
    fits = max_batch_that_fits(spec, gpu, context, dtype)
    predicted, steps = [], []
    for b in batches:
        mine = [p for p in points if p.batch == b]
        step = sum(p.time_s for p in mine)
        floor_step = sum(p.floor_s for p in mine)
        mem = memory_footprint(spec, b, context, dtype)
        predicted.append({"batch": b, "step_time_s": step, "tokens_per_s": b / step,
                          "weights_bytes": mem.weight_bytes, "kv_cache_bytes": mem.kv_cache_bytes,
                          "fits": b <= fits})
        calibrated = calibration is not None and any(p.predicted_s is not None for p in mine)
        steps.append({"batch": b, "floor_s": floor_step, "predicted_s": step if calibrated else None,
                      "tokens_per_s_floor": b / floor_step,
                      "tokens_per_s_predicted": b / step if calibrated else None})
    return RooflineResult(
        model=spec.name, gpu=gpu.name, mode="analytic", context=context, dtype=dtype,
        layers=spec.num_layers, ceilings=ceilings, roofs=roofs, points=points, batch=list(batches),
        provenance=provenance(gpu_display_name=gpu.display_name, ceilings_source=ceilings.dram_source),
        # Predictions, not measurements: kept apart from the `throughput` section measured modes write.
        extra={"predicted": predicted, "kernels": kernels,
               "memory": {"max_batch_that_fits": fits, "memory_fraction": DEFAULT_MEMORY_FRACTION},
               "time_source": source if calibration is not None else FLOOR_SOURCE,
               "calibration": calibration.provenance() if calibration is not None else None,
               "steps": steps},
    )
