"""Compile backends: every shipped source compiled for the present GPU, by CuPy's ``RawModule`` when
CuPy imports, else by NVRTC and the CUDA driver called through :mod:`ctypes`."""
from __future__ import annotations

import ctypes
import importlib
import os
from typing import Any

from gpuprobe.ceilings.launch import Kernel, pack_ctypes, pack_numpy
from gpuprobe.ceilings.nvrtc import load_libnvrtc, nvrtc_compile
from gpuprobe.ceilings.sources import SOURCE_FILES, KernelSignature, load_source, parse_kernels
from gpuprobe.errors import GpuprobeError, NotAvailable

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
                # on torch's stream (the handle), never on whatever CuPy's current stream is
                fn((grid,), (block,), pack_numpy(sig, args), stream=self._stream(stream))

            kernels[name] = Kernel(sig, self.name, launch)
        return kernels

    def _stream(self, handle: int):
        """CuPy's stream object for a raw handle: the legacy default stream for 0 (torch's default
        stream), else the external stream torch made."""
        if handle not in self._streams:
            cuda = self.cupy.cuda
            self._streams[handle] = cuda.Stream.null if handle == 0 else cuda.ExternalStream(handle)
        return self._streams[handle]


class _CtypesBackend:
    """NVRTC and the CUDA driver called through ctypes: needs only libnvrtc (torch's CUDA wheels
    bring one) and libcuda; used when CuPy is absent. Runs in the primary context torch uses."""

    name = "nvrtc-ctypes"

    def __init__(self, device_index: int, arch: str, libcuda: str = "libcuda.so.1") -> None:
        load_libnvrtc()
        try:
            self.cuda = ctypes.CDLL(libcuda)
        except OSError as e:
            raise NotAvailable(f"the CUDA driver library ({libcuda}) cannot be loaded: {e}") from None
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
        importlib.import_module("cupy")
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
