"""The analytic roofline: points from the cost model, times from the roofs; runs anywhere."""
from __future__ import annotations

from typing import Sequence

from gpuprobe.analytic import (DEFAULT_KERNELS, DEFAULT_MEMORY_FRACTION, decode_costs, max_batch_that_fits,
                               memory_footprint)
from gpuprobe.roofline.schema import Roof, RooflineResult, datasheet_roofs, make_point, provenance, select_ceilings
from gpuprobe.specs.gpus import GPUSpec, normalize_dtype
from gpuprobe.specs.models import ModelSpec


def analytic_roofline(spec: ModelSpec, gpu: GPUSpec, batches: Sequence[int], context: int,
                      dtype: str = "bf16", extra_roofs: Sequence[Roof] = (),
                      kernels: str = DEFAULT_KERNELS) -> RooflineResult:
    """One point per op per batch; each op's time is ``max(flops/peak, bytes/bandwidth)``.

    ``extra_roofs`` (e.g. cached measured ceilings) join the datasheet roofs; the ceilings that
    decide ``bound`` prefer measured roofs (docs/contracts.md section 2). ``kernels``: the engine's kernel
    mode the ops follow (``fused`` | ``unfused``, docs/analytic.md).
    """
    dtype = normalize_dtype(dtype)
    gpu.require_tensor_flops(dtype)  # one line when the GPU has no such peak (bf16 on V100, T4)
    roofs = datasheet_roofs(gpu, dtype) + list(extra_roofs)
    ceilings = select_ceilings(roofs, dtype)
    fp32 = select_ceilings(roofs, "fp32").flops_per_s
    points = []
    for b in batches:
        for c in decode_costs(spec, b, context, dtype, kernels):
            t = c.time_s(ceilings.dram_bytes_per_s, ceilings.flops_per_s, fp32)
            points.append(make_point(
                c.op, b, c.flops, c.dram_bytes, t, ceilings,
                flops_useful=c.flops, dram_read_bytes=c.dram_read_bytes, dram_write_bytes=c.dram_write_bytes,
                layers_profiled=None, scaled=False,
                extra={"weight_bytes": c.weight_bytes, "kv_read_bytes": c.kv_read_bytes,
                       "kv_write_bytes": c.kv_write_bytes, "count": c.count},
            ))
    fits = max_batch_that_fits(spec, gpu, context, dtype)
    predicted = []
    for b in batches:
        step = sum(p.time_s for p in points if p.batch == b)
        mem = memory_footprint(spec, b, context, dtype)
        predicted.append({"batch": b, "step_time_s": step, "tokens_per_s": b / step,
                          "weights_bytes": mem.weight_bytes, "kv_cache_bytes": mem.kv_cache_bytes,
                          "fits": b <= fits})
    return RooflineResult(
        model=spec.name, gpu=gpu.name, mode="analytic", context=context, dtype=dtype,
        layers=spec.num_layers, ceilings=ceilings, roofs=roofs, points=points, batch=list(batches),
        provenance=provenance(gpu_display_name=gpu.display_name, ceilings_source=ceilings.dram_source),
        # Predictions, not measurements: kept apart from the `throughput` section measured modes write.
        extra={"predicted": predicted, "kernels": kernels,
               "memory": {"max_batch_that_fits": fits, "memory_fraction": DEFAULT_MEMORY_FRACTION}},
    )
