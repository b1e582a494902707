"""Op classes, their shapes and their floors: the vocabulary a calibration is written in (docs/prediction.md).

Three classes, each with the shape columns a measurement or a prediction names:

* ``gemm``: ``m, n, k`` with ``y[m, n] = x[m, k] W[n, k]^T`` (m: the tokens of the step, the batch in decode);
* ``decode_attention``: ``batch, context, heads, kv_heads, head_dim`` (context: the cached tokens the new
  token attends to, itself included; heads and kv_heads per GPU);
* ``elementwise``: ``bytes``, the minimum DRAM bytes one call moves (norms, activations, rotary, residual
  adds, KV writes, embedding gathers, sampling).

The floor of one call is the analytic roofline's: ``max(flops / tensor peak, bytes / DRAM bandwidth)``
(elementwise: bytes only), with the same byte counts as :mod:`gpuprobe.analytic`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from gpuprobe.analytic import DEFAULT_KERNELS, decode_costs
from gpuprobe.errors import UserError
from gpuprobe.ops import GEMM_OPS, gemm_shapes
from gpuprobe.specs.gpus import DTYPE_BYTES, GPUSpec, normalize_dtype

OP_CLASSES: tuple[str, ...] = ("gemm", "decode_attention", "elementwise")

#: The shape columns of each class, in order.
SHAPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k"),
    "decode_attention": ("batch", "context", "heads", "kv_heads", "head_dim"),
    "elementwise": ("bytes",),
}

#: gpuprobe ops (gpuprobe/ops.py) whose calls are elementwise kernels.
ELEMENTWISE_OPS = frozenset({"embed", "input_norm", "rope", "kv_write", "residual_add", "post_norm", "act",
                             "final_norm", "sample"})


def check_op_class(op_class: str) -> str:
    if op_class not in SHAPE_COLUMNS:
        raise UserError(f"unknown op class '{op_class}'; use one of {', '.join(OP_CLASSES)}.")
    return op_class


def clean_shape(op_class: str, shape: Mapping[str, Any], where: str = "") -> dict[str, float]:
    """The class's shape columns of ``shape`` as positive floats, or one UserError line naming what is wrong."""
    check_op_class(op_class)
    out: dict[str, float] = {}
    for col in SHAPE_COLUMNS[op_class]:
        v = shape.get(col)
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            raise UserError(f"{where}{op_class} needs a number in column '{col}', got {v!r}; "
                            f"its columns are {', '.join(SHAPE_COLUMNS[op_class])}.")
        if x <= 0:
            raise UserError(f"{where}{op_class} column '{col}' must be positive, got {v!r}.")
        out[col] = x
    if op_class == "decode_attention" and out["heads"] % out["kv_heads"]:
        raise UserError(f"{where}decode_attention heads ({out['heads']:g}) must be a multiple of "
                        f"kv_heads ({out['kv_heads']:g}).")
    return out


def flops_and_bytes(op_class: str, shape: Mapping[str, float], dtype: str) -> tuple[float, float]:
    """Useful FLOPs and minimum DRAM bytes of one call (the analytic cost model's counts)."""
    s = DTYPE_BYTES[normalize_dtype(dtype)]
    if op_class == "gemm":
        m, n, k = shape["m"], shape["n"], shape["k"]
        return 2.0 * m * n * k, (m * k + n * k + m * n) * s
    if op_class == "decode_attention":
        b, c, hq, hkv, d = (shape[x] for x in SHAPE_COLUMNS["decode_attention"])
        return 4.0 * b * hq * c * d, (2.0 * b * c * hkv * d + 2.0 * b * hq * d) * s
    if op_class == "elementwise":
        return 0.0, float(shape["bytes"])
    raise UserError(f"unknown op class '{op_class}'; use one of {', '.join(OP_CLASSES)}.")


def roofs_of(gpu: GPUSpec, dtype: str) -> tuple[float, float]:
    """(DRAM bytes/s, compute FLOP/s) of the datasheet roofs a calibration's floors use."""
    return gpu.dram_bytes_per_s, gpu.require_tensor_flops(dtype)


def class_floor_s(op_class: str, shape: Mapping[str, float], gpu: GPUSpec, dtype: str) -> float:
    """The floor of one call: ``max(flops / tensor peak, bytes / DRAM bandwidth)`` on the datasheet roofs."""
    bw, peak = roofs_of(gpu, dtype)
    flops, nbytes = flops_and_bytes(op_class, shape, dtype)
    return max(flops / peak, nbytes / bw)


def op_class_and_shape(spec, op: str, batch: int, context: int, dtype: str = "bf16",
                       kernels: str = DEFAULT_KERNELS) -> tuple[str, dict[str, float]] | None:
    """The class and per-call shape of gpuprobe op ``op`` of model ``spec`` at one batch and context; None
    for an op the model does not run (``rope`` in fused mode) or that is no known op."""
    if op in GEMM_OPS:
        k, n = gemm_shapes(spec)[op]
        return "gemm", {"m": float(batch), "n": float(n), "k": float(k)}
    if op == "attention":
        return "decode_attention", {"batch": float(batch), "context": float(context), "heads": float(spec.num_heads),
                                    "kv_heads": float(spec.num_kv_heads), "head_dim": float(spec.head_dim)}
    if op in ELEMENTWISE_OPS:
        cost = next((c for c in decode_costs(spec, batch, context, dtype, kernels) if c.op == op), None)
        if cost is None or cost.count == 0:
            return None
        return "elementwise", {"bytes": cost.dram_bytes / cost.count}
    return None
