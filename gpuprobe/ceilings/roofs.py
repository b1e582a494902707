"""Measured roofs (pure): a cached run's figures as roofline roofs; the ceilings a roofline takes from them are
chosen by :func:`gpuprobe.roofline.schema.roofs_and_ceilings`, as for every roofline."""
from __future__ import annotations

from gpuprobe.analytic import dtype_bytes
from gpuprobe.ceilings.result import CeilingsResult
from gpuprobe.roofline import schema as roofline


def measured_roofs(result: CeilingsResult, dtype: str) -> list:
    """The measured roofs of ``result`` for ``dtype`` (names as :mod:`gpuprobe.roofline.schema` uses):
    ``dram`` (the copy bandwidth), ``l2``, ``smem``, ``fp32``, ``tensor_<dtype>`` (the best verified
    tensor rate, cuBLAS in practice), ``mma_sync_<dtype>`` (the hand-written kernel). Only verified
    figures become roofs. ``dtype``: a normalised name."""
    dtype_bytes(dtype)  # a UserError for any other spelling
    d = dtype
    roofs = []

    def add(name: str, kind: str, value: float | None) -> None:
        if value:
            roofs.append(roofline.Roof(name, kind, float(value), "measured"))

    add("dram", "memory", result.copy_bytes_per_s)
    add("l2", "memory", result.value("l2_read"))
    add("smem", "memory", result.value("smem_read"))
    add("fp32", "compute", result.value("fp32_fma"))
    if d in ("bf16", "fp16"):
        add(f"tensor_{d}", "compute", result.best_tensor(d))
        add(f"mma_sync_{d}", "compute", result.value(f"mma_{d}"))
    return roofs
