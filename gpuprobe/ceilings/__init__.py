"""Empirical ceilings: run the CUDA microbenchmarks in ``csrc/``, check their results, cache them.

Datasheet peaks overstate what kernels reach (an H100 copy moves about 3.0 TB/s against 3.35 on
the datasheet), so the roofline's roofs are measured here: DRAM read, write and copy bandwidth,
L2 and shared-memory bandwidth, the FP32 FMA peak, the FP16/BF16 tensor-core peak of a
``mma.sync`` kernel, and cuBLAS (through torch) as the practical tensor ceiling. A torch
device-to-device copy is timed in the same run as the copy kernel. See ``docs/ceilings.md``.

Modules, one job each:

- :mod:`.sources`: the ``.cu`` files shipped in :mod:`gpuprobe.csrc`, their entry points and ``#define`` constants
- :mod:`.launch`: a compiled :class:`Kernel` and the packing of its launch arguments
- :mod:`.nvrtc`: ``libnvrtc`` through ctypes (compiles without a GPU)
- :mod:`.backends`: compile and launch through CuPy's ``RawModule``, else NVRTC and the CUDA driver
- :mod:`.plan`: buffer sizes and loop counts from the GPU's SMs, L2 and free memory
- :mod:`.expected`: what each kernel must have written (the result checks' arithmetic)
- :mod:`.result`: :class:`CeilingsResult`, :class:`Measurement` and their JSON form
- :mod:`.targets`: the device targets and datasheet comparisons
- :mod:`.device`: whether there is a GPU and what it is (NVML through :mod:`gpuprobe.system.telemetry`, else torch)
- :mod:`.clocks`: SM and memory clocks sampled while trials run
- :mod:`.timing`: CUDA-event timing of a launch closure
- :mod:`.runner`: each microbenchmark, torch's copy and cuBLAS, with their result checks
- :mod:`.measure`: a whole run, and the command's cached-or-measured result
- :mod:`.cache`: one JSON file per GPU and driver in the user cache folder
- :mod:`.roofs`: measured roofs and the choice of a roofline's two ceilings
- :mod:`.bandwidth`: :func:`copy_bandwidth`, the figure every "% of bandwidth" divides by
- :mod:`.kernel_bench`: the project's Triton kernels (:mod:`gpuprobe.kernels`) timed against their baselines
  and that copy bandwidth (``gpuprobe attention-bench``, ``benchmarks/``, the kernels' selftest checks)

Nothing here imports torch, CuPy or NVML at import time: the analytic roofline imports this
package on machines without a GPU.
"""
from __future__ import annotations

from gpuprobe.ceilings.backends import BACKENDS, choose_backend, compile_kernels
from gpuprobe.ceilings.bandwidth import (copy_bandwidth, copy_bandwidth_and_source, copy_bandwidth_or_none,
                                        quick_copy_bandwidth, read_bandwidth)
from gpuprobe.ceilings.cache import cache_dir, cache_path, cached_ceilings, save_cached
from gpuprobe.ceilings.device import NO_GPU_MESSAGE, gpu_or_raise, present_gpu_identity
from gpuprobe.ceilings.expected import fma_expected, mma_expected, mma_fragments, u32_checksum
from gpuprobe.ceilings.launch import Kernel, check_args, pack_ctypes, pack_numpy
from gpuprobe.ceilings.measure import measure_ceilings, run_ceilings
from gpuprobe.ceilings.nvrtc import load_libnvrtc, nvrtc_compile
from gpuprobe.ceilings.plan import GiB, MiB, MMA_INPUT_MAX, BenchPlan, fma_max_iters, mma_max_iters, plan_benchmarks
from gpuprobe.ceilings.result import MEASUREMENTS, SCHEMA_VERSION, CeilingsResult, Measurement, MeasurementInfo
from gpuprobe.ceilings.roofs import measured_roofs
from gpuprobe.ceilings.sources import (
    SOURCE_FILES, KernelSignature, all_kernels, constants, find_kernel, load_source, parse_constants, parse_kernels,
)
from gpuprobe.ceilings.targets import TARGETS, datasheet_value, evaluate_targets, fp32_scaled_datasheet, within

__all__ = [
    "BACKENDS", "BenchPlan", "CeilingsResult", "GiB", "Kernel", "KernelSignature", "MEASUREMENTS", "MMA_INPUT_MAX",
    "Measurement", "MeasurementInfo", "MiB", "NO_GPU_MESSAGE", "SCHEMA_VERSION", "SOURCE_FILES", "TARGETS",
    "all_kernels", "cache_dir", "cache_path", "cached_ceilings", "check_args", "choose_backend", "compile_kernels",
    "constants", "copy_bandwidth", "copy_bandwidth_and_source", "copy_bandwidth_or_none", "datasheet_value", "evaluate_targets", "find_kernel", "fma_expected",
    "fma_max_iters", "fp32_scaled_datasheet", "gpu_or_raise", "load_libnvrtc", "load_source", "measure_ceilings",
    "measured_roofs", "mma_expected", "mma_fragments", "mma_max_iters", "nvrtc_compile", "pack_ctypes",
    "pack_numpy", "parse_constants", "parse_kernels", "plan_benchmarks", "present_gpu_identity",
    "quick_copy_bandwidth", "read_bandwidth", "run_ceilings", "save_cached", "u32_checksum", "within",
]
