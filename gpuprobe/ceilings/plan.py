"""Benchmark planning (pure): buffer sizes, launch shapes and loop counts from a GPU's SMs, L2 and
free memory, each loop count within the bound that keeps its result check exact."""
from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.ceilings.sources import constants
from gpuprobe.errors import NotAvailable

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class BenchPlan:
    """Sizes and launch shapes of one run; every loop count stays within its exactness bound."""

    sm_count: int
    l2_bytes: int
    dram_bytes: int  # each buffer of the DRAM benchmarks (copy uses two)
    dram_blocks: int
    l2_buffer_bytes: int
    l2_blocks: int
    l2_reps: int
    smem_blocks: int
    smem_reps: int
    fma_blocks: int
    fma_iters: int
    mma_blocks: int
    mma_iters: int
    gemm_n: int
    threads: int = 256


def fma_max_iters(chains: int, inner: int) -> int:
    """Largest trip count whose per-thread result (a sum of counted-up chains) stays below 2**24."""
    return (2**24 // chains - 256) // inner


def mma_max_iters(acc: int, max_abs_product: int) -> int:
    """Largest trip count whose accumulated tile stays below 2**24 (exact in fp32)."""
    return (2**24 - 1) // (acc * max_abs_product)


#: Inputs of the tensor kernel are integers in [-MMA_INPUT_MAX, MMA_INPUT_MAX].
MMA_INPUT_MAX = 2


def plan_benchmarks(sm_count: int, l2_bytes: int, free_bytes: int, *, quick: bool = False) -> BenchPlan:
    """A plan for a GPU with ``sm_count`` SMs, ``l2_bytes`` of L2 and ``free_bytes`` free memory.

    DRAM buffers: 1 GiB or 16x the L2, whichever is larger, capped by free memory; at least 8x
    the L2. L2 buffer: at most a quarter of the L2 (both partitions of a Hopper L2 hold it),
    a whole number of grid-stride sweeps. Loop counts aim at about a millisecond per launch.
    """
    if sm_count <= 0 or l2_bytes <= 0:
        raise ValueError("sm_count and l2_bytes must be positive")
    dram = constants("dram_bandwidth.cu")
    threads = dram["THREADS"]
    want = max(1 * GiB, 16 * l2_bytes)
    cap = (free_bytes // 6) // MiB * MiB  # copy uses two buffers; leave room for torch's copy and cuBLAS
    dram_bytes = min(want, cap, (2**31 - 1) * 16 // MiB * MiB)
    if dram_bytes < 8 * l2_bytes:
        raise NotAvailable(f"too little free GPU memory ({free_bytes / GiB:.1f} GiB) for DRAM buffers of 8x "
                           f"the L2 ({8 * l2_bytes / GiB:.2f} GiB each); free some and retry")

    l2c = constants("l2_bandwidth.cu")
    target = l2_bytes // 4
    l2_blocks, l2_buf = sm_count, 0
    for per_sm in (8, 4, 2, 1):
        sweep = sm_count * per_sm * l2c["THREADS"] * l2c["UNROLL"] * 16
        if sweep <= target:
            l2_blocks, l2_buf = sm_count * per_sm, (target // sweep) * sweep
            break
    if l2_buf == 0:  # tiny L2: one block per SM and a buffer of a quarter of the L2
        l2_buf = max(16 * l2c["THREADS"], target // 16 * 16)
    scale = 0.25 if quick else 1.0
    l2_reps = max(1, int(scale * 4 * GiB / l2_buf))

    sm = constants("smem_bandwidth.cu")
    smem_blocks = sm_count * 4
    smem_reps = max(1, int(scale * 16 * GiB / (smem_blocks * sm["TILE_VEC"] * 16)))

    fma = constants("fma_peak.cu")
    fma_blocks = sm_count * 8
    per_iter = fma_blocks * fma["THREADS"] * fma["CHAINS"] * fma["INNER"] * 2
    fma_iters = max(1, min(fma_max_iters(fma["CHAINS"], fma["INNER"]), int(scale * 1.2e11 / per_iter)))

    mma = constants("tensor_mma.cu")
    mma_blocks = sm_count * 4
    per_iter = mma_blocks * (mma["THREADS"] // 32) * mma["ACC"] * 2 * 16 * 8 * 16
    mma_iters = max(1, min(mma_max_iters(mma["ACC"], 16 * MMA_INPUT_MAX**2), int(scale * 1e12 / per_iter)))

    return BenchPlan(sm_count=sm_count, l2_bytes=l2_bytes, dram_bytes=dram_bytes, dram_blocks=sm_count * 8,
                     l2_buffer_bytes=l2_buf, l2_blocks=l2_blocks, l2_reps=l2_reps, smem_blocks=smem_blocks,
                     smem_reps=smem_reps, fma_blocks=fma_blocks, fma_iters=fma_iters, mma_blocks=mma_blocks,
                     mma_iters=mma_iters, gemm_n=4096 if quick else 8192, threads=threads)
