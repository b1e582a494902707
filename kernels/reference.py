"""The one plain-PyTorch reference for the paged KV layout (docs/contracts.md section 4).

Layout, per layer: ``k_cache``, ``v_cache`` are ``[num_pages, page_size, num_kv_heads, head_dim]``;
``block_table`` is ``int32 [batch, max_pages]`` (page ids of each sequence, in order);
``context_lens`` is ``int32 [batch]``. Token ``t`` of sequence ``b`` lives at
``page = block_table[b, t // page_size]``, slot ``t % page_size``.

Used by the decode engine's ``torch`` attention backend and by every kernel test. It gathers
the pages of every sequence into a padded dense tensor and runs SDPA on it, so it moves several
times the KV bytes of a paged kernel: a correctness reference, not a fast path. It has no host
synchronisation (shapes come from ``block_table``'s static width), so it is CUDA-graph safe.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """Pages of every sequence as a dense ``[batch, num_kv_heads, max_pages * page_size, head_dim]``."""
    b, max_pages = block_table.shape
    _, page_size, hkv, d = cache.shape
    pages = cache[block_table.long()]  # [B, max_pages, page_size, Hkv, D]
    return pages.reshape(b, max_pages * page_size, hkv, d).transpose(1, 2)


def paged_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Decode attention of one query token per sequence over its paged context.

    ``q``: ``[B, Hq, D]``; returns ``[B, Hq, D]`` in ``q``'s dtype. ``compute_dtype`` (e.g.
    ``torch.float64`` in tests) sets the precision of the arithmetic; default: ``q``'s dtype.
    """
    bsz, hq, d = q.shape
    hkv = k_cache.shape[2]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of KV heads ({hkv})")
    cdt = compute_dtype or q.dtype
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    k = gather_kv(k_cache, block_table).to(cdt)  # [B, Hkv, L, D]
    v = gather_kv(v_cache, block_table).to(cdt)
    group = hq // hkv
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    length = k.shape[2]
    valid = torch.arange(length, device=q.device)[None, :] < context_lens.to(q.device).long()[:, None]
    mask = valid[:, None, None, :]  # [B, 1, 1, L], True = attend
    out = F.scaled_dot_product_attention(q.to(cdt).unsqueeze(2), k, v, attn_mask=mask, scale=scale)
    return out.squeeze(2).to(q.dtype)


def gemm_reference(x: torch.Tensor, w: torch.Tensor, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``y = x @ w`` for ``x: [M, K]``, ``w: [K, N]``, computed in ``compute_dtype``, returned in x's dtype."""
    cdt = compute_dtype or x.dtype
    return (x.to(cdt) @ w.to(cdt)).to(x.dtype)
