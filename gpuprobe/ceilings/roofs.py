"""Measured roofs and ceiling selection (pure): a cached run's figures as roofline roofs."""
from __future__ import annotations

from gpuprobe.ceilings.result import CeilingsResult
from gpuprobe.roofline import schema as roofline
from gpuprobe.specs.gpus import match_device_name, normalize_dtype


def measured_roofs(result: CeilingsResult, dtype: str) -> list:
    """The measured roofs of ``result`` for ``dtype`` (names as :mod:`gpuprobe.roofline.schema` uses):
    ``dram`` (the copy bandwidth), ``l2``, ``smem``, ``fp32``, ``tensor_<dtype>`` (the best verified
    tensor rate, cuBLAS in practice), ``mma_sync_<dtype>`` (the hand-written kernel). Only verified
    figures become roofs."""
    d = normalize_dtype(dtype)
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


def select_ceilings(gpu_spec, dtype: str, cached: CeilingsResult | None):
    """The two roofs a roofline's ``bound`` uses, and where they come from.

    ``(dram_roof, compute_roof, source)``: measured DRAM copy bandwidth when ``cached`` holds it
    (and is of ``gpu_spec``'s GPU), else the datasheet; the compute roof of the dtype likewise.
    ``source`` is ``measured``, ``datasheet`` or ``mixed``. The rule itself is
    :func:`gpuprobe.roofline.schema.select_ceilings`, so every roofline picks roofs the same way.
    """
    roofs = list(roofline.datasheet_roofs(gpu_spec, dtype))
    if cached is not None and _result_is_of(cached, gpu_spec):
        roofs += measured_roofs(cached, dtype)
    c = roofline.select_ceilings(roofs, dtype)
    dram = roofline.Roof(c.dram_roof, "memory", c.dram_bytes_per_s, c.dram_source)
    comp = roofline.Roof(c.compute_roof, "compute", c.flops_per_s, c.compute_source)
    source = c.dram_source if c.dram_source == c.compute_source else "mixed"
    return dram, comp, source


def _result_is_of(result: CeilingsResult, gpu_spec) -> bool:
    have = result.gpu or getattr(match_device_name(result.device_name), "name", None)
    return have == gpu_spec.name
