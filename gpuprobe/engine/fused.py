"""The engine's kernel modes: ``fused`` (the project's Triton kernels, the default) or ``unfused`` (PyTorch ops).

``fused`` runs a decode layer the way serving engines do (``docs/engine.md``, "Kernel modes"):

==================  ==========================================  ===============================
op (NVTX range)     fused kernel                                replaces (unfused)
==================  ==========================================  ===============================
``input_norm``      residual add + norm (:mod:`kernels.norm`)   the previous ``residual_add`` + the norm
``kv_write``        RoPE of q, k + paged KV write (``rotary``)  ``rope`` + two ``index_copy_``
``post_norm``       residual add + norm                         ``residual_add`` + the norm
``act``             the activation (``activation``), e.g.       ``chunk``, SiLU, multiply
                    SiLU-and-mul
``final_norm``      the last residual add + norm                ``residual_add`` + the norm
==================  ==========================================  ===============================

The GEMMs (cuBLAS through ``F.linear``) and attention (the selected backend) are the same in both
modes. The ``rope`` and ``residual_add`` ranges are not pushed in fused mode: they hold no kernel.

The Triton kernels run compiled on a GPU and in Triton's interpreter on a CPU (``TRITON_INTERPRET=1``
set before Triton is imported); on the meta device they check shapes and launch nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from gpuprobe.analytic import DEFAULT_KERNELS, KERNEL_MODES
from gpuprobe.errors import NotAvailable, UserError

if TYPE_CHECKING:
    import torch

    from gpuprobe.kernels.activation_table import Activation


def _triton_interpreted() -> bool | None:
    """True when Triton kernels run in its CPU interpreter in this process, False when compiled, None
    when Triton (or the project's kernels) cannot be imported."""
    try:
        from gpuprobe.kernels import paged_attention
        from gpuprobe.kernels.common import is_interpreted
    except Exception:  # noqa: BLE001 - no Triton: no fused kernels
        return None
    return is_interpreted(paged_attention.paged_decode_attention_v1_kernel)


def default_kernels(device: "torch.device") -> str:
    """``fused`` where the Triton kernels can run (a GPU; a CPU or meta tensors under Triton's
    interpreter), else ``unfused``."""
    interpreted = _triton_interpreted()
    if interpreted is None:
        return "unfused"
    if device.type == "cuda":
        return DEFAULT_KERNELS
    return DEFAULT_KERNELS if interpreted or device.type == "meta" else "unfused"


def resolve_kernels(kernels: str | None, device: "torch.device", compile: bool) -> str:
    """The mode an engine runs: ``kernels`` checked, or :func:`default_kernels` (``unfused`` under
    ``compile=True``: inductor fuses the PyTorch ops itself)."""
    if kernels is None:
        return "unfused" if compile else default_kernels(device)
    if kernels not in KERNEL_MODES:
        raise UserError(f"unknown kernels mode '{kernels}'; choose one of {', '.join(KERNEL_MODES)}.")
    if kernels == "fused":
        if compile:
            raise UserError("compile=True fuses the unfused PyTorch step with torch.compile; "
                            "pass kernels='unfused' (or leave kernels unset) with it.")
        interpreted = _triton_interpreted()
        if interpreted is None:
            raise NotAvailable("kernels='fused' needs Triton and gpuprobe.kernels; install triton or use "
                               "kernels='unfused' (--kernels unfused).")
        if device.type == "cpu" and not interpreted:
            raise NotAvailable("fused kernels on a CPU run in Triton's interpreter: set TRITON_INTERPRET=1 before "
                               "starting Python, or use kernels='unfused' (--kernels unfused).")
    return kernels


def add_norm(norm, x: "torch.Tensor", residual: "torch.Tensor | None", *, store_residual: bool = True) -> "torch.Tensor":
    """``norm(x + residual)`` in one kernel; ``residual`` receives ``x + residual`` in place (unless
    ``store_residual`` is False). ``norm`` is the engine's ``RMSNorm`` or an ``nn.LayerNorm``."""
    from gpuprobe.kernels import fused_add_norm

    layer = hasattr(norm, "normalized_shape")  # nn.LayerNorm
    return fused_add_norm(x, norm.weight, norm.eps, residual=residual, bias=norm.bias if layer else None,
                          kind="layer" if layer else "rms", store_residual=store_residual)


def mlp_activation(act: "Activation", gu: "torch.Tensor") -> "torch.Tensor":
    """The MLP activation ``act`` (a row of the activation table) of ``gu`` (``[N, 2I]`` gate | up, or
    ``[N, I]``) in one kernel -> ``[N, I]``."""
    from gpuprobe.kernels import fused_activation

    return fused_activation(gu, act.function, gated=act.gated)


def rope_kv_write(q, k, v, k_cache, v_cache, slots, rope) -> "torch.Tensor":
    """Rotate q, k (``rope = (cos_table, sin_table, positions)``, or None: no rotation) and write k, v
    at ``slots`` of the cache, in one kernel; returns the rotated q."""
    from gpuprobe.kernels import rotary_kv_write

    if rope is None:
        return rotary_kv_write(q, k, v, k_cache, v_cache, slots)
    cos, sin, positions = rope
    return rotary_kv_write(q, k, v, k_cache, v_cache, slots, positions, cos, sin)

