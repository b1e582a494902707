"""The figures of one run (:class:`CeilingsResult`, :class:`Measurement`) and their JSON form."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.specs.gpus import gpu_from_device_name

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MeasurementInfo:
    label: str
    kind: str  # "memory" (bytes/s) | "compute" (FLOP/s)
    datasheet: str | None  # GPUSpec attribute of the matching datasheet figure, if any


#: Every figure a run measures, in table order.
MEASUREMENTS: dict[str, MeasurementInfo] = {
    "dram_copy": MeasurementInfo("DRAM copy (kernel)", "memory", "dram_bytes_per_s"),
    "torch_copy": MeasurementInfo("DRAM copy (torch)", "memory", "dram_bytes_per_s"),
    "dram_read": MeasurementInfo("DRAM read", "memory", "dram_bytes_per_s"),
    "dram_write": MeasurementInfo("DRAM write", "memory", "dram_bytes_per_s"),
    "l2_read": MeasurementInfo("L2 read", "memory", None),
    "smem_read": MeasurementInfo("shared memory read", "memory", None),
    "fp32_fma": MeasurementInfo("FP32 FMA", "compute", "fp32_flops_per_s"),
    "mma_bf16": MeasurementInfo("tensor bf16 (mma.sync)", "compute", "bf16_flops_per_s"),
    "mma_fp16": MeasurementInfo("tensor fp16 (mma.sync)", "compute", "fp16_flops_per_s"),
    "cublas_bf16": MeasurementInfo("tensor bf16 (cuBLAS)", "compute", "bf16_flops_per_s"),
    "cublas_fp16": MeasurementInfo("tensor fp16 (cuBLAS)", "compute", "fp16_flops_per_s"),
}


@dataclass
class Measurement:
    """One figure: bytes/s or FLOP/s (median over trials), and whether the kernel's result checked out."""

    name: str
    value: float
    verified: bool
    check: str  # what was checked, in words
    trials: list[float] = field(default_factory=list)  # the rate of each trial
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return MEASUREMENTS[self.name].kind if self.name in MEASUREMENTS else "memory"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        return cls(d["name"], float(d["value"]), bool(d["verified"]), d.get("check", ""),
                   [float(x) for x in d.get("trials", [])], dict(d.get("detail", {})))


@dataclass
class CeilingsResult:
    """The figures of one run on one GPU, with what identifies the GPU and its state."""

    device_name: str
    gpu: str | None  # registry name (``h100-sxm``) when the device is in the registry
    driver: str | None
    backend: str  # how the kernels were compiled: "cupy" | "nvrtc-ctypes"
    measured_at: str  # ISO 8601, UTC
    measurements: dict[str, Measurement]
    clocks: dict[str, Any] = field(default_factory=dict)  # sm_mhz (mean under load), sm_max_mhz, mem_mhz...
    environment: dict[str, Any] = field(default_factory=dict)  # torch, CUDA, CuPy versions
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @property
    def registry_gpu(self) -> str | None:
        """The registry name of the GPU measured: as recorded, else from its device name (None if unknown)."""
        return self.gpu or getattr(gpu_from_device_name(self.device_name), "name", None)

    def value(self, name: str, verified_only: bool = True) -> float | None:
        m = self.measurements.get(name)
        if m is None or (verified_only and not m.verified) or not m.value > 0:
            return None
        return m.value

    @property
    def all_verified(self) -> bool:
        return bool(self.measurements) and all(m.verified and m.value > 0 for m in self.measurements.values())

    @property
    def copy_bytes_per_s(self) -> float | None:
        """THE measured copy bandwidth: the better of the copy kernel and torch's copy (both count
        bytes read plus bytes written), so a "% of bandwidth" never exceeds 100 for a plain copy."""
        vals = [v for v in (self.value("dram_copy"), self.value("torch_copy")) if v]
        return max(vals) if vals else None

    def best_tensor(self, dtype: str) -> float | None:
        """The best verified tensor rate of ``dtype`` (bf16 | fp16): cuBLAS or the mma.sync kernel."""
        vals = [v for v in (self.value(f"cublas_{dtype}"), self.value(f"mma_{dtype}")) if v]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["measurements"] = {k: m.to_dict() for k, m in self.measurements.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CeilingsResult":
        if int(d.get("schema_version", 0)) != SCHEMA_VERSION:
            raise ValueError(f"ceilings schema_version {d.get('schema_version')} is not {SCHEMA_VERSION}")
        return cls(device_name=d["device_name"], gpu=d.get("gpu"), driver=d.get("driver"),
                   backend=d.get("backend", ""), measured_at=d.get("measured_at", ""),
                   measurements={k: Measurement.from_dict(m) for k, m in d["measurements"].items()},
                   clocks=dict(d.get("clocks", {})), environment=dict(d.get("environment", {})),
                   seconds=float(d.get("seconds", 0.0)))

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a file
        return path

    @classmethod
    def read(cls, path: str | Path) -> "CeilingsResult":
        return cls.from_dict(json.loads(Path(path).read_text()))
