"""Paged decode attention in Triton: one new query token per sequence over a paged KV cache.

Two schedules share one inner loop (:func:`_attend_token_range`):

* **v1** (``paged_decode_attention_v1_kernel``): one program per (sequence, KV head). It loads the
  whole query group of that KV head (``Hq / Hkv`` heads, padded to 16 rows for ``tl.dot``) and
  streams the sequence's pages ``BLOCK_KV`` tokens at a time with an online softmax, so every K and
  V byte is read from DRAM once.
* **split-K** (flash-decoding; ``paged_decode_attention_splitk_kernel`` then
  ``paged_decode_attention_reduce_kernel``): the context of each sequence is cut into
  ``num_splits`` contiguous partitions processed by separate programs; each writes its normalised
  partial output (fp32) and its log-sum-exp; the reduce kernel combines them. It fills the GPU when
  ``batch * num_kv_heads`` programs are too few (small batch, long context).

Layout (docs/contracts.md section 4): ``q`` ``[B, Hq, D]``; ``k_cache``/``v_cache``
``[num_pages, page_size, Hkv, D]``; ``block_table`` int32 ``[B, max_pages]``; ``context_lens`` int32
``[B]``. Token ``t`` of sequence ``b`` lives in page ``block_table[b, t // page_size]``, slot
``t % page_size``. Each tile looks its pages up per token, so ``BLOCK_KV`` and the page size are
independent (a tile may span several pages or part of one) and pages need not be contiguous.

Head dims that are not powers of two (80, 96) are padded to the next power of two with masks.
Softmax runs in base 2 (``exp2``) on fp32 scores; accumulation is fp32.

The launcher never reads device memory on the host (no ``.item()``, no ``max(context_lens)``): the
longest possible context is ``block_table.shape[1] * page_size``, and each split partition is sized
inside the kernel from the sequence's own length, so a launch can be captured in a CUDA graph.
A sequence of length 0 gets an all-zero output.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .common import DEFAULT_SM_COUNT, device_sm_count, is_interpreted, next_pow2



# --------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------
@triton.jit
def _attend_token_range(
    q,  # [GROUP_PAD, D_PAD] query group, in the cache's dtype (or fp32 when UPCAST)
    k_cache_ptr, v_cache_ptr, bt_row_ptr, kv_head, tok_start, tok_end, qk_scale,
    stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
    offs_d, d_mask,
    PAGE_SIZE: tl.constexpr, BLOCK_KV: tl.constexpr, GROUP_PAD: tl.constexpr, D_PAD: tl.constexpr,
    UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Online softmax of ``q`` over tokens ``[tok_start, tok_end)``; returns (acc, m, l) in fp32.

    ``m`` is the running max of the base-2 scores, ``l`` the running sum of ``exp2(s - m)``, ``acc``
    the unnormalised output. With no tokens: acc = 0, l = 0, m = -1e30.
    """
    m_i = tl.full([GROUP_PAD], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], dtype=tl.float32)
    offs_t0 = tl.arange(0, BLOCK_KV)
    k_head = k_cache_ptr + kv_head * stride_kh
    v_head = v_cache_ptr + kv_head * stride_vh
    for start in range(tok_start, tok_end, BLOCK_KV):
        offs_t = start + offs_t0
        t_mask = offs_t < tok_end
        page = tl.load(bt_row_ptr + offs_t // PAGE_SIZE, mask=t_mask, other=0).to(tl.int64)
        slot = offs_t % PAGE_SIZE
        kv_mask = t_mask[:, None] & d_mask[None, :]
        k = tl.load(k_head + page[:, None] * stride_kp + slot[:, None] * stride_ks + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_KV, D_PAD]
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [GROUP_PAD, BLOCK_KV]
        s = tl.where(t_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_head + page[:, None] * stride_vp + slot[:, None] * stride_vs + offs_d[None, :],
                    mask=kv_mask, other=0.0)  # [BLOCK_KV, D_PAD]
        if UPCAST:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _load_query_group(q_ptr, b, kv_head, stride_qb, stride_qh, offs_g, offs_d, g_mask, d_mask,
                      GROUP: tl.constexpr, UPCAST: tl.constexpr):
    q = tl.load(q_ptr + b * stride_qb + (kv_head * GROUP + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    return q


@triton.jit
def _group_offsets(GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr):
    """Rows (query heads of a group) and columns (head dim) of a padded tile, with their masks."""
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, D_PAD)
    return offs_g, offs_d, offs_g < GROUP, offs_d < HEAD_DIM


@triton.jit
def _attend_query_group(
    q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, b, kv_head, tok_start, tok_end, qk_scale,
    stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_bt,
    offs_g, offs_d, g_mask, d_mask,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D_PAD: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_KV: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The query group of KV head ``kv_head`` of sequence ``b`` over tokens ``[tok_start, tok_end)``.

    Returns (out, m, l) in fp32: ``out`` is normalised (0 with no tokens), ``m`` and ``l`` as in
    :func:`_attend_token_range`.
    """
    q = _load_query_group(q_ptr, b, kv_head, stride_qb, stride_qh, offs_g, offs_d, g_mask, d_mask, GROUP, UPCAST)
    acc, m_i, l_i = _attend_token_range(
        q, k_cache_ptr, v_cache_ptr, block_table_ptr + b.to(tl.int64) * stride_bt, kv_head, tok_start, tok_end,
        qk_scale, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, offs_d, d_mask,
        PAGE_SIZE, BLOCK_KV, GROUP_PAD, D_PAD, UPCAST, DOT_PRECISION)
    return acc / tl.where(l_i > 0, l_i, 1.0)[:, None], m_i, l_i


@triton.jit
def paged_decode_attention_v1_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, context_lens_ptr, qk_scale,
    stride_qb, stride_qh, stride_ob, stride_oh,
    stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_bt, max_pages,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    PAGE_SIZE: tl.constexpr, BLOCK_KV: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One program per (sequence, KV head): the whole context, online softmax, normalised output."""
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    ctx = tl.minimum(tl.load(context_lens_ptr + b), max_pages * PAGE_SIZE)
    offs_g, offs_d, g_mask, d_mask = _group_offsets(GROUP, GROUP_PAD, HEAD_DIM, D_PAD)
    out, m_i, l_i = _attend_query_group(
        q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, b, kv_head, 0, ctx, qk_scale,
        stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_bt,
        offs_g, offs_d, g_mask, d_mask, GROUP, GROUP_PAD, D_PAD, PAGE_SIZE, BLOCK_KV, UPCAST, DOT_PRECISION)
    o_ptrs = out_ptr + b * stride_ob + (kv_head * GROUP + offs_g)[:, None] * stride_oh + offs_d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def paged_decode_attention_splitk_kernel(
    part_out_ptr, part_lse_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, context_lens_ptr, qk_scale,
    stride_qb, stride_qh,
    stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_bt, max_pages,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    PAGE_SIZE: tl.constexpr, BLOCK_KV: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One program per (sequence, KV head, partition); writes fp32 partial output and base-2 LSE.

    Partitions are sized from the sequence's own length (a multiple of ``BLOCK_KV``), so ragged
    batches stay balanced; a partition past the end writes output 0 and LSE -inf.
    The partition count is the grid's third dimension. Partial buffers: ``part_out``
    ``[B, Hq, num_splits, HEAD_DIM]`` and ``part_lse`` ``[B, Hq, num_splits]``, contiguous.
    """
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)
    ctx = tl.minimum(tl.load(context_lens_ptr + b), max_pages * PAGE_SIZE)
    chunk = tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_KV) * BLOCK_KV
    tok_start = split * chunk
    tok_end = tl.minimum(tok_start + chunk, ctx)
    offs_g, offs_d, g_mask, d_mask = _group_offsets(GROUP, GROUP_PAD, HEAD_DIM, D_PAD)
    out, m_i, l_i = _attend_query_group(
        q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, b, kv_head, tok_start, tok_end, qk_scale,
        stride_qb, stride_qh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_bt,
        offs_g, offs_d, g_mask, d_mask, GROUP, GROUP_PAD, D_PAD, PAGE_SIZE, BLOCK_KV, UPCAST, DOT_PRECISION)
    has_tokens = l_i > 0
    lse = tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))  # -inf: empty
    heads = kv_head * GROUP + offs_g  # query heads of this group
    row = (b * (tl.num_programs(1) * GROUP) + heads) * num_splits + split  # index into [B, Hq, num_splits]
    tl.store(part_lse_ptr + row, lse, mask=g_mask)
    tl.store(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], out, mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def paged_decode_attention_reduce_kernel(
    out_ptr, part_out_ptr, part_lse_ptr, stride_ob, stride_oh, num_q_heads, num_splits,
    SPLITS_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
):
    """One program per (sequence, query head): ``out = sum_s w_s o_s / sum_s w_s``, ``w_s = 2^(lse_s - max lse)``."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, D_PAD)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    row = (b * num_q_heads + h) * num_splits + offs_s
    lse = tl.load(part_lse_ptr + row, mask=s_mask, other=float("-inf"))
    lse_max = tl.max(lse, 0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)  # every partition empty: weights all 0
    w = tl.exp2(lse - lse_max)
    parts = tl.load(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    denom = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


# --------------------------------------------------------------------------------------------------
# Heuristic and launcher
# --------------------------------------------------------------------------------------------------
def choose_num_splits(
    batch: int,
    num_kv_heads: int,
    context: int,
    sm_count: int = DEFAULT_SM_COUNT,
    *,
    waves: float = 2.0,
    min_tokens_per_split: int = 512,
    max_splits: int = 64,
) -> int:
    """How many partitions split-K should cut each context into (1 means v1).

    v1 launches ``batch * num_kv_heads`` programs. When that already fills ``waves`` waves of SMs
    (one program per SM per wave), splitting only adds the reduce kernel and partial traffic:
    return 1. Otherwise split so that ``batch * num_kv_heads * splits`` reaches about
    ``waves * sm_count`` programs, keeping at least ``min_tokens_per_split`` tokens per partition
    (shorter ones are dominated by the fixed cost of a program and of the reduce) and at most
    ``max_splits`` partitions. ``context`` is the longest possible context (``max_pages * page_size``:
    the launcher does not read ``context_lens`` on the host). Pure function of its arguments.
    """
    if min(batch, num_kv_heads, context, sm_count) <= 0:
        raise ValueError("batch, num_kv_heads, context and sm_count must be positive")
    programs = batch * num_kv_heads
    target = int(math.ceil(waves * sm_count))
    if programs >= target:
        return 1
    splits = -(-target // programs)
    splits = min(splits, context // min_tokens_per_split, max_splits)
    return max(1, splits)


def _dot_settings(dtype: torch.dtype, kernel) -> tuple[bool, str]:
    """(UPCAST, DOT_PRECISION) for a cache dtype.

    The interpreter computes ``tl.dot`` on bf16 operands wrongly, so interpreted bf16 runs upcast
    the tiles to fp32 inside the kernel (the compiled GPU kernel keeps bf16 tensor-core dots).
    fp32 caches use IEEE fp32 dots rather than TF32 so fp32 results stay exact enough to compare.
    """
    upcast = dtype == torch.bfloat16 and is_interpreted(kernel)
    precision = "ieee" if dtype == torch.float32 or upcast else "tf32"
    return upcast, precision


def _check_inputs(q, k_cache, v_cache, block_table, context_lens) -> None:
    if q.dim() != 3:
        raise ValueError(f"q must be [batch, num_q_heads, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError("k_cache and v_cache must both be [num_pages, page_size, num_kv_heads, head_dim], "
                         f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    bsz, hq, d = q.shape
    _, _, hkv, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"head_dim of q ({d}) and of the cache ({dk}) differ")
    if not 16 <= d <= 256:
        raise ValueError(f"head_dim must be in 16..256, got {d}")
    if hq % hkv:
        raise ValueError(f"num_q_heads ({hq}) must be a multiple of num_kv_heads ({hkv})")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q must be fp16, bf16 or fp32, got {q.dtype}")
    if k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        raise ValueError(f"q, k_cache and v_cache must share a dtype, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if block_table.dim() != 2 or block_table.shape[0] != bsz or block_table.dtype != torch.int32:
        raise ValueError(f"block_table must be int32 [batch={bsz}, max_pages], got {block_table.dtype} "
                         f"{tuple(block_table.shape)}")
    if context_lens.shape != (bsz,) or context_lens.dtype != torch.int32:
        raise ValueError(f"context_lens must be int32 [batch={bsz}], got {context_lens.dtype} {tuple(context_lens.shape)}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head_dim) dimension")
    if block_table.stride(1) != 1 or context_lens.stride(0) != 1:
        raise ValueError("block_table rows and context_lens must be contiguous")
    devices = {t.device for t in (q, k_cache, v_cache, block_table, context_lens)}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(map(str, devices))}")


def default_block_kv(head_dim: int) -> int:
    """Tokens per tile when the caller gives none: 64 for head_dim <= 64, else 32.

    Chosen from the sm_90 builds (``python -m gpuprobe.kernels.hopper_build``): with 4 warps a
    64-token tile of a head_dim padded to 128 (80, 96, 128) spills registers once the loads cannot
    be vectorised (strides or pointers not multiples of 16 elements); a 32-token tile never does.
    """
    return 64 if max(16, next_pow2(head_dim)) <= 64 else 32


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None = None,
    num_splits: int | None = None,
    *,
    block_kv: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    out: torch.Tensor | None = None,
    sm_count: int | None = None,
) -> torch.Tensor:
    """Decode attention of ``q`` ``[B, Hq, D]`` over a paged KV cache; returns ``out`` ``[B, Hq, D]``.

    ``scale`` defaults to ``1/sqrt(D)``. ``num_splits``: ``None`` picks it with
    :func:`choose_num_splits` (from B, Hkv, ``block_table.shape[1] * page_size`` and the SM count),
    ``1`` runs v1, ``> 1`` runs split-K with that many partitions. Knobs: ``block_kv`` (tokens per
    tile, a power of two >= 16; default :func:`default_block_kv`), ``num_warps``, ``num_stages``.
    ``out`` (``[B, Hq, D]``, q's dtype, last dim contiguous) is written in place when given.
    ``sm_count`` overrides the device's SM count in the heuristic. No host synchronisation.
    """
    _check_inputs(q, k_cache, v_cache, block_table, context_lens)
    bsz, hq, d = q.shape
    _, page_size, hkv, _ = k_cache.shape
    max_pages = block_table.shape[1]
    block_kv = default_block_kv(d) if block_kv is None else int(block_kv)
    if block_kv < 16 or block_kv & (block_kv - 1):
        raise ValueError(f"block_kv must be a power of two >= 16, got {block_kv}")
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype} on {q.device}, contiguous in its last dimension")
    if bsz == 0 or max_pages == 0:
        return out.zero_()
    if num_splits is None:
        num_splits = choose_num_splits(bsz, hkv, max_pages * page_size, sm_count or device_sm_count(q.device))
    num_splits = int(num_splits)
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")

    group = hq // hkv
    meta = dict(GROUP=group, GROUP_PAD=max(16, next_pow2(group)), HEAD_DIM=d, D_PAD=max(16, next_pow2(d)),
                PAGE_SIZE=page_size, BLOCK_KV=block_kv)
    qk_scale = (1.0 / math.sqrt(d) if scale is None else float(scale)) * math.log2(math.e)
    cache_strides = (*k_cache.stride()[:3], *v_cache.stride()[:3])

    if num_splits == 1:
        upcast, precision = _dot_settings(q.dtype, paged_decode_attention_v1_kernel)
        paged_decode_attention_v1_kernel[(bsz, hkv)](
            out, q, k_cache, v_cache, block_table, context_lens, qk_scale,
            q.stride(0), q.stride(1), out.stride(0), out.stride(1), *cache_strides, block_table.stride(0), max_pages,
            **meta, UPCAST=upcast, DOT_PRECISION=precision, num_warps=num_warps, num_stages=num_stages)
        return out

    part_out = torch.empty((bsz, hq, num_splits, d), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((bsz, hq, num_splits), dtype=torch.float32, device=q.device)
    upcast, precision = _dot_settings(q.dtype, paged_decode_attention_splitk_kernel)
    paged_decode_attention_splitk_kernel[(bsz, hkv, num_splits)](
        part_out, part_lse, q, k_cache, v_cache, block_table, context_lens, qk_scale,
        q.stride(0), q.stride(1), *cache_strides, block_table.stride(0), max_pages,
        **meta, UPCAST=upcast, DOT_PRECISION=precision,
        num_warps=num_warps, num_stages=num_stages)
    paged_decode_attention_reduce_kernel[(bsz, hq)](
        out, part_out, part_lse, out.stride(0), out.stride(1), hq, num_splits,
        SPLITS_PAD=next_pow2(num_splits), HEAD_DIM=d, D_PAD=meta["D_PAD"],
        num_warps=4 if meta["D_PAD"] >= 128 else 2)
    return out
