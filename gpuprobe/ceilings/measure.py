"""A whole run on the present GPU (:func:`measure_ceilings`), and the command's cached-or-measured
result (:func:`run_ceilings`)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

from gpuprobe.ceilings.backends import choose_backend, compile_kernels
from gpuprobe.ceilings.cache import cache_path, cached_ceilings, save_cached
from gpuprobe.ceilings.clocks import ClockSampler
from gpuprobe.ceilings.device import gpu_or_raise
from gpuprobe.ceilings.plan import MiB, plan_benchmarks
from gpuprobe.ceilings.result import CeilingsResult
from gpuprobe.ceilings.runner import Runner
from gpuprobe.ceilings.sources import SOURCE_FILES
from gpuprobe.ceilings.timing import Timer
from gpuprobe.specs.gpus import gpu_from_device_name


def measure_ceilings(*, quick: bool = False, backend: str | None = None, trial_s: float | None = None,
                     log: Callable[[str], None] | None = None) -> CeilingsResult:
    """Compile and run every microbenchmark on the current GPU (a few seconds); nothing is cached."""
    gpu_or_raise()
    import torch


    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    idx = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    torch.cuda.init()
    torch.zeros(1, device=f"cuda:{idx}")  # the primary context exists and is current on this thread
    spec = gpu_from_device_name(props.name)
    l2 = int(getattr(props, "L2_cache_size", 0) or (spec.l2_bytes if spec else 0) or 50 * MiB)
    free, _total = torch.cuda.mem_get_info(idx)
    plan = plan_benchmarks(props.multi_processor_count, l2, int(free), quick=quick)
    chosen = choose_backend(backend)
    log(f"compiling {len(SOURCE_FILES)} sources with {chosen} for sm_{props.major}{props.minor}")
    try:
        kernels = compile_kernels(chosen, idx)
    except Exception as e:  # noqa: BLE001 - CuPy raises its own CompileException, CUDADriverError...
        if backend is None and chosen == "cupy":  # CuPy present but broken here: NVRTC directly
            log(f"CuPy compile failed ({e}); falling back to nvrtc-ctypes")
            chosen = "nvrtc-ctypes"
            kernels = compile_kernels(chosen, idx)
        else:
            raise
    clocks = ClockSampler(idx)
    try:
        timer = Timer(trial_s=trial_s or (0.03 if quick else 0.06), trials=5, clocks=clocks)
        runner = Runner(kernels, plan, timer, log)
        runner.run_all()
        torch.cuda.synchronize()
    finally:
        clocks.close()
    env = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
           "l2_bytes": l2, "plan": dataclasses.asdict(plan), "python": sys.version.split()[0]}
    if chosen == "cupy":
        import cupy

        env["cupy"] = cupy.__version__
    return CeilingsResult(
        device_name=props.name, gpu=spec.name if spec else None, driver=clocks.info.get("driver"),
        backend=chosen, measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        measurements=runner.out, clocks=clocks.summary(), environment=env, seconds=round(time.perf_counter() - t0, 2))


def run_ceilings(refresh: bool = False, *, log: Callable[[str], None] | None = None,
                 **kw: Any) -> tuple[CeilingsResult, Path | None, bool]:
    """The ceilings of the present GPU: cached unless ``refresh``, else measured and cached when
    every figure checked out. Returns (result, cache file or None, whether it came from the cache)."""
    gpu_or_raise()
    if not refresh:
        cached = cached_ceilings()
        if cached is not None:
            return cached, cache_path(cached.device_name, cached.driver), True
    result = measure_ceilings(log=log, **kw)
    path = save_cached(result) if result.all_verified else None
    return result, path, False
