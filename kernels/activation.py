"""The MLP's activation in Triton: SiLU-and-mul for SwiGLU (Qwen2, Llama), ReLU (OPT), GELU; the functions
and which model activations use them are :mod:`.activation_table`.

Gated (``gated=True``): the input is the fused ``gate_up_proj`` output ``[N, 2I]``, gate in the
first half and up in the second (the engine's layout), and ``out [N, I] = act(gate) * up``.
Ungated: ``out [N, I] = act(x)``. One read of the input and one write of the output, fp32 math,
one kernel (the unfused SwiGLU runs SiLU and the multiply as two, with a ``chunk`` between).

Grid ``(N, cdiv(I, BLOCK))``; row offsets int64. Graph-safe: no host reads of device data.
Laid out like the Triton tutorials: kernel, launcher, PyTorch reference, check, benchmark.
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .activation_table import FUNCTIONS, apply_torch
from .common import check_rows, time_s, torch_dtype
#: Columns per program (4 warps, 8 elements per thread).
BLOCK = 1024


@triton.jit
def _apply(x, ACT: tl.constexpr):
    """``ACT`` (a function of :data:`.activation_table.FUNCTIONS`) of an fp32 tile."""
    if ACT == "silu":
        y = x * tl.sigmoid(x)
    elif ACT == "relu":
        y = tl.maximum(x, 0.0)
    elif ACT == "gelu":
        y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    else:  # gelu_tanh: 0.5 x (1 + tanh(u)), tanh(u) = 2 sigmoid(2u) - 1
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        y = x * tl.sigmoid(2.0 * u)
    return y


@triton.jit
def activation_kernel(out_ptr, x_ptr, n_cols, stride_x, stride_out,
                      ACT: tl.constexpr, GATED: tl.constexpr, BLOCK: tl.constexpr):
    """``out[row, c] = ACT(x[row, c]) (* x[row, n_cols + c] when GATED)`` for ``c < n_cols``."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    x_row = x_ptr + row * stride_x
    y = _apply(tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32), ACT)
    if GATED:
        y = y * tl.load(x_row + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def fused_activation(x: torch.Tensor, act: str = "silu", *, gated: bool = True,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(gate) * up`` of ``x [N, 2I]`` (``gated``) or ``act(x)`` of ``x [N, I]``; returns ``out [N, I]``.

    ``act``: an elementwise function of :data:`.activation_table.FUNCTIONS`. fp16 / bf16 / fp32 with fp32 math; ``x`` and ``out`` need
    a contiguous last dimension (a row stride is free). No host synchronisation.
    """
    if act not in FUNCTIONS:
        raise ValueError(f"act must be one of {tuple(FUNCTIONS)}, got {act!r}")
    check_rows(x, "cols")
    n, width = x.shape
    if gated and width % 2:
        raise ValueError(f"a gated activation needs an even width (gate | up), got {width}")
    cols = width // 2 if gated else width
    if out is None:
        out = torch.empty((n, cols), dtype=x.dtype, device=x.device)
    elif out.shape != (n, cols) or out.dtype != x.dtype or out.device != x.device or out.stride(-1) != 1:
        raise ValueError(f"out must be [{n}, {cols}] {x.dtype} on {x.device}, contiguous in its last dimension")
    if n == 0 or cols == 0 or x.device.type == "meta":  # meta: shapes checked, nothing to launch
        return out
    activation_kernel[(n, triton.cdiv(cols, BLOCK))](out, x, cols, x.stride(0), out.stride(0),
                                                      ACT=act, GATED=gated, BLOCK=BLOCK, num_warps=4)
    return out


# --------------------------------------------------------------------------------------------------
# Reference, check, benchmark
# --------------------------------------------------------------------------------------------------
def activation_reference(x: torch.Tensor, act: str = "silu", *, gated: bool = True,
                         compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The same in ``compute_dtype`` with torch's own activations (:func:`.activation_table.apply_torch`)."""
    return apply_torch(act, gated, x.to(compute_dtype))


def activation_bytes(rows: int, cols: int, elt_bytes: int, gated: bool = True) -> int:
    """DRAM bytes at least: the input (gate and up, or x) read once, the output written once."""
    return rows * cols * elt_bytes * ((2 if gated else 1) + 1)


def check_activation(rows: int, cols: int, dtype: torch.dtype = torch.bfloat16, *, act: str = "silu",
                     gated: bool = True, device: str | torch.device = "cuda", seed: int = 0) -> float:
    """Max abs error of the kernel against the float64 reference on fresh random inputs."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.randn(rows, cols * (2 if gated else 1), generator=g, dtype=torch.float64) * 2).to(dtype).to(device)
    got = fused_activation(x, act, gated=gated).double()
    return (got - activation_reference(x, act, gated=gated)).abs().max().item()


def bench_activation(rows: int, cols: int, dtype: str = "bf16", *, act: str = "silu", gated: bool = True,
                     rep_ms: int = 100) -> dict[str, Any]:
    """Kernel and the unfused PyTorch ops timed on the GPU (``dtype`` a normalised name); the kernel's
    bytes next to its time."""
    x = torch.randn(rows, cols * (2 if gated else 1), device="cuda", dtype=torch_dtype(dtype))
    fused_s = time_s(lambda: fused_activation(x, act, gated=gated), rep_ms=rep_ms)
    unfused_s = time_s(lambda: apply_torch(act, gated, x), rep_ms=rep_ms)
    return {"kernel": "activation", "act": act, "gated": gated, "rows": rows, "cols": cols, "dtype": dtype,
            "bytes": activation_bytes(rows, cols, x.element_size(), gated), "time_s": fused_s,
            "unfused_time_s": unfused_s}
