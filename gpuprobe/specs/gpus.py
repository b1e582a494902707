"""GPU registry: datasheet peaks, device names matched exactly, and detection of the present GPU.

Each row is written with keywords and carries its sources: ``source`` for the datasheet figures (dense
tensor peaks, i.e. without structured sparsity; the tensor figures are FP32-accumulate rates, which is
what frameworks use for bf16/fp16 GEMMs) and ``memory_source`` for ``memory_bytes``, the capacity **as
the device reports it** (``cudaDeviceProp.totalGlobalMem``, which Nsight Compute records as
``device__attribute_total_memory`` and Nsight Systems as ``TARGET_INFO_GPU.totalMemory``) wherever a
real report of that part was at hand, else the nominal capacity in GiB, said so (a device reports about
1% less than that: driver and ECC reserve). A peak a GPU does not have is ``None``, never a stand-in:
V100 and T4 have fp16 tensor cores but no bf16 path, so their ``bf16_flops_per_s`` is ``None``.

Device names (what NVML, torch, ncu and nsys report) are matched **exactly** after normalisation
(:func:`normalize_device_name`: case, spaces/dashes/underscores, the words NVIDIA/Tesla/GeForce, "80 GB"
-> "80GB"), never by substring: "NVIDIA GH200 480GB" is the GH200, not the H200. A name that matches no
row gives ``None`` (:func:`gpu_from_device_name`); callers then use the report's own peaks. Deliberately
unknown: "NVIDIA H200 NVL" (a 600 W card whose lower clocks give a lower tensor peak than the H200 SXM:
the SXM roofs would overstate it), "NVIDIA H100 NVL", MIG slices ("... MIG 1g.10gb": a fraction of the
SMs and bandwidth), the GH200 144 GB HBM3e variant (4.9 TB/s), V100S.

Sources (NVIDIA datasheets and architecture whitepapers; device records from the shared fixtures):
- H100 SXM5 / PCIe: "NVIDIA H100 Tensor Core GPU" datasheet (2023); Hopper whitepaper (132 / 114 SMs, 50 MB L2).
- H200 SXM: "NVIDIA H200 Tensor Core GPU" datasheet (4.8 TB/s, 141 GB; GH100 compute as the H100 SXM).
- B200 (HGX B200, SXM): "NVIDIA Blackwell" datasheet, HGX B200 column (7.7 TB/s HBM3e, 180 GB; dense FP16/BF16
  tensor 2.25 PFLOPS, i.e. half the 4.5 PFLOPS sparse figure; FP32 75 TFLOPS, the 8-GPU 600 TFLOPS over 8);
  148 SMs, 126 MiB L2, compute capability 10.0 (Blackwell whitepaper).
- H800 SXM5: "NVIDIA H800 Tensor Core GPU" datasheet (3.35 TB/s; H100 SXM tensor and FP32 rates).
- GH200 (96 GB HBM3): "NVIDIA GH200 Grace Hopper Superchip" datasheet (4 TB/s HBM3; 990 TFLOPS dense
  BF16 there, the same GH100 rate as the H100 SXM's 989.4; 67 TFLOPS FP32).
- A100 SXM4 / PCIe, 40 / 80 GB: "NVIDIA A100 Tensor Core GPU" datasheet; GA100 whitepaper (108 SMs, 40 MB L2).
- A10, A40: "NVIDIA A10" / "NVIDIA A40" datasheets; GA102 (72 / 84 SMs, 6 MB L2).
- A10G: no NVIDIA datasheet is published; rates computed from a real A10G report (80 SMs at 1,710 MHz:
  x 256 FP32 FLOP/clk = 35.0 TFLOPS; x 512 dense FP16/BF16 tensor FLOP/clk with FP32 accumulate, the
  GA102 GeForce rate = 70.0 TFLOPS); the least certain row here.
- L4, L40S: "NVIDIA L4" / "NVIDIA L40S" datasheets; Ada whitepaper (58 / 142 SMs; 48 / 96 MB L2).
- T4: "NVIDIA T4" datasheet (320 GB/s, 8.1 TFLOPS FP32, 65 TFLOPS mixed FP16 tensor; 40 SMs, 4 MB L2).
- V100 SXM2 / PCIe: "NVIDIA Tesla V100" datasheet (900 GB/s; 15.7 / 14 TFLOPS FP32; 125 / 112 TFLOPS
  tensor); Volta whitepaper (80 SMs, 6 MB L2).
- RTX 3080, 3090: Ampere GA102 whitepaper, appendix (760 / 936 GB/s; 29.8 / 35.6 TFLOPS FP32; 59.5 / 71
  TFLOPS FP16/BF16 tensor with FP32 accumulate; 68 / 82 SMs; 5 / 6 MB L2).
- RTX 4090: Ada Lovelace whitepaper, appendix A (1,008 GB/s, 82.6 TFLOPS FP32, 165.2 TFLOPS dense
  FP16/BF16 tensor with FP32 accumulate, 128 SMs, 72 MB L2).
Device records (memory, SMs, L2, and clocks where a rate is derived), all in the shared fixtures (shared/fixtures/):
ncu_external/*.ncu-rep (GH200, H800, V100-SXM2-32GB, A10G, RTX 3080), ncu/h100_*.ncu-rep (H100 80GB HBM3),
nsys_external/*.sqlite (H100 80GB HBM3, H200, A100-SXM4-40GB/80GB, T4, RTX 3090).
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


@dataclass(frozen=True, kw_only=True)
class GPUSpec:
    """Datasheet figures of one GPU model (dense tensor FLOP/s, no sparsity; ``None``: no such peak)."""

    name: str
    display_name: str
    dram_bytes_per_s: float
    bf16_flops_per_s: float | None
    fp16_flops_per_s: float | None
    fp32_flops_per_s: float
    memory_bytes: int  # as the device reports it where known (see memory_source)
    sm_count: int
    l2_bytes: int
    compute_capability: tuple[int, int]
    device_names: tuple[str, ...] = ()  # names a driver reports for this part (the display name is added)
    source: str = ""  # where the datasheet figures come from
    memory_source: str = ""  # where memory_bytes comes from

    def tensor_flops_per_s(self, dtype: str) -> float | None:
        """Dense tensor-core peak for a dtype name (``bf16``, ``fp16``, ``fp32``: the FP32 peak); ``None``
        when the GPU has no tensor path for that dtype (bf16 on V100 and T4)."""
        d = normalize_dtype(dtype)
        if d == "bf16":
            return self.bf16_flops_per_s
        if d == "fp16":
            return self.fp16_flops_per_s
        return self.fp32_flops_per_s

    def require_tensor_flops(self, dtype: str) -> float:
        """:meth:`tensor_flops_per_s`, or one UserError line when this GPU has no such peak."""
        peak = self.tensor_flops_per_s(dtype)
        if peak is None:
            raise UserError(f"{self.display_name} has no {normalize_dtype(dtype)} tensor cores (datasheet); "
                            "use --dtype fp16 or fp32 for this GPU.")
        return peak

    @property
    def ridge_bf16(self) -> float | None:
        return None if self.bf16_flops_per_s is None else self.bf16_flops_per_s / self.dram_bytes_per_s

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


# ---- the registry -----------------------------------------------------------------------------------
_FIXTURES = "shared/fixtures"
_NOMINAL = "nominal {} GiB (datasheet); no device record of this part at hand (a device reports about 1% less)"

_HOPPER = dict(bf16_flops_per_s=989.4 * TB, fp16_flops_per_s=989.4 * TB, fp32_flops_per_s=66.9 * TB,
               sm_count=132, compute_capability=(9, 0))
_GA100 = dict(bf16_flops_per_s=312.0 * TB, fp16_flops_per_s=312.0 * TB, fp32_flops_per_s=19.5 * TB,
              sm_count=108, l2_bytes=40 * MiB, compute_capability=(8, 0),
              source="NVIDIA A100 Tensor Core GPU datasheet; GA100 whitepaper")
_V100_SXM2 = dict(dram_bytes_per_s=0.900 * TB, bf16_flops_per_s=None, fp16_flops_per_s=125.0 * TB,
                  fp32_flops_per_s=15.7 * TB, sm_count=80, l2_bytes=6 * MiB, compute_capability=(7, 0),
                  source="NVIDIA Tesla V100 datasheet (SXM2); Volta whitepaper; no bf16 tensor path")
_V100_PCIE = dict(_V100_SXM2, fp16_flops_per_s=112.0 * TB, fp32_flops_per_s=14.0 * TB,
                  source="NVIDIA Tesla V100 datasheet (PCIe); Volta whitepaper; no bf16 tensor path")

_ROWS: dict[str, dict[str, Any]] = {
    "h100-sxm": dict(
        _HOPPER, display_name="NVIDIA H100 SXM5 80GB", device_names=("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
        dram_bytes_per_s=3.35 * TB, l2_bytes=50 * MiB, memory_bytes=85_017_493_504,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023); Hopper whitepaper",
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu/h100_qwen2-0.5b_layer0_b32_c512_sol.ncu-rep"
                      " (79.2 GiB; another driver, nsys_external/fuser_8fa9ec2: 84,942,979,072)"),
    "h100-pcie": dict(
        _HOPPER, display_name="NVIDIA H100 PCIe 80GB", device_names=("NVIDIA H100 PCIe",),
        dram_bytes_per_s=2.0 * TB, bf16_flops_per_s=756.0 * TB, fp16_flops_per_s=756.0 * TB,
        fp32_flops_per_s=51.2 * TB, sm_count=114, l2_bytes=50 * MiB, memory_bytes=80 * GiB,
        source="NVIDIA H100 Tensor Core GPU datasheet (2023); Hopper whitepaper", memory_source=_NOMINAL.format(80)),
    "h200": dict(
        _HOPPER, display_name="NVIDIA H200 SXM 141GB", device_names=("NVIDIA H200",),
        dram_bytes_per_s=4.8 * TB, l2_bytes=60 * MiB, memory_bytes=150_121_545_728,
        source="NVIDIA H200 Tensor Core GPU datasheet; L2 60 MiB as the device reports it",
        memory_source=f"TARGET_INFO_GPU.totalMemory of {_FIXTURES}/nsys_external/fuser_ee4fcf3_report1.sqlite "
                      "(139.8 GiB; nvidia-smi on the H200 node in reference/h100_measurements.md: 143,771 MiB)"),
    "h800": dict(
        _HOPPER, display_name="NVIDIA H800 SXM5 80GB", device_names=("NVIDIA H800",),
        dram_bytes_per_s=3.35 * TB, l2_bytes=50 * MiB, memory_bytes=84_943_110_144,
        source="NVIDIA H800 Tensor Core GPU datasheet (SXM5); 132 SMs, 50 MiB L2 as the device reports them",
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu_external/sglang_profile.ncu-rep"),
    "gh200": dict(
        _HOPPER, display_name="NVIDIA GH200 480GB (96 GB HBM3)", device_names=("NVIDIA GH200 480GB",),
        dram_bytes_per_s=4.0 * TB, l2_bytes=60 * MiB, memory_bytes=101_468_602_368,
        source="NVIDIA GH200 Grace Hopper Superchip datasheet, 96 GB HBM3 version (4 TB/s; the report's own "
               "6144-bit bus at 2,619 MHz gives 4.02 TB/s); the 144 GB HBM3e version (4.9 TB/s) is not this row",
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu_external/cs599k_silu-v8.ncu-rep"),
    "b200": dict(
        display_name="NVIDIA B200 SXM 180GB", device_names=("NVIDIA B200",), dram_bytes_per_s=7.7 * TB,
        bf16_flops_per_s=2250.0 * TB, fp16_flops_per_s=2250.0 * TB, fp32_flops_per_s=75.0 * TB,
        memory_bytes=180 * GiB, sm_count=148, l2_bytes=126 * MiB, compute_capability=(10, 0),
        source="NVIDIA Blackwell datasheet (HGX B200, dense rates: half the sparse ones); Blackwell whitepaper",
        memory_source=_NOMINAL.format(180)),
    "a100-40gb": dict(
        _GA100, display_name="NVIDIA A100 SXM4 40GB", device_names=("NVIDIA A100-SXM4-40GB",),
        dram_bytes_per_s=1.555 * TB, memory_bytes=42_297_524_224,
        memory_source=f"TARGET_INFO_GPU.totalMemory of {_FIXTURES}/nsys_external/"
                      "pipit_saxpy-mpi-cuda_nsys_perlmutter0.sqlite"),
    "a100-80gb": dict(
        _GA100, display_name="NVIDIA A100 SXM4 80GB", device_names=("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
        dram_bytes_per_s=2.039 * TB, memory_bytes=84_990_623_744,
        memory_source=f"TARGET_INFO_GPU.totalMemory of {_FIXTURES}/nsys_external/"
                      "pipit_perlmutter-cloverleaf-cuda.sqlite"),
    "a100-pcie-40gb": dict(
        _GA100, display_name="NVIDIA A100 PCIe 40GB", device_names=("NVIDIA A100-PCIE-40GB",),
        dram_bytes_per_s=1.555 * TB, memory_bytes=40 * GiB, memory_source=_NOMINAL.format(40)),
    "a100-pcie-80gb": dict(
        _GA100, display_name="NVIDIA A100 PCIe 80GB", device_names=("NVIDIA A100 80GB PCIe",),
        dram_bytes_per_s=1.935 * TB, memory_bytes=80 * GiB, memory_source=_NOMINAL.format(80)),
    "a10": dict(
        display_name="NVIDIA A10", dram_bytes_per_s=0.600 * TB, bf16_flops_per_s=125.0 * TB,
        fp16_flops_per_s=125.0 * TB, fp32_flops_per_s=31.2 * TB, memory_bytes=24 * GiB, sm_count=72,
        l2_bytes=6 * MiB, compute_capability=(8, 6), source="NVIDIA A10 Tensor Core GPU datasheet; GA102",
        memory_source=_NOMINAL.format(24)),
    "a10g": dict(
        display_name="NVIDIA A10G", dram_bytes_per_s=0.600 * TB, bf16_flops_per_s=70.0 * TB,
        fp16_flops_per_s=70.0 * TB, fp32_flops_per_s=35.0 * TB, memory_bytes=23_595_909_120, sm_count=80,
        l2_bytes=6 * MiB, compute_capability=(8, 6),
        source="no NVIDIA datasheet: 80 SMs x 1,710 MHz from a real report x 256 FP32 / 512 tensor FLOP/clk "
               "(GA102 with FP32 accumulate at the GeForce rate); 600 GB/s from its 384-bit bus at 6,251 MHz",
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu_external/esmm_profile_small.ncu-rep"),
    "a40": dict(
        display_name="NVIDIA A40", dram_bytes_per_s=0.696 * TB, bf16_flops_per_s=149.7 * TB,
        fp16_flops_per_s=149.7 * TB, fp32_flops_per_s=37.4 * TB, memory_bytes=48 * GiB, sm_count=84,
        l2_bytes=6 * MiB, compute_capability=(8, 6), source="NVIDIA A40 datasheet; GA102",
        memory_source=_NOMINAL.format(48)),
    "l40s": dict(
        display_name="NVIDIA L40S", dram_bytes_per_s=0.864 * TB, bf16_flops_per_s=362.05 * TB,
        fp16_flops_per_s=362.05 * TB, fp32_flops_per_s=91.6 * TB, memory_bytes=48 * GiB, sm_count=142,
        l2_bytes=96 * MiB, compute_capability=(8, 9), source="NVIDIA L40S datasheet; Ada whitepaper",
        memory_source=_NOMINAL.format(48)),
    "l4": dict(
        display_name="NVIDIA L4", dram_bytes_per_s=0.300 * TB, bf16_flops_per_s=121.0 * TB,
        fp16_flops_per_s=121.0 * TB, fp32_flops_per_s=30.3 * TB, memory_bytes=24 * GiB, sm_count=58,
        l2_bytes=48 * MiB, compute_capability=(8, 9), source="NVIDIA L4 Tensor Core GPU datasheet; Ada whitepaper",
        memory_source=_NOMINAL.format(24)),
    "t4": dict(
        display_name="NVIDIA T4", device_names=("Tesla T4",), dram_bytes_per_s=0.320 * TB, bf16_flops_per_s=None,
        fp16_flops_per_s=65.0 * TB, fp32_flops_per_s=8.1 * TB, memory_bytes=15_843_721_216, sm_count=40,
        l2_bytes=4 * MiB, compute_capability=(7, 5),
        source="NVIDIA T4 datasheet (65 TFLOPS mixed-precision FP16 tensor); no bf16 tensor path",
        memory_source=f"TARGET_INFO_GPU.totalMemory of {_FIXTURES}/nsys_external/sc23_openmp_report3.sqlite "
                      "(an older driver, gpu4_old_report2: 15,642,329,088)"),
    "v100-sxm2-16gb": dict(
        _V100_SXM2, display_name="NVIDIA V100 SXM2 16GB", device_names=("Tesla V100-SXM2-16GB",),
        memory_bytes=16 * GiB, memory_source=_NOMINAL.format(16)),
    "v100-sxm2-32gb": dict(
        _V100_SXM2, display_name="NVIDIA V100 SXM2 32GB", device_names=("Tesla V100-SXM2-32GB",),
        memory_bytes=34_089_926_656,
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu_external/ncar_MW_Baseline.ncu-rep"),
    "v100-pcie-16gb": dict(
        _V100_PCIE, display_name="NVIDIA V100 PCIe 16GB", device_names=("Tesla V100-PCIE-16GB",),
        memory_bytes=16 * GiB, memory_source=_NOMINAL.format(16)),
    "v100-pcie-32gb": dict(
        _V100_PCIE, display_name="NVIDIA V100 PCIe 32GB", device_names=("Tesla V100-PCIE-32GB",),
        memory_bytes=32 * GiB, memory_source=_NOMINAL.format(32)),
    "rtx-3080": dict(
        display_name="NVIDIA GeForce RTX 3080", dram_bytes_per_s=0.760 * TB, bf16_flops_per_s=59.5 * TB,
        fp16_flops_per_s=59.5 * TB, fp32_flops_per_s=29.8 * TB, memory_bytes=10_493_427_712, sm_count=68,
        l2_bytes=5 * MiB, compute_capability=(8, 6),
        source="Ampere GA102 whitepaper, appendix (RTX 3080 10 GB; tensor with FP32 accumulate)",
        memory_source=f"device__attribute_total_memory of {_FIXTURES}/ncu_external/fuzigrad_output.ncu-rep"),
    "rtx-3090": dict(
        display_name="NVIDIA GeForce RTX 3090", dram_bytes_per_s=0.936 * TB, bf16_flops_per_s=71.0 * TB,
        fp16_flops_per_s=71.0 * TB, fp32_flops_per_s=35.6 * TB, memory_bytes=25_438_126_080, sm_count=82,
        l2_bytes=6 * MiB, compute_capability=(8, 6),
        source="Ampere GA102 whitepaper, appendix (tensor with FP32 accumulate)",
        memory_source=f"TARGET_INFO_GPU.totalMemory of {_FIXTURES}/nsys_external/memfusion_report1.sqlite"),
    "rtx-4090": dict(
        display_name="NVIDIA GeForce RTX 4090", dram_bytes_per_s=1.008 * TB, bf16_flops_per_s=165.2 * TB,
        fp16_flops_per_s=165.2 * TB, fp32_flops_per_s=82.6 * TB, memory_bytes=24 * GiB, sm_count=128,
        l2_bytes=72 * MiB, compute_capability=(8, 9),
        source="Ada Lovelace whitepaper, appendix A (tensor with FP32 accumulate)", memory_source=_NOMINAL.format(24)),
}

_REGISTRY: dict[str, GPUSpec] = {name: GPUSpec(name=name, **row) for name, row in _ROWS.items()}

DEFAULT_GPU = "h100-sxm"

_VENDOR_WORDS = {"NVIDIA", "TESLA", "GEFORCE"}


def normalize_device_name(name: str) -> str:
    """The form device names are compared in: upper case, ``-``/``_`` as spaces, single spaces, without
    the words NVIDIA, Tesla and GeForce, and "80 GB" written "80GB"."""
    s = re.sub(r"[\s_\-]+", " ", str(name).upper()).strip()
    s = re.sub(r"\b(\d+) GB\b", r"\1GB", s)
    return " ".join(w for w in s.split(" ") if w not in _VENDOR_WORDS)


def _device_index() -> dict[str, GPUSpec]:
    index: dict[str, GPUSpec] = {}
    for spec in _REGISTRY.values():
        for raw in (spec.display_name, *spec.device_names):
            key = normalize_device_name(raw)
            other = index.setdefault(key, spec)
            if other is not spec:
                raise RuntimeError(f"device name '{raw}' belongs to both {other.name} and {spec.name}")
    return index


_BY_DEVICE_NAME = _device_index()


def list_gpus() -> list[GPUSpec]:
    return list(_REGISTRY.values())


def gpu_from_device_name(device_name: str) -> GPUSpec | None:
    """The registry row whose device names equal ``device_name`` after normalisation, or None (then use
    the report's own peaks). Exact: "NVIDIA GH200 480GB" is not the H200."""
    return _BY_DEVICE_NAME.get(normalize_device_name(device_name))


def get_gpu(name: str) -> GPUSpec:
    """A registered GPU by registry name (``h100-sxm``) or by the name a driver reports."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    found = gpu_from_device_name(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown GPU '{name}'.{hint} Run `gpuprobe gpus` for the list.")


@dataclass(frozen=True)
class DetectedGPU:
    """What the driver says about the present GPU, and its registry entry if known."""

    device_name: str
    memory_bytes: int | None
    spec: GPUSpec | None
    via: str  # "nvml" | "torch"


def resolve_gpu(gpu: "str | GPUSpec | None" = None, *, device_name: str | None = None,
                detected: DetectedGPU | None = None, default: str | None = DEFAULT_GPU) -> GPUSpec | None:
    """The GPU a run or a report is about (the one rule every command follows): ``gpu`` (``--gpu``: a
    registry name or a :class:`GPUSpec`) wins; else the registry's entry of a report's ``device_name``
    (exact: the GH200 is not the H200); else the ``detected`` GPU's entry; else ``default`` (None: an
    unknown GPU stays unknown, and a report's own peaks are its roofs)."""
    if isinstance(gpu, GPUSpec):
        return gpu
    if gpu:
        return get_gpu(gpu)
    if device_name:
        found = gpu_from_device_name(device_name)
        if found is not None:
            return found
    if detected is not None and detected.spec is not None:
        return detected.spec
    return get_gpu(default) if default else None


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA kernel driver loaded (its device node or its /proc entry)."""
    import os

    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")


def detect_gpu() -> DetectedGPU | None:
    """The first visible GPU through NVML, else torch; None on a machine without one. Without an NVIDIA
    driver (no /dev/nvidiactl, no /proc/driver/nvidia) torch is asked only when it is already imported:
    importing it costs seconds and finds nothing there."""
    import sys

    try:
        import pynvml  # from nvidia-ml-py

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                h = pynvml.nvmlDeviceGetHandleByIndex(0)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total)
                return DetectedGPU(name, mem, gpu_from_device_name(name), "nvml")
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver, no device: fall through to torch
        pass
    if not nvidia_driver_present() and "torch" not in sys.modules:
        return None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return DetectedGPU(props.name, int(props.total_memory), gpu_from_device_name(props.name), "torch")
    except Exception:
        pass
    return None
