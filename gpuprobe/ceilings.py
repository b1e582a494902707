"""Empirical ceilings: run the CUDA microbenchmarks in ``csrc/``, check their results, cache them.

Datasheet peaks overstate what kernels reach (an H100 copy moves about 3.0 TB/s against 3.35 on
the datasheet), so the roofline's roofs are measured here: DRAM read, write and copy bandwidth,
L2 and shared-memory bandwidth, the FP32 FMA peak, the FP16/BF16 tensor-core peak of a
``mma.sync`` kernel, and cuBLAS (through torch) as the practical tensor ceiling. A torch
device-to-device copy is timed in the same run as the copy kernel.

The sources ship as package data (``gpuprobe.csrc``) and are compiled at run time for the
present GPU through NVRTC: by CuPy's ``RawModule`` when CuPy is importable, else by calling
``libnvrtc`` and the CUDA driver directly through :mod:`ctypes` (see ``docs/ceilings.md``).

Sections: sources and kernel signatures; runtime compilation; planning; result checks (pure);
results; cache; roofs and ceiling selection (pure); measurement (GPU); public entry points.
Nothing here imports torch, CuPy or NVML at import time: the analytic roofline imports this
module on machines without a GPU.
"""
from __future__ import annotations

import ctypes
import dataclasses
import glob
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from gpuprobe.errors import GpuprobeError, NotAvailable

SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Sources and kernel signatures
# ---------------------------------------------------------------------------------------------

#: One microbenchmark family per file, in the order a run measures them.
SOURCE_FILES: tuple[str, ...] = (
    "dram_bandwidth.cu",
    "l2_bandwidth.cu",
    "smem_bandwidth.cu",
    "fma_peak.cu",
    "tensor_mma.cu",
)

#: C parameter types the kernels use, by the kind an argument is packed as.
_PARAM_KINDS = {
    "unsigned int": "u32", "unsigned": "u32", "int": "i32",
    "unsigned long long": "u64", "unsigned long long int": "u64", "long long": "i64",
    "float": "f32", "double": "f64",
}
_QUALIFIERS = re.compile(r"\b(const|volatile|__restrict__|__restrict|restrict)\b")
_ENTRY = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)', re.S)
_DEFINE = re.compile(r"^\s*#define\s+(\w+)\s+\(?(\d+)\)?\s*(?:/[/*].*)?$", re.M)


@dataclass(frozen=True)
class KernelSignature:
    """An ``extern "C"`` entry point: its name, its source file and the kind of each parameter."""

    name: str
    source: str
    params: tuple[str, ...]  # "ptr" | "u32" | "i32" | "u64" | "i64" | "f32" | "f64"


def load_source(filename: str) -> str:
    """The text of one ``.cu`` file shipped in :mod:`gpuprobe.csrc`."""
    if filename not in SOURCE_FILES:
        raise ValueError(f"unknown microbenchmark source '{filename}'; known: {', '.join(SOURCE_FILES)}")
    return resources.files("gpuprobe.csrc").joinpath(filename).read_text(encoding="utf-8")


def _param_kind(param: str) -> str:
    text = _QUALIFIERS.sub(" ", param)
    if "*" in text:
        return "ptr"
    words = text.split()
    ctype = " ".join(words[:-1])  # the last word is the parameter's name
    if ctype not in _PARAM_KINDS:
        raise ValueError(f"kernel parameter '{param.strip()}' has a type the launcher cannot pack")
    return _PARAM_KINDS[ctype]


def parse_kernels(source: str, filename: str = "<source>") -> dict[str, KernelSignature]:
    """Every ``extern "C" __global__`` entry point of ``source`` with its parameter kinds."""
    out = {}
    for m in _ENTRY.finditer(source):
        params = tuple(_param_kind(p) for p in m.group(2).split(",") if p.strip())
        out[m.group(1)] = KernelSignature(m.group(1), filename, params)
    return out


def parse_constants(source: str) -> dict[str, int]:
    """Integer ``#define`` constants of a source (block size, unroll, chains...): one source of truth."""
    return {m.group(1): int(m.group(2)) for m in _DEFINE.finditer(source)}


def all_kernels() -> dict[str, KernelSignature]:
    """Every entry point of every shipped source, by name (names are unique across files)."""
    out: dict[str, KernelSignature] = {}
    for f in SOURCE_FILES:
        for name, sig in parse_kernels(load_source(f), f).items():
            if name in out:
                raise ValueError(f"kernel '{name}' is defined in both {out[name].source} and {f}")
            out[name] = sig
    return out


def find_kernel(name: str) -> KernelSignature:
    """The signature of kernel ``name``, wherever it is defined."""
    kernels = all_kernels()
    if name not in kernels:
        raise KeyError(f"no kernel '{name}' in {', '.join(SOURCE_FILES)}; known: {', '.join(sorted(kernels))}")
    return kernels[name]


def constants(filename: str) -> dict[str, int]:
    return parse_constants(load_source(filename))


# ---------------------------------------------------------------------------------------------
# Runtime compilation: CuPy's RawModule, else NVRTC and the driver through ctypes
# ---------------------------------------------------------------------------------------------

_NUMPY_KINDS = {"ptr": "uint64", "u32": "uint32", "i32": "int32", "u64": "uint64", "i64": "int64",
                "f32": "float32", "f64": "float64"}
_CTYPES_KINDS = {"ptr": ctypes.c_uint64, "u32": ctypes.c_uint32, "i32": ctypes.c_int32,
                 "u64": ctypes.c_uint64, "i64": ctypes.c_int64, "f32": ctypes.c_float, "f64": ctypes.c_double}
_INT_RANGES = {"u32": (0, 2**32 - 1), "i32": (-(2**31), 2**31 - 1), "u64": (0, 2**64 - 1),
               "i64": (-(2**63), 2**63 - 1), "ptr": (0, 2**64 - 1)}


def _as_int_arg(value: Any) -> int:
    """A pointer or integer argument: ints, or anything with ``data_ptr()`` (a torch tensor)."""
    if hasattr(value, "data_ptr"):
        return int(value.data_ptr())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer or a tensor, got {type(value).__name__}")
    return value


