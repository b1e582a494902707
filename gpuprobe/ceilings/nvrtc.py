"""NVRTC through :mod:`ctypes`: find ``libnvrtc`` and compile a source to a cubin (no GPU needed)."""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Sequence

from gpuprobe.errors import GpuprobeError, NotAvailable


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
