"""Rotary embedding of q and k fused with the paged KV-cache write, in Triton.

One program per token ``n``. It reads the token's q ``[Hq, D]``, k and v ``[Hkv, D]`` (views of
the fused qkv projection are fine: any row and head stride), rotates q and k by the cos/sin rows
of ``positions[n]`` (rotate-half / neox layout, as the engine's ``apply_rope``: the first and second
halves of each head are the two coordinates of a pair), writes rotated q to ``q_out`` and rotated k
and v into the cache at ``slot_mapping[n]``. ``rotate=False`` (OPT, learned positions) only writes
k and v. One kernel instead of the unfused RoPE's dozen (chunk, negate, concat, multiplies, adds
per tensor) and the two cache writes.

Cache layout (docs/contracts.md section 4): ``k_cache``/``v_cache`` ``[num_pages, page_size, Hkv, D]``,
any strides except a contiguous head_dim; flat slot ``s`` is page ``s // page_size``, offset
``s % page_size``. A slot < 0 is skipped (a padding token). The same addressing serves a dense
cache ``[B, max_len, Hkv, D]`` (a transposed view of ``[B, Hkv, max_len, D]``): ``page_size`` is
``max_len`` and the slot of row ``b`` at position ``p`` is ``b * max_len + p``.

``cos``/``sin``: ``[max_positions, D]`` tables whose halves repeat (the engine's ``RopeTable``);
the kernel reads the first half. Math in fp32; offsets int64. Graph-safe: positions and slots are
read on the device only.
Laid out like the Triton tutorials: kernel, launcher, PyTorch reference, check, benchmark.
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .common import next_pow2, time_s, torch_dtype


@triton.jit
def _rotate_heads(src_ptr, dst_ptr, stride_src_h, stride_dst_h, offs_h, offs_d, mask, c, s,
                  HALF: tl.constexpr, ROTATE: tl.constexpr):
    """Load ``[heads, HALF]`` x 2 halves at ``src_ptr``, rotate them (when ROTATE), store at ``dst_ptr``."""
    src = src_ptr + offs_h[:, None] * stride_src_h + offs_d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    if ROTATE:
        y1 = x1 * c[None, :] - x2 * s[None, :]
        y2 = x2 * c[None, :] + x1 * s[None, :]
    else:
        y1, y2 = x1, x2
    dst = dst_ptr + offs_h[:, None] * stride_dst_h + offs_d[None, :]
    tl.store(dst, y1.to(dst_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, y2.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rotary_kv_write_kernel(
    q_out_ptr, k_cache_ptr, v_cache_ptr, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, positions_ptr, slot_mapping_ptr,
    stride_qn, stride_qh, stride_on, stride_oh, stride_kn, stride_kh, stride_vn, stride_vh,
    stride_cos, stride_sin, stride_kp, stride_ks, stride_kch, stride_vp, stride_vs, stride_vch, page_size,
    NUM_Q_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    HQ_PAD: tl.constexpr, HKV_PAD: tl.constexpr, ROTATE: tl.constexpr,
):
    """Token ``program_id(0)``: q rotated into ``q_out``; k rotated and v copied into the cache slot."""
    n = tl.program_id(0).to(tl.int64)
    offs_d = tl.arange(0, HALF_PAD)
    d_mask = offs_d < HALF
    c = tl.zeros([HALF_PAD], dtype=tl.float32)
    s = tl.zeros([HALF_PAD], dtype=tl.float32)
    if ROTATE:
        pos = tl.load(positions_ptr + n).to(tl.int64)
        c = tl.load(cos_ptr + pos * stride_cos + offs_d, mask=d_mask, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + pos * stride_sin + offs_d, mask=d_mask, other=0.0).to(tl.float32)
        offs_hq = tl.arange(0, HQ_PAD)
        q_mask = (offs_hq < NUM_Q_HEADS)[:, None] & d_mask[None, :]
        _rotate_heads(q_ptr + n * stride_qn, q_out_ptr + n * stride_on, stride_qh, stride_oh, offs_hq, offs_d,
                      q_mask, c, s, HALF, True)
    slot = tl.load(slot_mapping_ptr + n).to(tl.int64)
    page = slot // page_size
    offset = slot % page_size
    offs_hk = tl.arange(0, HKV_PAD)
    head_ok = (offs_hk < NUM_KV_HEADS) & ((offs_hk * 0 + slot) >= 0)  # slot < 0: a padding token, no write
    kv_mask = head_ok[:, None] & d_mask[None, :]
    _rotate_heads(k_ptr + n * stride_kn, k_cache_ptr + page * stride_kp + offset * stride_ks, stride_kh, stride_kch,
                  offs_hk, offs_d, kv_mask, c, s, HALF, ROTATE)
    _rotate_heads(v_ptr + n * stride_vn, v_cache_ptr + page * stride_vp + offset * stride_vs, stride_vh, stride_vch,
                  offs_hk, offs_d, kv_mask, c, s, HALF, False)


def rotary_launch_warps(num_q_heads: int, head_dim: int) -> int:
    """4 warps, 8 for the widest q tiles (40-64 heads of 128): about 32 fp32 values per thread per half."""
    return 8 if next_pow2(num_q_heads) * next_pow2(head_dim // 2) > 2048 else 4


def rotary_kv_write(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    positions: torch.Tensor | None = None,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    *,
    q_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate q ``[N, Hq, D]`` and k ``[N, Hkv, D]`` by ``positions`` and write k, v into the cache.

    Returns ``q_out`` (``[N, Hq, D]``, q's dtype; a new contiguous tensor unless given). Without
    ``positions`` / ``cos`` / ``sin`` nothing is rotated: k and v are written and q is returned as is.
    ``slot_mapping`` int64 ``[N]`` (< 0: skip the token); ``positions`` int64 ``[N]``. No host
    synchronisation.
    """
    rotate = positions is not None
    if rotate and (cos is None or sin is None):
        raise ValueError("rotation needs cos and sin tables with the positions")
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q must be [N, Hq, D] and k, v [N, Hkv, D]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    n, hq, d = q.shape
    hkv = k.shape[1]
    if d % 2:
        raise ValueError(f"head_dim must be even (two rotated halves), got {d}")
    if k_cache.dim() != 4 or v_cache.shape != k_cache.shape or tuple(k_cache.shape[2:]) != (hkv, d):
        raise ValueError(f"k_cache and v_cache must be [pages, page_size, {hkv}, {d}], got {tuple(k_cache.shape)} "
                         f"and {tuple(v_cache.shape)}")
    if len({q.dtype, k.dtype, v.dtype, k_cache.dtype, v_cache.dtype}) != 1:
        raise ValueError("q, k, v and the caches must share a dtype")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q must be fp16, bf16 or fp32, got {q.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in its last (head_dim) dimension")
    if slot_mapping.shape != (n,) or slot_mapping.dtype != torch.int64:
        raise ValueError(f"slot_mapping must be int64 [{n}], got {slot_mapping.dtype} {tuple(slot_mapping.shape)}")
    if rotate:
        if positions.shape != (n,) or positions.dtype != torch.int64:
            raise ValueError(f"positions must be int64 [{n}], got {positions.dtype} {tuple(positions.shape)}")
        for name, t in (("cos", cos), ("sin", sin)):
            if t.dim() != 2 or t.shape[1] < d // 2 or t.stride(1) != 1:
                raise ValueError(f"{name} must be [positions, >= {d // 2}] with a contiguous last dimension")
    if not rotate:
        q_out = q
    elif q_out is None:
        q_out = torch.empty((n, hq, d), dtype=q.dtype, device=q.device)
    elif q_out.shape != q.shape or q_out.dtype != q.dtype or q_out.stride(-1) != 1:
        raise ValueError(f"q_out must be {tuple(q.shape)} {q.dtype}, contiguous in its last dimension")
    if n == 0 or q.device.type == "meta":  # meta: shapes checked, nothing to launch
        return q_out
    tables = (cos, sin, positions) if rotate else (k, k, slot_mapping)  # placeholders, never read
    rotary_kv_write_kernel[(n,)](
        q_out, k_cache, v_cache, q, k, v, tables[0], tables[1], tables[2], slot_mapping,
        q.stride(0), q.stride(1), q_out.stride(0), q_out.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cos.stride(0) if rotate else 0, sin.stride(0) if rotate else 0,
        *k_cache.stride()[:3], *v_cache.stride()[:3], k_cache.shape[1],
        NUM_Q_HEADS=hq, NUM_KV_HEADS=hkv, HALF=d // 2, HALF_PAD=next_pow2(max(d // 2, 1)),
        HQ_PAD=next_pow2(hq), HKV_PAD=next_pow2(hkv), ROTATE=rotate, num_warps=rotary_launch_warps(hq, d))
    return q_out


# --------------------------------------------------------------------------------------------------
# Reference, check, benchmark
# --------------------------------------------------------------------------------------------------
def rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                     compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``x [N, H, D]`` rotated by the table rows of ``positions`` (rotate-half), in ``compute_dtype``."""
    d = x.shape[-1]
    c = cos[positions, : d // 2].to(compute_dtype)[:, None, :]
    s = sin[positions, : d // 2].to(compute_dtype)[:, None, :]
    x1, x2 = x.to(compute_dtype).chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def rotary_bytes(tokens: int, num_q_heads: int, num_kv_heads: int, head_dim: int, elt_bytes: int,
                 rotate: bool = True) -> int:
    """DRAM bytes at least: q, k, v read; q_out, k, v written; cos/sin half rows; positions and slots (int64)."""
    qkv = tokens * (num_q_heads + 2 * num_kv_heads) * head_dim * elt_bytes
    if not rotate:
        kv = tokens * 2 * num_kv_heads * head_dim * elt_bytes
        return 2 * kv + 8 * tokens
    return 2 * qkv + tokens * head_dim * elt_bytes + 16 * tokens


def check_rotary_kv_write(tokens: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                          dtype: torch.dtype = torch.bfloat16, *, page_size: int = 16,
                          device: str | torch.device = "cuda", seed: int = 0) -> dict[str, float]:
    """The kernel against the float64 reference on fresh random inputs, each token at a random slot."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    pages = tokens // page_size + 2
    qkv = torch.randn(tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=g).to(dtype).to(device)
    q, k, v = qkv.split((num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim), dim=-1)
    q, k, v = (t.view(tokens, -1, head_dim) for t in (q, k, v))
    positions = torch.randint(0, 4096, (tokens,), generator=g).to(device)
    angles = torch.arange(4096, dtype=torch.float64)[:, None] * torch.rand(head_dim // 2, generator=g, dtype=torch.float64)
    cos, sin = (torch.cat((f(angles),) * 2, dim=-1).to(dtype).to(device) for f in (torch.cos, torch.sin))
    slots = torch.randperm(pages * page_size, generator=g)[:tokens].to(device)
    kc = torch.zeros(pages, page_size, num_kv_heads, head_dim, dtype=dtype, device=device)
    vc = torch.zeros_like(kc)
    q_out = rotary_kv_write(q, k, v, kc, vc, slots, positions, cos, sin)
    flat_k, flat_v = kc.view(-1, num_kv_heads, head_dim)[slots], vc.view(-1, num_kv_heads, head_dim)[slots]
    return {"q_max_abs_err": (q_out.double() - rotate_reference(q, cos, sin, positions)).abs().max().item(),
            "k_max_abs_err": (flat_k.double() - rotate_reference(k, cos, sin, positions)).abs().max().item(),
            "v_max_abs_err": (flat_v.double() - v.double()).abs().max().item()}


def bench_rotary_kv_write(tokens: int, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: str = "bf16", *,
                          page_size: int = 16, rep_ms: int = 100) -> dict[str, Any]:
    """Kernel and the unfused PyTorch ops (RoPE of q and k, two index_copy_ writes) timed on the GPU
    (``dtype`` a normalised name)."""
    dt = torch_dtype(dtype)
    qkv = torch.randn(tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, device="cuda", dtype=dt)
    q, k, v = qkv.split((num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim), dim=-1)
    q, k, v = (t.view(tokens, -1, head_dim) for t in (q, k, v))
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    cos, sin = torch.randn(4096, head_dim, device="cuda", dtype=dt), torch.randn(4096, head_dim, device="cuda", dtype=dt)
    pages = tokens // page_size + 1
    kc = torch.randn(pages, page_size, num_kv_heads, head_dim, device="cuda", dtype=dt)
    vc = torch.randn_like(kc)
    slots = torch.randperm(pages * page_size, device="cuda")[:tokens]
    fused_s = time_s(lambda: rotary_kv_write(q, k, v, kc, vc, slots, positions, cos, sin), rep_ms=rep_ms)

    def unfused():
        c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)

        def rope(x):
            x1, x2 = x.chunk(2, dim=-1)
            return x * c + torch.cat((-x2, x1), dim=-1) * s

        qr, kr = rope(q), rope(k)
        kc.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, kr)
        vc.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, v)
        return qr

    unfused_s = time_s(unfused, rep_ms=rep_ms)
    return {"kernel": "rotary_kv_write", "tokens": tokens, "heads": f"{num_q_heads}/{num_kv_heads}/{head_dim}",
            "dtype": dtype, "bytes": rotary_bytes(tokens, num_q_heads, num_kv_heads, head_dim, qkv.element_size()),
            "time_s": fused_s, "unfused_time_s": unfused_s}
