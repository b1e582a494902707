"""Ceilings check: the csrc microbenchmarks run, verify their own results and reach their targets."""
from __future__ import annotations

from gpuprobe.specs.gpus import gpu_from_device_name
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check, require_cuda
from gpuprobe.tools.selftest.targets import copy_bandwidth_target, missed, targets_figure, tensor_target


@check("ceilings", owner="ceilings", gpu=True, budget_s=75, estimate_s={"default": 25, "a100": 30})
def ceilings(ctx: CheckContext) -> dict:
    """Every microbenchmark verifies its result; copy >= 95% of torch's; FP32 within 10% of the datasheet
    scaled to the FMA run's clock; copy and cuBLAS against the registry; mma.sync over cuBLAS a figure.

    Takes NVRTC compiles of 5 sources (~4 s), 11 figures x 5 trials of 0.06 s, result checks, cuBLAS at
    8192, plus ~4 s to start; the result is cached, so the checks after it divide by this run's copy
    and read bandwidth."""
    require_cuda()
    from gpuprobe.ceilings import evaluate_targets, measure_ceilings, measured_roofs, save_cached

    result = measure_ceilings(log=ctx.log)
    result.write(ctx.out_dir / "ceilings.json")
    spec = gpu_from_device_name(result.device_name)
    figures, failures = evaluate_targets(result, spec)
    figures["seconds"] = result.seconds
    for dtype in ("bf16", "fp16"):
        for roof in measured_roofs(result, dtype):
            figures[f"roof_{roof.name}_tera"] = round(roof.value / 1e12, 4)
    targets = [copy_bandwidth_target(result.copy_bytes_per_s, spec),
               tensor_target(result.value("cublas_bf16"), spec, "bf16")]
    figures["targets"] = targets_figure(targets)
    if result.all_verified:
        # as `gpuprobe ceilings --refresh` would: every figure checked out, whatever the targets say;
        # the checks after this one divide by this run's copy bandwidth instead of re-measuring it
        figures["cache_file"] = str(save_cached(result))
    figures["mma_vs_cublas_judged"] = False  # a figure (gpuprobe.ceilings.targets)
    failures += missed(targets)
    if failures:
        raise CheckFailed("; ".join(failures), figures)
    return figures