def check_args(sig: KernelSignature, args: Sequence[Any]) -> list[int | float]:
    """Plain Python values for ``args``, checked against ``sig`` (count, integer ranges)."""
    if len(args) != len(sig.params):
        raise TypeError(f"kernel {sig.name} takes {len(sig.params)} arguments ({', '.join(sig.params)}), "
                        f"got {len(args)}")
    out: list[int | float] = []
    for kind, value in zip(sig.params, args):
        if kind in ("f32", "f64"):
            out.append(float(value))
            continue
        v = _as_int_arg(value)
        lo, hi = _INT_RANGES[kind]
        if not lo <= v <= hi:
            raise OverflowError(f"kernel {sig.name}: argument {v} does not fit a {kind}")
        out.append(v)
    return out


def pack_numpy(sig: KernelSignature, args: Sequence[Any]) -> tuple:
    """Arguments as NumPy scalars of the kernel's parameter types (CuPy packs them by dtype)."""
    import numpy as np

    return tuple(getattr(np, _NUMPY_KINDS[k])(v) for k, v in zip(sig.params, check_args(sig, args)))


def pack_ctypes(sig: KernelSignature, args: Sequence[Any]) -> tuple[list, ctypes.Array]:
    """Arguments as ctypes values and the ``void**`` array ``cuLaunchKernel`` takes (keep both alive)."""
    values = [_CTYPES_KINDS[k](v) for k, v in zip(sig.params, check_args(sig, args))]
    pointers = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.addressof(v) for v in values])
    return values, pointers


class Kernel:
    """A compiled entry point: ``kernel(grid, block, args, stream)`` launches it (asynchronously)."""

    def __init__(self, sig: KernelSignature, backend: str, launcher: Callable[..., None]):
        self.sig = sig
        self.backend = backend
        self._launch = launcher

    @property
    def name(self) -> str:
        return self.sig.name

    def __call__(self, grid: int, block: int, args: Sequence[Any], stream: int = 0) -> None:
        self._launch(int(grid), int(block), args, int(stream))

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, backend={self.backend!r})"


def _nvrtc_library_candidates() -> list[str]:
    """Where libnvrtc may be: an override, NVIDIA's wheels (torch's CUDA builds ship one), CUDA_HOME."""
    cands = []
    if os.environ.get("GPUPROBE_LIBNVRTC"):
        cands.append(os.environ["GPUPROBE_LIBNVRTC"])
    try:
        import nvidia  # namespace package of NVIDIA's wheels

        for base in getattr(nvidia, "__path__", []):
            for sub in ("cu13/lib", "cuda_nvrtc/lib", "cu12/lib"):
                cands += sorted(glob.glob(os.path.join(base, sub, "libnvrtc.so*")))
    except ImportError:
        pass
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            cands += sorted(glob.glob(os.path.join(os.environ[env], "lib64", "libnvrtc.so*")))
    cands += sorted(glob.glob("/usr/local/cuda/lib64/libnvrtc.so*"))
    cands += ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    # the builtins library is a dependency, not the compiler; alt builds are for static linking
    return [c for c in dict.fromkeys(cands) if "builtins" not in c and ".alt." not in c]


def load_libnvrtc() -> ctypes.CDLL:
    """The NVRTC library, or :class:`NotAvailable` saying where it was looked for."""
    errors = []
    for cand in _nvrtc_library_candidates():
        try:
            # NVRTC dlopens its builtins library by name; a wheel's folder is not on the search
            # path, so load the one beside it first (global, so the by-name open finds it).
            if os.path.isabs(cand):
                for builtins in sorted(glob.glob(os.path.join(os.path.dirname(cand), "libnvrtc-builtins.so*"))):
                    if ".alt." not in builtins:
                        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(cand)
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            return lib
        except OSError as e:
            errors.append(str(e))
    raise NotAvailable("NVRTC (libnvrtc) not found; install CuPy (the `cuda` extra) or NVIDIA's "
                       "nvidia-cuda-nvrtc wheel, or set GPUPROBE_LIBNVRTC to the library's path")


