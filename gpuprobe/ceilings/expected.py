"""What each kernel must have written (pure): the host side of every result check."""
from __future__ import annotations

from gpuprobe.ceilings.plan import fma_max_iters


def u32_checksum(word_sum: int, times: int) -> int:
    """What a kernel that added every 32-bit word ``times`` times into a uint32 holds: mod 2**32."""
    return (int(word_sum) * int(times)) % 2**32


def fma_expected(n_threads: int, chains: int, inner: int, iters: int):
    """Per-thread results of ``fma_fp32`` with a = b = 1 (float64 array; exact integers)."""
    import numpy as np

    if iters > fma_max_iters(chains, inner):
        raise ValueError(f"iters={iters} exceeds the exact range ({fma_max_iters(chains, inner)})")
    t = np.arange(n_threads, dtype=np.int64)
    start = sum(((t + k) & 255) for k in range(chains))
    return (start + chains * inner * iters).astype(np.float64)


def mma_fragments(a, bt):
    """A (16x16) and B^T (8x16) of 16-bit floats as the kernel reads them: int32 words, two
    elements each, the lower column in the low half (torch tensors, any device)."""
    import torch

    if tuple(a.shape) != (16, 16) or tuple(bt.shape) != (8, 16) or a.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError("expected A of shape (16, 16) and B^T of shape (8, 16) in bf16 or fp16")
    return a.contiguous().view(torch.int32), bt.contiguous().view(torch.int32)


def mma_expected(a, bt, acc: int, iters: int):
    """The 16x8 tile each warp of the tensor kernel writes: acc * iters * (A @ B), float64 numpy."""
    return (a.double().cpu() @ bt.double().cpu().T).numpy() * (acc * iters)
