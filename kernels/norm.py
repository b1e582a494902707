"""Residual add fused with RMSNorm (Qwen2, Llama) or LayerNorm (OPT), in Triton.

One program per row (token) of ``x [N, H]``. With a residual stream ``residual [N, H]`` it

1. adds ``x + residual`` in fp32 and rounds the sum to the residual's dtype (as the unfused
   ``x = x + o`` does), storing it **in place** into ``residual`` (the new residual stream);
2. normalises that sum in fp32 (RMSNorm: ``x / sqrt(mean(x^2) + eps)``; LayerNorm: centred and
   divided by ``sqrt(var + eps)``), scales by ``weight`` (and adds ``bias``) and writes ``out``.

Without a residual (the first layer's ``input_norm``) it is a plain norm. ``store_residual=False``
skips the store (the final norm: nothing reads the stream afterwards). A row is read once and
written once: one kernel instead of the add, the norm's four or five elementwise kernels and the
dtype casts of the unfused ops.

Graph-safe: shapes and strides are read on the host, data never; row offsets are int64.
Laid out like the Triton tutorials: kernel, launcher, PyTorch reference, check, benchmark.
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .common import check_rows, next_pow2, time_s, torch_dtype

NORM_KINDS = ("rms", "layer")


# --------------------------------------------------------------------------------------------------
# Kernel
# --------------------------------------------------------------------------------------------------
@triton.jit
def fused_add_norm_kernel(
    out_ptr, x_ptr, residual_ptr, weight_ptr, bias_ptr,
    n_cols, stride_out, stride_x, stride_res, eps,
    HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    LAYERNORM: tl.constexpr, BLOCK: tl.constexpr,
):
    """``out[row] = norm(x[row] (+ residual[row])) * weight (+ bias)``; the sum stored into ``residual``."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        res_ptrs = residual_ptr + row * stride_res + offs
        summed = (x + tl.load(res_ptrs, mask=mask, other=0.0).to(tl.float32)).to(residual_ptr.dtype.element_ty)
        if STORE_RESIDUAL:
            tl.store(res_ptrs, summed, mask=mask)
        x = summed.to(tl.float32)
    if LAYERNORM:
        mean = tl.sum(x, axis=0) / n_cols
        centred = tl.where(mask, x - mean, 0.0)
        y = centred * tl.rsqrt(tl.sum(centred * centred, axis=0) / n_cols + eps)
    else:
        y = x * tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    y = y * tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------
def norm_launch_config(hidden: int) -> tuple[int, int]:
    """``(BLOCK, num_warps)`` for a row of ``hidden`` elements: the whole row in one tile, about 8
    elements per thread up to 8 warps (16 elements per thread at H = 8192), so nothing spills."""
    block = next_pow2(max(hidden, 16))
    return block, max(1, min(8, block // 256))


def _check_rows(name: str, t: torch.Tensor, like: torch.Tensor) -> None:
    if t.shape != like.shape or t.dtype != like.dtype or t.device != like.device:
        raise ValueError(f"{name} must be {tuple(like.shape)} {like.dtype} on {like.device}, got "
                         f"{tuple(t.shape)} {t.dtype} on {t.device}")
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")


def fused_add_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    *,
    residual: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    kind: str = "rms",
    store_residual: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Norm of ``x [N, H]`` (plus ``residual``, updated in place); returns ``out [N, H]`` in x's dtype.

    ``kind``: ``rms`` (RMSNorm, ``bias`` must be None) or ``layer`` (LayerNorm). ``weight``/``bias``
    ``[H]``. ``residual`` ``[N, H]`` in x's dtype: receives ``x + residual`` unless ``store_residual``
    is False. fp16 / bf16 / fp32; fp32 math. No host synchronisation.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"kind must be one of {NORM_KINDS}, got {kind!r}")
    check_rows(x, "hidden")
    n, h = x.shape
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.shape != (h,) or p.stride(0) != 1 or p.device != x.device):
            raise ValueError(f"{name} must be a contiguous [{h}] tensor on {x.device}, got {tuple(p.shape)}")
    if bias is not None and kind == "rms":
        raise ValueError("RMSNorm has no bias")
    if residual is not None:
        _check_rows("residual", residual, x)
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    else:
        _check_rows("out", out, x)
    if n == 0 or x.device.type == "meta":  # meta: shapes checked, nothing to launch
        return out
    block, warps = norm_launch_config(h)
    fused_add_norm_kernel[(n,)](
        out, x, residual if residual is not None else x, weight, bias if bias is not None else weight,
        h, out.stride(0), x.stride(0), residual.stride(0) if residual is not None else 0, float(eps),
        HAS_RESIDUAL=residual is not None, STORE_RESIDUAL=residual is not None and store_residual,
        HAS_BIAS=bias is not None, LAYERNORM=kind == "layer", BLOCK=block, num_warps=warps)
    return out


