"""The DRAM read ceiling a read-only kernel is judged against (paged attention reads its KV cache and
writes almost nothing, so a read+write copy figure is the wrong yardstick).

:func:`read_ceiling` takes the ``dram_read`` figure of ``gpuprobe ceilings`` cached for this GPU (the
``ceilings`` check of the run caches it), else measures a read-only stream here with a small Triton
kernel (:func:`measure_read_bandwidth`): every program sums its slice of a buffer many times the
size of L2 and writes one word, and the sum is checked against torch's, so a kernel that skipped
reads cannot pass for a fast one.
"""
from __future__ import annotations

import functools

#: Words each program reads per loop step, and loop steps per program (64 KiB per program).
BLOCK, ITERS = 2048, 8


@functools.lru_cache(maxsize=1)
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def read_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
        pid = tl.program_id(0)
        base = pid.to(tl.int64) * BLOCK * ITERS
        acc = tl.zeros([BLOCK], dtype=tl.int32)
        for i in range(ITERS):
            offs = base + i * BLOCK + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n, other=0)
        tl.store(out_ptr + pid, tl.sum(acc, axis=0))

    return read_sum_kernel


def read_sum(x):
    """Per-program sums (int32, wrapping) of the int32 tensor ``x``, read once by the read kernel."""
    import torch
    import triton

    n = x.numel()
    programs = triton.cdiv(n, BLOCK * ITERS)
    out = torch.empty(programs, dtype=torch.int32, device=x.device)
    _kernel()[(programs,)](x, out, n, BLOCK=BLOCK, ITERS=ITERS)
    return out


def wrapped_sum(t) -> int:
    """The sum of an integer tensor modulo 2**32, as int32 arithmetic that wraps leaves it."""
    import torch

    return int(t.to(torch.int64).sum().item()) % 2**32


def measure_read_bandwidth(nbytes: int | None = None) -> float:
    """Bytes read per second by the read kernel over a fresh random buffer (median of CUDA-event
    timings, L2 flushed between repetitions); raises RuntimeError when its sum is wrong."""
    import torch

    from gpuprobe.kernels.common import time_s

    if nbytes is None:
        free, _ = torch.cuda.mem_get_info()
        l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2**20)
        nbytes = min(2 * 2**30, max(32 * l2, 256 * 2**20), int(free) // 4)
    x = torch.randint(-(2**31), 2**31 - 1, (nbytes // 4,), dtype=torch.int32, device="cuda")
    got = read_sum(x)
    if wrapped_sum(got) != wrapped_sum(x):
        raise RuntimeError("the read kernel's sum differs from torch's: it did not read every word")
    t = time_s(lambda: read_sum(x), rep_ms=100)
    return x.numel() * 4 / t


def read_ceiling() -> tuple[float, str]:
    """(bytes/s, source): the cached ``gpuprobe ceilings`` DRAM read figure of this GPU, else measured now."""
    try:
        from gpuprobe.ceilings import cached_ceilings

        cached = cached_ceilings()
        value = cached.value("dram_read") if cached is not None else None
        if value:
            return value, f"gpuprobe ceilings dram_read kernel ({cached.measured_at})"
    except Exception:  # noqa: BLE001 - no cache, or one from another version: measure instead
        pass
    return measure_read_bandwidth(), "read-only Triton kernel timed now"
