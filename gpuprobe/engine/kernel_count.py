"""Kernels one decode layer launches: counted on a CPU (ATen compute ops + Triton launches) or on a GPU.

On a CPU (:func:`count_kernels`) one eager step runs under a ``TorchDispatchMode`` that records every
ATen op that would be a kernel on a GPU, and under a patch of Triton's launch path that records each
Triton launch (ATen ops the interpreter issues while it emulates a kernel belong to that launch and
are not counted). Views and reshapes, allocations (``empty``) and metadata ops are not kernels. Each
kernel is attributed to the NVTX op path open when it launched (a recording NVTX backend), so the
result holds kernels per op of layer 0 and the kernels of the whole step.

On a GPU (:func:`kernels_per_layer_gpu`) the torch profiler counts the CUDA kernels of one step of the
model built with one and with two layers; their difference is one layer's kernels (memcpy / memset
excluded), whatever the step-only ops launch.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from gpuprobe.engine.nvtx import use_backend

#: ATen ops that launch no kernel: allocation, metadata, aliasing (besides every op whose schema is a view).
NON_KERNEL_OPS = frozenset({
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "lift_fresh", "detach", "alias",
    "_unsafe_view", "split", "split_with_sizes", "chunk", "unbind", "_reshape_alias", "as_strided", "set_",
    "resize_", "is_same_size", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "dim", "size",
    "stride", "numel", "is_contiguous",
})


@dataclass
class KernelCount:
    """Kernels of one decode step: ``per_layer`` (layer 0), ``per_op`` (layer 0's, by op), ``step``
    (all), ``names`` (layer 0's kernels in launch order: ATen op or Triton kernel name)."""

    per_layer: int
    per_op: dict[str, int]
    step: int
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"per_layer": self.per_layer, "per_op": dict(self.per_op), "step": self.step, "names": list(self.names)}


def is_kernel(func) -> bool:
    """True when an ATen op (``OpOverload``) computes on the device rather than aliasing or allocating."""
    if getattr(func, "is_view", False):
        return False
    return func._schema.name.split("::")[-1] not in NON_KERNEL_OPS


class _PathBackend:
    """An NVTX backend that only keeps the open range path (``decode/layer0/qkv_proj``)."""

    def __init__(self) -> None:
        self.stack: list[str] = []

    def push(self, name: str) -> None:
        self.stack.append(name)

    def pop(self) -> None:
        self.stack.pop()


class _Recorder:
    def __init__(self, backend: _PathBackend) -> None:
        self.backend = backend
        self.events: list[tuple[tuple[str, ...], str]] = []
        self.in_triton = 0

    def record(self, name: str) -> None:
        self.events.append((tuple(self.backend.stack), name))


@contextlib.contextmanager
def _count_triton_launches(rec: _Recorder) -> Iterator[None]:
    """Record each Triton kernel launch (compiled or interpreted) and mute ATen ops issued inside it."""
    patched = []
    try:
        from triton.runtime import interpreter, jit
    except ImportError:
        yield
        return
    for cls in (jit.JITFunction, interpreter.InterpretedFunction):
        original = cls.__dict__.get("run")
        if original is None:
            continue

        def run(self, *args, __original=original, **kwargs):
            fn = getattr(self, "fn", None)
            rec.record(f"triton:{getattr(fn, '__name__', type(self).__name__)}")
            rec.in_triton += 1
            try:
                return __original(self, *args, **kwargs)
            finally:
                rec.in_triton -= 1

        cls.run = run
        patched.append((cls, original))
    try:
        yield
    finally:
        for cls, original in patched:
            cls.run = original


def count_kernels(engine, batch) -> KernelCount:
    """Kernels of one eager step of ``engine`` on ``batch`` (a CPU or meta engine; see the module docstring)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    backend = _PathBackend()
    rec = _Recorder(backend)

    class _AtenCounter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not rec.in_triton and is_kernel(func):
                rec.record(f"aten:{func._schema.name.split('::')[-1]}")
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), use_backend(backend), _count_triton_launches(rec), _AtenCounter():
        engine.step(batch, nvtx=True)
    layer0 = [(path, name) for path, name in rec.events if len(path) >= 2 and path[1] == "layer0"]
    per_op = Counter(path[2] if len(path) > 2 else "layer0" for path, _ in layer0)
    return KernelCount(per_layer=len(layer0), per_op=dict(per_op), step=len(rec.events),
                       names=[name for _, name in layer0])


def kernels_per_layer_cpu(model: str, kernels: str, *, attention: str = "triton", batch: int = 1,
                          context: int = 64, dtype: str = "fp32", **engine_kwargs) -> KernelCount:
    """:func:`count_kernels` of a one-layer random ``model`` on the CPU (Triton interpreted)."""
    from gpuprobe.engine import Engine

    eng = Engine.from_pretrained(model, dtype=dtype, device="cpu", attention=attention, kernels=kernels, layers=1,
                                 **engine_kwargs)
    return count_kernels(eng, eng.prepare(batch, context))


def step_kernel_names(engine, batch) -> list[str]:
    """Names of the CUDA kernels one eager step launches (torch profiler; memcpy / memset excluded)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    engine.step(batch)  # warm: Triton compiles, cuBLAS chooses
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.step(batch)
        torch.cuda.synchronize()
    return [e.name for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.lower().startswith(("memcpy", "memset"))]


def kernels_per_layer_gpu(model: str, kernels: str, *, attention: str | None = None, batch: int = 1,
                          context: int = 1024, dtype: str = "bf16") -> dict[str, Any]:
    """CUDA kernels of one decoder layer (torch profiler): a step's kernels with two layers minus with one.

    Returns ``{"per_layer", "layer_kernels"`` (name -> count, the difference of the two steps),
    ``"step_1_layer", "step_2_layers", "attention", "kernels"}``.
    """
    import gc

    import torch

    from gpuprobe.engine import Engine

    names: dict[int, list[str]] = {}
    used = mode = None
    for layers in (1, 2):
        eng = Engine.from_pretrained(model, dtype=dtype, device="cuda", attention=attention, kernels=kernels,
                                     layers=layers)
        used, mode = eng.attention, eng.kernels
        b = eng.prepare(batch, context)
        names[layers] = step_kernel_names(eng, b)
        del eng, b
        gc.collect()
        torch.cuda.empty_cache()
    layer = Counter(names[2])
    layer.subtract(Counter(names[1]))
    return {"per_layer": len(names[2]) - len(names[1]),
            "layer_kernels": {k: v for k, v in sorted(layer.items()) if v},
            "step_1_layer": len(names[1]), "step_2_layers": len(names[2]), "attention": used, "kernels": mode}
