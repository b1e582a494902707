"""Decode GEMM in Triton: ``y = x @ W`` for a thin ``x`` (``M`` = batch rows, 1..1024).

At decode batch sizes the GEMM is a weight stream: ``W`` (``K x N``) is read once and every output
tile does little arithmetic, so the time is set by how many SMs pull weight bytes at once. A plain
tile grid of ``cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N)`` programs leaves most SMs idle when ``M`` is
small and ``N`` modest (Qwen2-0.5B's ``o_proj`` is 896 x 896: 14 tiles of 64 columns). **Split-K**
adds a third grid axis that cuts ``K`` into ``split_k`` ranges; each program writes an fp32 partial
tile and ``decode_gemm_splitk_reduce_kernel`` sums them (deterministic, no atomics).

Kernels: ``decode_gemm_kernel`` (tiles; writes ``y`` directly when ``split_k == 1``) and
``decode_gemm_splitk_reduce_kernel``. Knobs: ``block_m``, ``block_n``, ``block_k``, ``split_k``,
``num_warps``, ``num_stages``; :func:`choose_gemm_config` picks them when not given. No host sync.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import triton
import triton.language as tl

from .common import DEFAULT_SM_COUNT, device_sm_count, is_interpreted, next_pow2


@triton.jit
def decode_gemm_kernel(
    x_ptr, w_ptr, y_ptr, M, N, K, k_per_split,
    stride_xm, stride_xk, stride_wk, stride_wn, stride_ym, stride_yn, stride_ys,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Tile (pid_m, pid_n) over K range ``pid_k``; ``y`` is the output, or the fp32 partials when split."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k0 = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + offs_k0
        k_mask = offs_k < k_end
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
    y_ptrs = y_ptr + pid_k * stride_ys + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def decode_gemm_splitk_reduce_kernel(y_ptr, part_ptr, numel, N, stride_ym, stride_yn, split_k,
                                     BLOCK: tl.constexpr):
    """``y[m, n] = sum_s part[s, m, n]`` over the fp32 partials ``[split_k, M, N]`` (contiguous)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(0, split_k):
        acc += tl.load(part_ptr + s * numel + offs, mask=mask, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(y_ptr + m * stride_ym + n * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class GemmConfig:
    """Tile and schedule knobs of :func:`decode_gemm`."""

    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int
    num_stages: int

    def as_kwargs(self) -> dict:
        return asdict(self)


def choose_gemm_config(m: int, n: int, k: int, sm_count: int = DEFAULT_SM_COUNT, *, max_split_k: int = 16,
                       min_k_blocks_per_split: int = 2) -> GemmConfig:
    """Knobs for an ``[m, k] x [k, n]`` decode GEMM (a pure function of its arguments).

    ``block_m`` is the smallest power of two >= ``m`` in 16..64 (``tl.dot`` needs 16 rows; larger
    batches use 128-row tiles). Small-``m`` GEMMs stream weights with 64-column, 128-deep tiles.
    When the tile grid is under one wave of SMs, split-K multiplies it up to about one wave,
    keeping at least ``min_k_blocks_per_split`` ``block_k`` steps per split. Tiles of 64 rows and
    more use 8 warps: with 4, ptxas spills when the shapes are not multiples of 16 (scalar loads).
    """
    if min(m, n, k, sm_count) <= 0:
        raise ValueError("m, n, k and sm_count must be positive")
    if m <= 32:
        block_m, block_n, block_k, warps, stages = max(16, next_pow2(m)), 64, 128, 4, 4
    elif m <= 64:
        block_m, block_n, block_k, warps, stages = 64, 64, 128, 8, 4
    elif m <= 256:
        block_m, block_n, block_k, warps, stages = 64, 128, 64, 8, 4
    else:
        block_m, block_n, block_k, warps, stages = 128, 128, 64, 8, 3
    tiles = -(-m // block_m) * -(-n // block_n)
    split_k = 1
    if tiles < sm_count:
        k_blocks = -(-k // block_k)
        split_k = min(-(-sm_count // tiles), max_split_k, max(1, k_blocks // min_k_blocks_per_split))
    return GemmConfig(block_m, block_n, block_k, max(1, split_k), warps, stages)


def decode_gemm(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    split_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    out: torch.Tensor | None = None,
    sm_count: int | None = None,
) -> torch.Tensor:
    """``y = x @ w`` for ``x`` ``[M, K]`` and ``w`` ``[K, N]`` (any strides), ``y`` ``[M, N]`` in x's dtype.

    Knobs left as ``None`` come from :func:`choose_gemm_config`. Block sizes are powers of two >= 16.
    ``out`` is written in place when given.
    """
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"need x [M, K] and w [K, N], got {tuple(x.shape)} and {tuple(w.shape)}")
    if x.dtype != w.dtype or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x and w must share one of fp16/bf16/fp32, got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x and w must be on one device, got {x.device} and {w.device}")
    m, k = x.shape
    n = w.shape[1]
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"out must be ({m}, {n}) {x.dtype} on {x.device}")
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_()
    cfg = choose_gemm_config(m, n, k, sm_count or device_sm_count(x.device))
    block_m = block_m or cfg.block_m
    block_n = block_n or cfg.block_n
    block_k = block_k or cfg.block_k
    for name, v in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {v}")
    split_k = int(split_k or cfg.split_k)
    num_warps = num_warps or cfg.num_warps
    num_stages = num_stages or cfg.num_stages
    k_blocks = -(-k // block_k)
    split_k = max(1, min(split_k, k_blocks))
    k_per_split = -(-k_blocks // split_k) * block_k
    split_k = -(-k // k_per_split)  # no empty K ranges

    upcast = x.dtype == torch.bfloat16 and is_interpreted(decode_gemm_kernel)
    precision = "ieee" if x.dtype == torch.float32 or upcast else "tf32"
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n), split_k)
    if split_k == 1:
        decode_gemm_kernel[grid](
            x, w, out, m, n, k, k_per_split, x.stride(0), x.stride(1), w.stride(0), w.stride(1),
            out.stride(0), out.stride(1), 0, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            UPCAST=upcast, DOT_PRECISION=precision, num_warps=num_warps, num_stages=num_stages)
        return out
    part = torch.empty((split_k, m, n), dtype=torch.float32, device=x.device)
    decode_gemm_kernel[grid](
        x, w, part, m, n, k, k_per_split, x.stride(0), x.stride(1), w.stride(0), w.stride(1),
        n, 1, m * n, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        UPCAST=upcast, DOT_PRECISION=precision, num_warps=num_warps, num_stages=num_stages)
    reduce_block = 1024
    decode_gemm_splitk_reduce_kernel[(triton.cdiv(m * n, reduce_block),)](
        out, part, m * n, n, out.stride(0), out.stride(1), split_k, BLOCK=reduce_block, num_warps=4)
    return out


def gemm_bytes(m: int, n: int, k: int, elt_bytes: int = 2) -> int:
    """Minimum DRAM bytes of ``[m, k] x [k, n]``: x and W read once, y written once."""
    return (m * k + k * n + m * n) * elt_bytes
