"""A compiled entry point (:class:`Kernel`) and the packing of its launch arguments, checked against
the parameter kinds its source declares."""
from __future__ import annotations

import ctypes
from typing import Any, Callable, Sequence

from gpuprobe.ceilings.sources import KernelSignature

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