def nvrtc_compile(source: str, name: str, arch: str, options: Sequence[str] = ()) -> tuple[bytes, str]:
    """Compile ``source`` with NVRTC for ``arch`` (``sm_90``): the cubin and the compiler's log.

    Needs no GPU: the CPU tests compile every shipped source this way.
    """
    lib = load_libnvrtc()

    def ok(code: int, what: str, log: str = "") -> None:
        if code != 0:
            msg = lib.nvrtcGetErrorString(code).decode()
            raise GpuprobeError(f"NVRTC {what} failed for {name} ({msg}){': ' + log if log else ''}")

    prog = ctypes.c_void_p()
    ok(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None), "create")
    try:
        opts = [f"--gpu-architecture={arch}", *options]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        code = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace").strip()
        ok(code, "compilation", log)
        ok(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
        cubin = ctypes.create_string_buffer(size.value)
        ok(lib.nvrtcGetCUBIN(prog, cubin), "cubin")
        return cubin.raw, log
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class _CupyBackend:
    """CuPy's RawModule: NVRTC for the current device, with CuPy's on-disk kernel cache."""

    name = "cupy"

    def __init__(self, device_index: int) -> None:
        import cupy

        self.cupy = cupy
        cupy.cuda.Device(device_index).use()  # the device torch uses: same primary context
        self._streams: dict[int, Any] = {}

    def load(self, filename: str, source: str, sigs: dict[str, KernelSignature]) -> dict[str, Kernel]:
        module = self.cupy.RawModule(code=source)  # CuPy adds the device's -arch
        kernels = {}
        for name, sig in sigs.items():
            fn = module.get_function(name)  # compiles now, so a failure shows before any timing

            def launch(grid, block, args, stream, fn=fn, sig=sig):
                # RawKernel launches on CuPy's current stream: make it torch's for this launch
                with self._stream(stream):
                    fn((grid,), (block,), pack_numpy(sig, args))

            kernels[name] = Kernel(sig, self.name, launch)
        return kernels

    def _stream(self, handle: int):
        if handle not in self._streams:
            self._streams[handle] = self.cupy.cuda.ExternalStream(handle)
        return self._streams[handle]


class _CtypesBackend:
    """NVRTC and the CUDA driver called through ctypes: needs only libnvrtc (torch's CUDA wheels
    bring one) and libcuda; used when CuPy is absent. Runs in the primary context torch uses."""

    name = "nvrtc-ctypes"

    def __init__(self, device_index: int, arch: str) -> None:
        load_libnvrtc()
        try:
            self.cuda = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise NotAvailable(f"the CUDA driver library (libcuda.so.1) cannot be loaded: {e}") from None
        self.arch = arch
        self._modules: list[ctypes.c_void_p] = []
        ctx = ctypes.c_void_p()
        self._ok(self.cuda.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:  # torch made the primary context; make it current on this thread
            dev = ctypes.c_int()
            self._ok(self.cuda.cuDeviceGet(ctypes.byref(dev), device_index), "cuDeviceGet")
            self._ok(self.cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            self._ok(self.cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    def _ok(self, code: int, what: str) -> None:
        if code != 0:
            msg = ctypes.c_char_p()
            self.cuda.cuGetErrorString(code, ctypes.byref(msg))
            raise GpuprobeError(f"{what} failed: {(msg.value or b'error %d' % code).decode()}")

    def load(self, filename: str, source: str, sigs: dict[str, KernelSignature]) -> dict[str, Kernel]:
        cubin, _ = nvrtc_compile(source, filename, self.arch)
        module = ctypes.c_void_p()
        self._ok(self.cuda.cuModuleLoadData(ctypes.byref(module), cubin), f"cuModuleLoadData({filename})")
        self._modules.append(module)
        kernels = {}
        for name, sig in sigs.items():
            func = ctypes.c_void_p()
            self._ok(self.cuda.cuModuleGetFunction(ctypes.byref(func), module, name.encode()),
                     f"cuModuleGetFunction({name})")

            def launch(grid, block, args, stream, func=func, sig=sig):
                values, pointers = pack_ctypes(sig, args)
                self._ok(self.cuda.cuLaunchKernel(func, grid, 1, 1, block, 1, 1, 0, ctypes.c_void_p(stream),
                                                  pointers, None), f"launch of {sig.name}")

            kernels[name] = Kernel(sig, self.name, launch)
        return kernels


BACKENDS = ("cupy", "nvrtc-ctypes")


def choose_backend(requested: str | None = None) -> str:
    """``cupy`` when CuPy imports, else ``nvrtc-ctypes``; ``GPUPROBE_CEILINGS_BACKEND`` overrides."""
    requested = requested or os.environ.get("GPUPROBE_CEILINGS_BACKEND") or None
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"unknown compile backend '{requested}'; use one of {', '.join(BACKENDS)}")
        return requested
    try:
        import cupy  # noqa: F401

        return "cupy"
    except Exception:  # not installed, or installed for another CUDA: use NVRTC directly
        return "nvrtc-ctypes"


def compile_kernels(backend: str | None = None, device_index: int = 0) -> dict[str, Kernel]:
    """Compile every shipped source for the present GPU; every entry point by name."""
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    name = choose_backend(backend)
    impl = _CupyBackend(device_index) if name == "cupy" else _CtypesBackend(device_index, f"sm_{major}{minor}")
    kernels: dict[str, Kernel] = {}
    for f in SOURCE_FILES:
        src = load_source(f)
        kernels.update(impl.load(f, src, parse_kernels(src, f)))
    return kernels


# ---------------------------------------------------------------------------------------------
# Planning: buffer sizes and loop counts from the GPU's SMs and L2 (pure)
# ---------------------------------------------------------------------------------------------

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class BenchPlan:
    """Sizes and launch shapes of one run; every loop count stays within its exactness bound."""

    sm_count: int
    l2_bytes: int
    dram_bytes: int  # each buffer of the DRAM benchmarks (copy uses two)
    dram_blocks: int
    l2_buffer_bytes: int
    l2_blocks: int
    l2_reps: int
    smem_blocks: int
    smem_reps: int
    fma_blocks: int
    fma_iters: int
    mma_blocks: int
    mma_iters: int
    gemm_n: int
    threads: int = 256


def fma_max_iters(chains: int, inner: int) -> int:
    """Largest trip count whose per-thread result (a sum of counted-up chains) stays below 2**24."""
    return (2**24 // chains - 256) // inner


def mma_max_iters(acc: int, max_abs_product: int) -> int:
    """Largest trip count whose accumulated tile stays below 2**24 (exact in fp32)."""
    return (2**24 - 1) // (acc * max_abs_product)


#: Inputs of the tensor kernel are integers in [-MMA_INPUT_MAX, MMA_INPUT_MAX].
MMA_INPUT_MAX = 2


def plan_benchmarks(sm_count: int, l2_bytes: int, free_bytes: int, *, quick: bool = False) -> BenchPlan:
    """A plan for a GPU with ``sm_count`` SMs, ``l2_bytes`` of L2 and ``free_bytes`` free memory.

    DRAM buffers: 1 GiB or 16x the L2, whichever is larger, capped by free memory; at least 8x
    the L2. L2 buffer: at most a quarter of the L2 (both partitions of a Hopper L2 hold it),
    a whole number of grid-stride sweeps. Loop counts aim at about a millisecond per launch.
    """
    if sm_count <= 0 or l2_bytes <= 0:
        raise ValueError("sm_count and l2_bytes must be positive")
    dram = constants("dram_bandwidth.cu")
    threads = dram["THREADS"]
    want = max(1 * GiB, 16 * l2_bytes)
    cap = (free_bytes // 6) // MiB * MiB  # copy uses two buffers; leave room for torch's copy and cuBLAS
    dram_bytes = min(want, cap, (2**31 - 1) * 16 // MiB * MiB)
    if dram_bytes < 8 * l2_bytes:
        raise NotAvailable(f"too little free GPU memory ({free_bytes / GiB:.1f} GiB) for DRAM buffers of 8x "
                           f"the L2 ({8 * l2_bytes / GiB:.2f} GiB each); free some and retry")

    l2c = constants("l2_bandwidth.cu")
    target = l2_bytes // 4
    l2_blocks, l2_buf = sm_count, 0
    for per_sm in (8, 4, 2, 1):
        sweep = sm_count * per_sm * l2c["THREADS"] * l2c["UNROLL"] * 16
        if sweep <= target:
            l2_blocks, l2_buf = sm_count * per_sm, (target // sweep) * sweep
            break
    if l2_buf == 0:  # tiny L2: one block per SM and a buffer of a quarter of the L2
        l2_buf = max(16 * l2c["THREADS"], target // 16 * 16)
    scale = 0.25 if quick else 1.0
    l2_reps = max(1, int(scale * 4 * GiB / l2_buf))

    sm = constants("smem_bandwidth.cu")
    smem_blocks = sm_count * 4
    smem_reps = max(1, int(scale * 16 * GiB / (smem_blocks * sm["TILE_VEC"] * 16)))

    fma = constants("fma_peak.cu")
    fma_blocks = sm_count * 8
    per_iter = fma_blocks * fma["THREADS"] * fma["CHAINS"] * fma["INNER"] * 2
    fma_iters = max(1, min(fma_max_iters(fma["CHAINS"], fma["INNER"]), int(scale * 1.2e11 / per_iter)))

    mma = constants("tensor_mma.cu")
    mma_blocks = sm_count * 4
    per_iter = mma_blocks * (mma["THREADS"] // 32) * mma["ACC"] * 2 * 16 * 8 * 16
    mma_iters = max(1, min(mma_max_iters(mma["ACC"], 16 * MMA_INPUT_MAX**2), int(scale * 1e12 / per_iter)))

    return BenchPlan(sm_count=sm_count, l2_bytes=l2_bytes, dram_bytes=dram_bytes, dram_blocks=sm_count * 8,
                     l2_buffer_bytes=l2_buf, l2_blocks=l2_blocks, l2_reps=l2_reps, smem_blocks=smem_blocks,
                     smem_reps=smem_reps, fma_blocks=fma_blocks, fma_iters=fma_iters, mma_blocks=mma_blocks,
                     mma_iters=mma_iters, gemm_n=4096 if quick else 8192, threads=threads)


# ---------------------------------------------------------------------------------------------
# Result checks (pure): what each kernel must have written
# ---------------------------------------------------------------------------------------------

def u32_checksum(word_sum: int, times: int) -> int:
    """What a kernel that added every 32-bit word ``times`` times into a uint32 holds: mod 2**32."""
    return (int(word_sum) * int(times)) % 2**32


def fma_expected(n_threads: int, chains: int, inner: int, iters: int):
    """Per-thread results of ``fma_fp32`` with a = b = 1 (float64 array; exact integers)."""
    import numpy as np

    if iters > fma_max_iters(chains, inner):
        raise ValueError(f"iters={iters} exceeds the exact range ({fma_max_iters(chains, inner)})")
    t = np.arange(n_threads, dtype=np.int64)
    start = sum(((t + k) & 255) for k in range(chains))
    return (start + chains * inner * iters).astype(np.float64)


def mma_fragments(a, bt):
    """A (16x16) and B^T (8x16) of 16-bit floats as the kernel reads them: int32 words, two
    elements each, the lower column in the low half (torch tensors, any device)."""
    import torch

    if tuple(a.shape) != (16, 16) or tuple(bt.shape) != (8, 16) or a.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError("expected A of shape (16, 16) and B^T of shape (8, 16) in bf16 or fp16")
    return a.contiguous().view(torch.int32), bt.contiguous().view(torch.int32)


def mma_expected(a, bt, acc: int, iters: int):
    """The 16x8 tile each warp of the tensor kernel writes: acc * iters * (A @ B), float64 numpy."""
    return (a.double().cpu() @ bt.double().cpu().T).numpy() * (acc * iters)


def within(value: float, reference: float, rel: float) -> bool:
    """``value`` within ``rel`` (a fraction) of ``reference``."""
    return reference > 0 and abs(value / reference - 1.0) <= rel


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

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


def datasheet_value(name: str, spec) -> float | None:
    """The datasheet figure a measurement compares with (None where NVIDIA publishes none)."""
    info = MEASUREMENTS.get(name)
    if spec is None or info is None or info.datasheet is None:
        return None
    return float(getattr(spec, info.datasheet))


def fp32_scaled_datasheet(spec, clocks: dict[str, Any]) -> float | None:
    """The FP32 datasheet peak scaled to the SM clock seen under load (datasheet x seen / max clock)."""
    if spec is None or not clocks.get("sm_mhz") or not clocks.get("sm_max_mhz"):
        return None
    return spec.fp32_flops_per_s * float(clocks["sm_mhz"]) / float(clocks["sm_max_mhz"])


#: Device targets, checked by the ``ceilings`` selftest check (docs/ceilings.md states them).
TARGETS = {
    "copy_vs_torch_min": 0.95,  # DRAM copy kernel >= 95% of torch's copy
    "copy_vs_torch_within": 0.05,  # ... and within 5% of it
    "fp32_vs_scaled_within": 0.10,  # FP32 FMA within 10% of the datasheet scaled to the SM clock
    "mma_vs_cublas_min": 0.60,  # mma.sync kernel >= 60% of cuBLAS, per dtype
}


def evaluate_targets(result: CeilingsResult, spec) -> tuple[dict[str, Any], list[str]]:
    """Figures and ratios of a run, and the list of failed claims (empty when every target holds)."""
    figures: dict[str, Any] = {"device": result.device_name, "backend": result.backend,
                               "sm_mhz": result.clocks.get("sm_mhz"), "sm_max_mhz": result.clocks.get("sm_max_mhz")}
    failures: list[str] = []
    for name in MEASUREMENTS:
        m = result.measurements.get(name)
        if m is None:
            failures.append(f"{name}: not measured")
            continue
        unit = 1e12
        figures[f"{name}_tera"] = round(m.value / unit, 4)
        sheet = datasheet_value(name, spec)
        if sheet:
            figures[f"{name}_vs_datasheet"] = round(m.value / sheet, 4)
        if not m.value > 0:
            failures.append(f"{name}: figure {m.value} is not positive")
        if not m.verified:
            failures.append(f"{name}: its result did not check out ({m.check})")
    copy, torch_copy = result.value("dram_copy", False), result.value("torch_copy", False)
    if copy and torch_copy:
        r = copy / torch_copy
        figures["copy_vs_torch"] = round(r, 4)
        if r < TARGETS["copy_vs_torch_min"] or not within(copy, torch_copy, TARGETS["copy_vs_torch_within"]):
            failures.append(f"DRAM copy kernel at {r:.1%} of torch's copy (target: at least 95%, within 5%)")
    fp32 = result.value("fp32_fma", False)
    scaled = fp32_scaled_datasheet(spec, result.clocks)
    if fp32 and scaled:
        r = fp32 / scaled
        figures["fp32_vs_scaled_datasheet"] = round(r, 4)
        if not within(fp32, scaled, TARGETS["fp32_vs_scaled_within"]):
            failures.append(f"FP32 FMA at {r:.1%} of the datasheet scaled to {result.clocks.get('sm_mhz')} MHz "
                            "(target: within 10%)")
    elif fp32:
        figures["fp32_vs_scaled_datasheet"] = None  # unknown GPU or no clock reading: nothing to compare
    for dt in ("bf16", "fp16"):
        mma, cublas = result.value(f"mma_{dt}", False), result.value(f"cublas_{dt}", False)
        if mma and cublas:
            r = mma / cublas
            figures[f"mma_{dt}_vs_cublas"] = round(r, 4)
            if r < TARGETS["mma_vs_cublas_min"]:
                failures.append(f"mma.sync {dt} kernel at {r:.1%} of cuBLAS (target: at least 60%)")
    return figures, failures


# ---------------------------------------------------------------------------------------------
# Cache: one JSON file per (device name, driver) in the user cache folder
# ---------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$GPUPROBE_CACHE_DIR/ceilings`` if set, else the platform's user cache folder (platformdirs)."""
    if os.environ.get("GPUPROBE_CACHE_DIR"):
        return Path(os.environ["GPUPROBE_CACHE_DIR"]) / "ceilings"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("gpuprobe", appauthor=False)) / "ceilings"
    except ImportError:
        return Path.home() / ".cache" / "gpuprobe" / "ceilings"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cache_path(device_name: str, driver: str | None) -> Path:
    return cache_dir() / f"{_slug(device_name)}__driver-{_slug(driver or 'unknown')}.json"


def save_cached(result: CeilingsResult) -> Path:
    return result.write(cache_path(result.device_name, result.driver))


def _read_all_cached() -> list[CeilingsResult]:
    out = []
    for p in sorted(cache_dir().glob("*.json")):
        try:
            out.append(CeilingsResult.read(p))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged or foreign file is not a result
            continue
    return out


def present_gpu_identity() -> tuple[str, str | None] | None:
    """(device name, driver version) of the first GPU, through NVML, else torch; None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                driver = pynvml.nvmlSystemGetDriverVersion()
                dec = (lambda s: s.decode() if isinstance(s, bytes) else str(s))
                return dec(name), dec(driver)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), None
    except Exception:
        pass
    return None


def _same_gpu(result: CeilingsResult, gpu_name: str) -> bool:
    """Whether a cached result is of ``gpu_name``: a device name, registry name or display name."""
    if result.device_name.strip().lower() == gpu_name.strip().lower():
        return True
    from gpuprobe.specs.gpus import get_gpu, match_device_name

    try:
        wanted = get_gpu(gpu_name).name
    except GpuprobeError:
        return False
    have = result.gpu or getattr(match_device_name(result.device_name), "name", None)
    return have == wanted


def cached_ceilings(gpu_name: str | None = None) -> CeilingsResult | None:
    """The cached result for ``gpu_name`` (device, registry or display name), newest first; for the
    present GPU and driver when ``gpu_name`` is None. None when nothing is cached."""
    if gpu_name is None:
        ident = present_gpu_identity()
        if ident is None:
            return None
        path = cache_path(*ident)
        if path.exists():
            try:
                return CeilingsResult.read(path)
            except (OSError, ValueError, KeyError, TypeError):
                return None
        if ident[1] is not None:
            return None
        gpu_name = ident[0]  # driver unknown (no NVML): any cached run of this device
    found = [r for r in _read_all_cached() if _same_gpu(r, gpu_name)]
    return max(found, key=lambda r: r.measured_at) if found else None


# ---------------------------------------------------------------------------------------------
# Roofs and ceiling selection (pure)
# ---------------------------------------------------------------------------------------------

def measured_roofs(result: CeilingsResult, dtype: str) -> list:
    """The measured roofs of ``result`` for ``dtype`` (names as :mod:`gpuprobe.roofline` uses):
    ``dram`` (the copy bandwidth), ``l2``, ``smem``, ``fp32``, ``tensor_<dtype>`` (the best verified
    tensor rate, cuBLAS in practice), ``mma_sync_<dtype>`` (the hand-written kernel). Only verified
    figures become roofs."""
    from gpuprobe.roofline import Roof
    from gpuprobe.specs.gpus import normalize_dtype

    d = normalize_dtype(dtype)
    roofs = []

    def add(name: str, kind: str, value: float | None) -> None:
        if value:
            roofs.append(Roof(name, kind, float(value), "measured"))

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
    :func:`gpuprobe.roofline.select_ceilings`, so every roofline picks roofs the same way.
    """
    from gpuprobe import roofline

    roofs = list(roofline.datasheet_roofs(gpu_spec, dtype))
    if cached is not None and _result_is_of(cached, gpu_spec):
        roofs += measured_roofs(cached, dtype)
    c = roofline.select_ceilings(roofs, dtype)
    dram = roofline.Roof(c.dram_roof, "memory", c.dram_bytes_per_s, c.dram_source)
    comp = roofline.Roof(c.compute_roof, "compute", c.flops_per_s, c.compute_source)
    source = c.dram_source if c.dram_source == c.compute_source else "mixed"
    return dram, comp, source


def _result_is_of(result: CeilingsResult, gpu_spec) -> bool:
    from gpuprobe.specs.gpus import match_device_name

    have = result.gpu or getattr(match_device_name(result.device_name), "name", None)
    return have == gpu_spec.name


# ---------------------------------------------------------------------------------------------
# Measurement (needs a GPU)
# ---------------------------------------------------------------------------------------------

class _Clocks:
    """SM and memory clocks read through NVML while kernels run (the host is idle then)."""

    def __init__(self, device_index: int) -> None:
        self.sm: list[float] = []
        self.mem: list[float] = []
        self.handle = None
        self.info: dict[str, Any] = {}
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self.nvml = pynvml
            try:
                uuid = str(torch.cuda.get_device_properties(device_index).uuid)
                self.handle = pynvml.nvmlDeviceGetHandleByUUID("GPU-" + uuid if not uuid.startswith("GPU-") else uuid)
            except Exception:
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            self.info["sm_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(self.handle, pynvml.NVML_CLOCK_SM)
            self.info["mem_max_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(self.handle, pynvml.NVML_CLOCK_MEM)
            drv = pynvml.nvmlSystemGetDriverVersion()
            self.info["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
        except Exception:
            self.handle = None

    def sample(self) -> None:
        if self.handle is None:
            return
        try:
            self.sm.append(float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)))
            self.mem.append(float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_MEM)))
        except Exception:
            pass

    def window(self) -> int:
        return len(self.sm)

    def mean_since(self, start: int) -> float | None:
        xs = self.sm[start:]
        return round(statistics.fmean(xs), 1) if xs else None

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.info.items() if k != "driver"}
        if self.sm:
            out.update(sm_mhz=round(statistics.fmean(self.sm), 1), sm_mhz_min=min(self.sm), sm_mhz_max=max(self.sm))
        if self.mem:
            out["mem_mhz"] = round(statistics.fmean(self.mem), 1)
        return out


@dataclass
class _Timer:
    """Times a launch closure with CUDA events: per-launch seconds of each trial."""

    trial_s: float = 0.05
    trials: int = 5
    clocks: _Clocks | None = None
    event: Callable[[], Any] | None = None  # makes a timing event; torch.cuda.Event by default

    def run(self, launch: Callable[[], None]) -> tuple[list[float], int]:
        """(seconds per launch of each trial, launches made in all, warm-ups included)."""
        if self.event is None:
            import torch

            self.event = lambda: torch.cuda.Event(enable_timing=True)
        start, end = self.event(), self.event()
        launch()  # warm-up: first-use costs (module load, caches, clocks ramping up)
        start.record()
        launch()
        end.record()
        end.synchronize()
        once = max(start.elapsed_time(end) / 1e3, 1e-6)
        n = max(1, math.ceil(self.trial_s / once))
        per_launch = []
        for _ in range(self.trials):
            start.record()
            for _ in range(n):
                launch()
            end.record()
            if self.clocks is not None:
                self.clocks.sample()  # the GPU is busy with this trial now
            end.synchronize()
            per_launch.append(start.elapsed_time(end) / 1e3 / n)
        return per_launch, 2 + self.trials * n


def _rate(work: float, per_launch: list[float]) -> tuple[float, list[float]]:
    rates = [work / t for t in per_launch]
    return statistics.median(rates), rates


def _random_words(n_words: int, device):
    import torch

    return torch.randint(-(2**31), 2**31 - 1, (n_words,), dtype=torch.int32, device=device)


def _word_sum(t) -> int:
    import torch

    return int(t.view(torch.int32).sum(dtype=torch.int64).item())


def _u32(t) -> int:
    return int(t.item()) & 0xFFFFFFFF


class _Runner:
    """Runs each microbenchmark once, with the buffers and launch shapes of a plan."""

    def __init__(self, kernels: dict[str, Kernel], plan: BenchPlan, timer: _Timer, log: Callable[[str], None],
                 device: Any = None, stream: int | None = None):
        import torch

        self.torch = torch
        self.k = kernels
        self.plan = plan
        self.timer = timer
        self.log = log
        self.dev = device if device is not None else torch.device("cuda", torch.cuda.current_device())
        self.stream = stream if stream is not None else torch.cuda.current_stream().cuda_stream
        self.out: dict[str, Measurement] = {}

    def _record(self, m: Measurement, clock_start: int | None = None) -> None:
        if clock_start is not None and self.timer.clocks is not None:
            m.detail["sm_mhz"] = self.timer.clocks.mean_since(clock_start)
        self.out[m.name] = m
        unit = "TB/s" if m.kind == "memory" else "TFLOP/s"
        self.log(f"{m.name}: {m.value / 1e12:.3f} {unit}{'' if m.verified else '  (RESULT CHECK FAILED)'}")

    def dram(self) -> None:
        torch, p = self.torch, self.plan
        n_words = p.dram_bytes // 4
        n_vec = n_words // 4
        src = _random_words(n_words, self.dev)
        dst = torch.empty_like(src)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        grid, block = p.dram_blocks, p.threads

        def copy_kernel():
            self.k["dram_copy"](grid, block, (src, dst, n_vec), self.stream)

        def copy_torch():
            dst.copy_(src)

        # Interleave the two copies' trials so clocks and temperature drift alike for both.
        per_k, per_t, c0 = [], [], (self.timer.clocks.window() if self.timer.clocks else None)
        for _ in range(3):
            pk, _ = self.timer.run(copy_kernel)
            pt, _ = self.timer.run(copy_torch)
            per_k += pk
            per_t += pt
        moved = 2 * n_vec * 16
        for name, per, launch in (("dram_copy", per_k, copy_kernel), ("torch_copy", per_t, copy_torch)):
            dst.zero_()
            launch()
            ok = bool(torch.equal(dst, src))
            value, rates = _rate(moved, per)
            self._record(Measurement(name, value, ok, "destination equals source after one more launch", rates,
                                     {"bytes_per_launch": moved, "buffer_bytes": n_vec * 16}), c0)

        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        checksum.zero_()
        per, launches = self.timer.run(lambda: self.k["dram_read"](grid, block, (src, n_vec, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches)
        value, rates = _rate(n_vec * 16, per)
        self._record(Measurement("dram_read", value, ok, "checksum = launches x sum of words (mod 2^32)", rates,
                                 {"bytes_per_launch": n_vec * 16, "launches": launches}), c0)

        seed = 0x5EED1234
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        dst.zero_()
        per, _ = self.timer.run(lambda: self.k["dram_write"](grid, block, (dst, n_vec, seed), self.stream))
        ok = self._check_pattern(dst, seed)
        value, rates = _rate(n_vec * 16, per)
        self._record(Measurement("dram_write", value, ok, "word j = j ^ seed", rates,
                                 {"bytes_per_launch": n_vec * 16}), c0)
        del src, dst
        torch.cuda.empty_cache()

    def _check_pattern(self, words, seed: int) -> bool:
        torch = self.torch
        chunk = 1 << 26
        for lo in range(0, words.numel(), chunk):
            hi = min(words.numel(), lo + chunk)
            want = torch.arange(lo, hi, dtype=torch.int64, device=self.dev) ^ seed
            want = torch.where(want >= 2**31, want - 2**32, want).to(torch.int32)
            if not torch.equal(words[lo:hi], want):
                return False
        return True

    def l2(self) -> None:
        torch, p = self.torch, self.plan
        n_vec = p.l2_buffer_bytes // 16
        src = _random_words(n_vec * 4, self.dev)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, launches = self.timer.run(
            lambda: self.k["l2_read"](p.l2_blocks, p.threads, (src, n_vec, p.l2_reps, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches * p.l2_reps)
        value, rates = _rate(n_vec * 16 * p.l2_reps, per)
        self._record(Measurement("l2_read", value, ok, "checksum = launches x reps x sum of words (mod 2^32)", rates,
                                 {"buffer_bytes": n_vec * 16, "reps": p.l2_reps, "blocks": p.l2_blocks}), c0)

    def smem(self) -> None:
        torch, p = self.torch, self.plan
        tile = constants("smem_bandwidth.cu")["TILE_VEC"]
        src = _random_words(tile * 4, self.dev)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, launches = self.timer.run(
            lambda: self.k["smem_read"](p.smem_blocks, p.threads, (src, p.smem_reps, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches * p.smem_blocks * p.smem_reps)
        value, rates = _rate(p.smem_blocks * p.smem_reps * tile * 16, per)
        self._record(Measurement("smem_read", value, ok, "checksum = launches x blocks x reps x sum of tile (mod 2^32)",
                                 rates, {"blocks": p.smem_blocks, "reps": p.smem_reps, "tile_bytes": tile * 16}), c0)

    def fma(self) -> None:
        torch, p = self.torch, self.plan
        c = constants("fma_peak.cu")
        n_threads = p.fma_blocks * c["THREADS"]
        out = torch.full((n_threads,), float("nan"), dtype=torch.float32, device=self.dev)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(
            lambda: self.k["fma_fp32"](p.fma_blocks, c["THREADS"], (1.0, 1.0, p.fma_iters, out), self.stream))
        want = fma_expected(n_threads, c["CHAINS"], c["INNER"], p.fma_iters)
        ok = bool((out.double().cpu().numpy() == want).all())
        flops = 2.0 * n_threads * c["CHAINS"] * c["INNER"] * p.fma_iters
        value, rates = _rate(flops, per)
        self._record(Measurement("fp32_fma", value, ok, "every thread's counted-up chains, exactly", rates,
                                 {"flops_per_launch": flops, "iters": p.fma_iters, "blocks": p.fma_blocks}), c0)

    def mma(self, dtype: str) -> None:
        torch, p = self.torch, self.plan
        c = constants("tensor_mma.cu")
        tdt = torch.bfloat16 if dtype == "bf16" else torch.float16
        gen = torch.Generator().manual_seed(1234)
        a = torch.randint(-MMA_INPUT_MAX, MMA_INPUT_MAX + 1, (16, 16), generator=gen).to(tdt)
        bt = torch.randint(-MMA_INPUT_MAX, MMA_INPUT_MAX + 1, (8, 16), generator=gen).to(tdt)
        a_words, bt_words = (w.to(self.dev) for w in mma_fragments(a, bt))
        warps = p.mma_blocks * c["THREADS"] // 32
        out = torch.full((warps, 16, 8), float("nan"), dtype=torch.float32, device=self.dev)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(lambda: self.k[f"mma_{dtype}"](
            p.mma_blocks, c["THREADS"], (a_words, bt_words, p.mma_iters, out), self.stream))
        want = torch.from_numpy(mma_expected(a, bt, c["ACC"], p.mma_iters)).to(self.dev)
        ok = bool((out.double() == want).all())
        flops = 2.0 * 16 * 8 * 16 * warps * c["ACC"] * p.mma_iters
        value, rates = _rate(flops, per)
        self._record(Measurement(f"mma_{dtype}", value, ok, "every warp's tile = ACC x iters x (A @ B), exactly",
                                 rates, {"flops_per_launch": flops, "iters": p.mma_iters, "warps": warps}), c0)

    def cublas(self, dtype: str) -> None:
        torch, n = self.torch, self.plan.gemm_n
        tdt = torch.bfloat16 if dtype == "bf16" else torch.float16
        a = torch.randn(n, n, device=self.dev).to(tdt)
        b = torch.randn(n, n, device=self.dev).to(tdt)
        out = torch.empty(n, n, device=self.dev, dtype=tdt)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(lambda: torch.mm(a, b, out=out))
        ref = a[:64].float() @ b[:, :64].float()
        ok = bool(torch.allclose(out[:64, :64].float(), ref, rtol=2e-2, atol=2e-2 * math.sqrt(n)))
        value, rates = _rate(2.0 * n**3, per)
        self._record(Measurement(f"cublas_{dtype}", value, ok, "a 64x64 corner against an fp32 product", rates,
                                 {"n": n, "flops_per_launch": 2.0 * n**3}), c0)
        del a, b, out
        torch.cuda.empty_cache()


def measure_ceilings(*, quick: bool = False, backend: str | None = None, trial_s: float | None = None,
                     log: Callable[[str], None] | None = None) -> CeilingsResult:
    """Compile and run every microbenchmark on the current GPU (a few seconds); nothing is cached."""
    gpu_or_raise()
    import torch

    from gpuprobe.specs.gpus import match_device_name

    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    idx = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    torch.cuda.init()
    torch.zeros(1, device=f"cuda:{idx}")  # the primary context exists and is current on this thread
    spec = match_device_name(props.name)
    l2 = int(getattr(props, "L2_cache_size", 0) or (spec.l2_bytes if spec else 0) or 50 * MiB)
    free, _total = torch.cuda.mem_get_info(idx)
    plan = plan_benchmarks(props.multi_processor_count, l2, int(free), quick=quick)
    chosen = choose_backend(backend)
    log(f"compiling {len(SOURCE_FILES)} sources with {chosen} for sm_{props.major}{props.minor}")
    try:
        kernels = compile_kernels(chosen, idx)
    except (ImportError, OSError, GpuprobeError) as e:
        if backend is None and chosen == "cupy":  # CuPy present but broken: NVRTC directly
            log(f"CuPy compile failed ({e}); falling back to nvrtc-ctypes")
            chosen = "nvrtc-ctypes"
            kernels = compile_kernels(chosen, idx)
        else:
            raise
    clocks = _Clocks(idx)
    timer = _Timer(trial_s=trial_s or (0.03 if quick else 0.06), trials=5, clocks=clocks)
    runner = _Runner(kernels, plan, timer, log)
    runner.dram()
    runner.l2()
    runner.smem()
    runner.fma()
    for dt in ("bf16", "fp16"):
        runner.mma(dt)
    for dt in ("bf16", "fp16"):
        runner.cublas(dt)
    torch.cuda.synchronize()
    env = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda,
           "compute_capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
           "l2_bytes": l2, "plan": dataclasses.asdict(plan), "python": sys.version.split()[0]}
    if chosen == "cupy":
        import cupy

        env["cupy"] = cupy.__version__
    return CeilingsResult(
        device_name=props.name, gpu=spec.name if spec else None, driver=clocks.info.get("driver"),
        backend=chosen, measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        measurements=runner.out, clocks=clocks.summary(), environment=env, seconds=round(time.perf_counter() - t0, 2))


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

NO_GPU_MESSAGE = ("no CUDA GPU on this machine: ceilings are measured on one "
                  "(the analytic roofline keeps using datasheet figures)")


def gpu_or_raise() -> None:
    """Raise :class:`NotAvailable` (one line) unless torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        raise NotAvailable(NO_GPU_MESSAGE + "; torch is not installed either") from None
    if not torch.cuda.is_available():
        raise NotAvailable(NO_GPU_MESSAGE)


def run_ceilings(refresh: bool = False, *, log: Callable[[str], None] | None = None,
                 **kw: Any) -> tuple[CeilingsResult, Path | None, bool]:
    """The ceilings of the present GPU: cached unless ``refresh``, else measured and cached when
    every figure checked out. Returns (result, cache file or None, whether it came from the cache)."""
    gpu_or_raise()
    if not refresh:
        cached = cached_ceilings()
        if cached is not None:
            return cached, cache_path(cached.device_name, cached.driver), True
    result = measure_ceilings(log=log, **kw)
    path = save_cached(result) if result.all_verified else None
    return result, path, False


_QUICK_COPY: dict[str, float] = {}


def quick_copy_bandwidth(nbytes: int | None = None) -> float:
    """A torch device-to-device copy's bandwidth (bytes read + written per second), about 0.3 s."""
    gpu_or_raise()
    import torch

    idx = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    l2 = int(getattr(props, "L2_cache_size", 0) or 50 * MiB)
    free, _ = torch.cuda.mem_get_info(idx)
    nbytes = nbytes or min(max(1 * GiB, 16 * l2), int(free) // 4 // MiB * MiB)
    src = torch.empty(nbytes // 4, dtype=torch.int32, device=f"cuda:{idx}").random_()
    dst = torch.empty_like(src)
    per, _ = _Timer(trial_s=0.03, trials=5).run(lambda: dst.copy_(src))
    value, _ = _rate(2 * src.numel() * 4, per)
    return value


def copy_bandwidth(refresh: bool = False) -> float:
    """THE measured copy bandwidth (bytes/s, read + written) that every "% of bandwidth" divides by.

    The cached figure of the present GPU (``gpuprobe ceilings``) when there is one and ``refresh``
    is false; else a quick torch copy measured now (remembered for this process). Raises
    :class:`NotAvailable` without a GPU.
    """
    gpu_or_raise()
    if not refresh:
        cached = cached_ceilings()
        if cached is not None and cached.copy_bytes_per_s:
            return cached.copy_bytes_per_s
    import torch

    key = torch.cuda.get_device_name(torch.cuda.current_device())
    if refresh or key not in _QUICK_COPY:
        _QUICK_COPY[key] = quick_copy_bandwidth()
    return _QUICK_COPY[key]


__all__ = [
    "BenchPlan", "CeilingsResult", "Kernel", "KernelSignature", "Measurement", "MEASUREMENTS", "SOURCE_FILES",
    "TARGETS", "all_kernels", "cache_dir", "cache_path", "cached_ceilings", "check_args", "choose_backend",
    "compile_kernels", "copy_bandwidth", "datasheet_value", "evaluate_targets", "find_kernel", "fma_expected",
    "fp32_scaled_datasheet", "gpu_or_raise", "load_source", "measure_ceilings", "measured_roofs", "mma_expected",
    "mma_fragments", "nvrtc_compile", "pack_ctypes", "pack_numpy", "parse_constants", "parse_kernels",
    "plan_benchmarks", "run_ceilings", "save_cached", "select_ceilings", "u32_checksum",
]
