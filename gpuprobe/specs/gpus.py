"""GPU registry: datasheet peaks, and detection of the present GPU (NVML, else torch).

Figures are NVIDIA's published datasheet values (dense, i.e. without structured sparsity).
Sources, one per entry:
- H100 SXM5 / PCIe: "NVIDIA H100 Tensor Core GPU" datasheet (2023) and the Hopper
  architecture whitepaper (SM counts 132 / 114, L2 50 MB).
- H200 SXM: "NVIDIA H200 Tensor Core GPU" datasheet (4.8 TB/s, 141 GB; same GH100 compute as H100 SXM).
- A100 40/80 GB SXM: "NVIDIA A100 Tensor Core GPU" datasheet and the Ampere GA100 whitepaper
  (108 SMs, 40 MB L2; 1,555 / 2,039 GB/s).
- L40S: "NVIDIA L40S" datasheet (864 GB/s, 362 TFLOPS dense BF16, 91.6 TFLOPS FP32) and the
  Ada whitepaper (142 SMs, 96 MB L2).
- L4: "NVIDIA L4 Tensor Core GPU" datasheet (300 GB/s, 121 TFLOPS dense BF16, 30.3 FP32; 58 SMs, 48 MB L2).
- A10G: AWS EC2 G5 documentation and NVIDIA's A10G product brief as reported there (600 GB/s,
  80 SMs, 6 MB L2, 31.2 TFLOPS FP32, 70 TFLOPS dense FP16/BF16 tensor); NVIDIA publishes no
  full A10G datasheet, so treat its tensor figure as the least certain in this table.
- RTX 4090: the Ada Lovelace whitepaper, appendix A (1,008 GB/s, 82.6 TFLOPS FP32,
  165.2 TFLOPS dense FP16/BF16 tensor with FP32 accumulate, 128 SMs, 72 MB L2).
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from typing import Any

from gpuprobe.errors import UserError

TB = 1e12
GB = 1e9
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet figures of one GPU model (dense tensor FLOP/s, no sparsity)."""

    name: str
    display_name: str
    dram_bytes_per_s: float
    bf16_flops_per_s: float
    fp16_flops_per_s: float
    fp32_flops_per_s: float
    memory_bytes: int
    sm_count: int
    l2_bytes: int
    compute_capability: tuple[int, int]
    match: tuple[str, ...] = ()  # regexes matched against the name NVML/torch report

    def tensor_flops_per_s(self, dtype: str) -> float:
        """Dense tensor-core peak for a dtype name (``bf16``, ``fp16``, ``fp32``)."""
        d = normalize_dtype(dtype)
        if d == "bf16":
            return self.bf16_flops_per_s
        if d == "fp16":
            return self.fp16_flops_per_s
        return self.fp32_flops_per_s

    @property
    def ridge_bf16(self) -> float:
        return self.bf16_flops_per_s / self.dram_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DTYPE_ALIASES = {
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def normalize_dtype(dtype: Any) -> str:
    """``bf16`` | ``fp16`` | ``fp32`` for any common spelling (also torch dtypes)."""
    key = str(dtype).strip().lower()
    if key not in _DTYPE_ALIASES:
        raise UserError(f"unknown dtype '{dtype}'; use one of bf16, fp16, fp32.")
    return _DTYPE_ALIASES[key]


_REGISTRY: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("h100-sxm", "NVIDIA H100 SXM5 80GB", 3.35 * TB, 989.4 * TB, 989.4 * TB, 66.9 * TB,
                80 * GB, 132, 50 * MiB, (9, 0), (r"H100.*(SXM|HBM3)", r"^NVIDIA H100$")),
        GPUSpec("h100-pcie", "NVIDIA H100 PCIe 80GB", 2.0 * TB, 756.0 * TB, 756.0 * TB, 51.2 * TB,
                80 * GB, 114, 50 * MiB, (9, 0), (r"H100.*PCIe",)),
        GPUSpec("h200", "NVIDIA H200 SXM 141GB", 4.8 * TB, 989.4 * TB, 989.4 * TB, 66.9 * TB,
                141 * GB, 132, 50 * MiB, (9, 0), (r"H200",)),
        GPUSpec("a100-40gb", "NVIDIA A100 SXM4 40GB", 1.555 * TB, 312.0 * TB, 312.0 * TB, 19.5 * TB,
                40 * GB, 108, 40 * MiB, (8, 0), (r"A100.*40GB",)),
        GPUSpec("a100-80gb", "NVIDIA A100 SXM4 80GB", 2.039 * TB, 312.0 * TB, 312.0 * TB, 19.5 * TB,
                80 * GB, 108, 40 * MiB, (8, 0), (r"A100.*80GB", r"^NVIDIA A100$")),
        GPUSpec("l40s", "NVIDIA L40S", 0.864 * TB, 362.05 * TB, 362.05 * TB, 91.6 * TB,
                48 * GB, 142, 96 * MiB, (8, 9), (r"L40S",)),
        GPUSpec("l4", "NVIDIA L4", 0.300 * TB, 121.0 * TB, 121.0 * TB, 30.3 * TB,
                24 * GB, 58, 48 * MiB, (8, 9), (r"\bL4\b",)),
        GPUSpec("a10g", "NVIDIA A10G", 0.600 * TB, 70.0 * TB, 70.0 * TB, 31.2 * TB,
                24 * GB, 80, 6 * MiB, (8, 6), (r"A10G",)),
        GPUSpec("rtx-4090", "NVIDIA GeForce RTX 4090", 1.008 * TB, 165.2 * TB, 165.2 * TB, 82.6 * TB,
                24 * GB, 128, 72 * MiB, (8, 9), (r"RTX 4090",)),
    )
}

DEFAULT_GPU = "h100-sxm"


def list_gpus() -> list[GPUSpec]:
    return list(_REGISTRY.values())


def get_gpu(name: str) -> GPUSpec:
    """A registered GPU by registry name (``h100-sxm``) or by the name a driver reports."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    found = match_device_name(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown GPU '{name}'.{hint} Run `gpuprobe gpus` for the list.")


def match_device_name(device_name: str) -> GPUSpec | None:
    """The registry entry whose patterns match a driver-reported name, e.g. 'NVIDIA H100 80GB HBM3'."""
    for spec in _REGISTRY.values():
        if any(re.search(p, device_name, re.IGNORECASE) for p in spec.match):
            return spec
    return None


@dataclass(frozen=True)
class DetectedGPU:
    """What the driver says about the present GPU, and its registry entry if known."""

    device_name: str
    memory_bytes: int | None
    spec: GPUSpec | None
    via: str  # "nvml" | "torch"


def detect_gpu() -> DetectedGPU | None:
    """The first visible GPU through NVML, else torch; None on a machine without one."""
    try:
        import pynvml  # from nvidia-ml-py

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                h = pynvml.nvmlDeviceGetHandleByIndex(0)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
                return DetectedGPU(name, mem, match_device_name(name), "nvml")
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver, no device: fall through to torch
        pass
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return DetectedGPU(props.name, int(props.total_memory), match_device_name(props.name), "torch")
    except Exception:
        pass
    return None