# --------------------------------------------------------------------------------------------------
# Reference, check, benchmark
# --------------------------------------------------------------------------------------------------
def add_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, *, residual: torch.Tensor | None = None,
                       bias: torch.Tensor | None = None, kind: str = "rms",
                       compute_dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(out, new_residual)`` in ``compute_dtype`` (new_residual None without a residual)."""
    s = x.to(compute_dtype) + (residual.to(compute_dtype) if residual is not None else 0)
    if kind == "layer":
        c = s - s.mean(-1, keepdim=True)
        y = c * torch.rsqrt((c * c).mean(-1, keepdim=True) + eps)
    else:
        y = s * torch.rsqrt((s * s).mean(-1, keepdim=True) + eps)
    y = y * weight.to(compute_dtype) + (bias.to(compute_dtype) if bias is not None else 0)
    return y, (s if residual is not None else None)


def add_norm_bytes(rows: int, hidden: int, elt_bytes: int, *, residual: bool = True, store_residual: bool = True,
                   bias: bool = False) -> int:
    """DRAM bytes one launch moves at least: x (+ residual) read, out (+ new residual) written, weight (+ bias)."""
    row = rows * hidden * elt_bytes
    return (row * (2 if residual else 1) + hidden * elt_bytes * (2 if bias else 1)
            + row * (2 if residual and store_residual else 1))


def check_add_norm(rows: int, hidden: int, dtype: torch.dtype = torch.bfloat16, *, kind: str = "rms",
                   residual: bool = True, device: str | torch.device = "cuda", seed: int = 0) -> dict[str, float]:
    """The kernel against the float64 reference on fresh random inputs: max abs errors of out and residual."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)

    x, w = rand(rows, hidden), rand(hidden, scale=0.5) + 1
    b = rand(hidden, scale=0.1) if kind == "layer" else None
    res = rand(rows, hidden) if residual else None
    ref, ref_res = add_norm_reference(x, w, 1e-5, residual=res, bias=b, kind=kind)
    out = fused_add_norm(x, w, 1e-5, residual=res, bias=b, kind=kind)
    err = {"out_max_abs_err": (out.double() - ref).abs().max().item()}
    if res is not None:
        err["residual_max_abs_err"] = (res.double() - ref_res).abs().max().item()
    return err


def bench_add_norm(rows: int, hidden: int, dtype: str = "bf16", *, kind: str = "rms", rep_ms: int = 100) -> dict[str, Any]:
    """Kernel and the unfused PyTorch ops (add, then norm) timed on the GPU (``dtype`` a normalised name);
    the kernel's bytes next to its time."""
    dt = torch_dtype(dtype)
    x = torch.randn(rows, hidden, device="cuda", dtype=dt)
    res = torch.randn_like(x)
    w = torch.randn(hidden, device="cuda", dtype=dt)
    b = torch.randn(hidden, device="cuda", dtype=dt) if kind == "layer" else None
    fused_s = time_s(lambda: fused_add_norm(x, w, 1e-6, residual=res, bias=b, kind=kind), rep_ms=rep_ms)

    def unfused():
        s = x + res
        if kind == "layer":
            return torch.nn.functional.layer_norm(s, (hidden,), w, b, 1e-6)
        sf = s.float()
        return w * (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dt)

    unfused_s = time_s(unfused, rep_ms=rep_ms)
    return {"kernel": "fused_add_norm", "kind": kind, "rows": rows, "hidden": hidden, "dtype": dtype,
            "bytes": add_norm_bytes(rows, hidden, x.element_size(), bias=b is not None), "time_s": fused_s,
            "unfused_time_s": unfused_s}
