"""The fused decode step: ``torch.compile`` of one step, and the opaque ops it calls.

``Engine(..., compile=True)`` replaces the step that CUDA graphs capture (and ``generate`` runs) with
``torch.compile(step, mode="default", fullgraph=False, dynamic=False)``. Inductor fuses the step's
elementwise work (norms, RoPE, residual adds, activation, embedding gather, argmax) into a few
generated Triton kernels per layer and leaves every GEMM to cuBLAS (``extern_kernels.mm`` / ``addmm``,
which also takes the residual add as its input). Why ``mode="default"``:

- no CUDA graphs of its own (``reduce-overhead`` and ``max-autotune`` add them; gpuprobe captures
  the step itself, see :mod:`gpuprobe.engine.graphs`);
- GEMMs stay cuBLAS, the same kernels the eager, NVTX-annotated step runs, so per-op profiles of
  the eager step still describe the GEMMs of the fused one; ``max-autotune-no-cudagraphs`` would
  benchmark Triton GEMM templates for every shape, which costs minutes of compile time and changes
  what is measured;
- ``dynamic=False``: one specialised graph per batch shape (a decode step has static shapes).

Three ops the compiler must not see through, each a ``torch.library.custom_op`` used only while
``torch.compiler.is_compiling()`` (the eager step calls the same code directly):

- ``gpuprobe::paged_decode_attention``: the Triton paged kernel's launcher (Python that picks
  split-K from shapes and launches one or two kernels) as one opaque op; no graph break.
- ``gpuprobe::paged_kv_write`` / ``gpuprobe::dense_kv_write``: the new token's K/V written in place
  into the KV pool (or dense cache). Written as plain ``index_copy_`` on a *view* of a graph input,
  functionalisation turns the write into "copy the layer's whole cache, scatter, copy back": a step
  that moves the entire KV cache. As ops that declare they mutate the pool, the write stays in place.
"""
import time
from typing import Any, Callable, Optional

import torch

#: ``torch.compile`` settings of the fused step (see the module docstring).
COMPILE_MODE = "default"
COMPILE_OPTIONS: dict[str, Any] = {"mode": COMPILE_MODE, "fullgraph": False, "dynamic": False}


# ---- opaque ops ---------------------------------------------------------------------------------
@torch.library.custom_op("gpuprobe::paged_kv_write", mutates_args=("pool",))
def paged_kv_write(pool: torch.Tensor, layer: int, slot_mapping: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor) -> None:
    """``pool [L, 2, pages, page_size, Hkv, D]``: K/V ``[B, Hkv, D]`` of layer ``layer`` at flat slots."""
    hkv, d = k.shape[1], k.shape[2]
    pool[layer, 0].view(-1, hkv, d).index_copy_(0, slot_mapping, k)
    pool[layer, 1].view(-1, hkv, d).index_copy_(0, slot_mapping, v)


@paged_kv_write.register_fake
def _(pool, layer, slot_mapping, k, v) -> None:
    return None


@torch.library.custom_op("gpuprobe::dense_kv_write", mutates_args=("dense",))
def dense_kv_write(dense: torch.Tensor, layer: int, rows: torch.Tensor, positions: torch.Tensor,
                   k: torch.Tensor, v: torch.Tensor) -> None:
    """``dense [L, 2, B, Hkv, max_len, D]``: K/V ``[B, Hkv, D]`` of layer ``layer`` at ``positions``."""
    dense[layer, 0][rows, :, positions] = k
    dense[layer, 1][rows, :, positions] = v


@dense_kv_write.register_fake
def _(dense, layer, rows, positions, k, v) -> None:
    return None


@torch.library.custom_op("gpuprobe::paged_decode_attention", mutates_args=())
def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_table: torch.Tensor, context_lens: torch.Tensor, scale: float,
                           num_splits: Optional[int]) -> torch.Tensor:
    """:func:`gpuprobe.kernels.paged_decode_attention` as one op: ``q [B, Hq, D]`` -> ``[B, Hq, D]``."""
    from gpuprobe.kernels import paged_decode_attention as launch

    return launch(q, k_cache, v_cache, block_table, context_lens, scale=scale, num_splits=num_splits)


@paged_decode_attention.register_fake
def _(q, k_cache, v_cache, block_table, context_lens, scale, num_splits):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def compiling() -> bool:
    """True while Dynamo traces (the backends then call the opaque ops above)."""
    return torch.compiler.is_compiling()


# ---- the compiled step --------------------------------------------------------------------------
class CompiledStep:
    """``torch.compile`` of ``fn(batch) -> logits`` with :data:`COMPILE_OPTIONS`; ``__call__`` runs it.

    Compilation is lazy: the first call for a new batch shape compiles. :meth:`warm` makes that call
    (outside any CUDA-graph capture) and times it; ``compile_s`` keeps the first such time
    (compilation plus one step).
    """

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn = _private_copy(fn)
        self.compiled = torch.compile(self.fn, **COMPILE_OPTIONS)
        self.compile_s: float | None = None

    def warm(self, batch: Any) -> float:
        """Run once for ``batch`` (compiling if needed, waiting for the GPU); the seconds it took."""
        t0 = time.perf_counter()
        self.compiled(batch)
        if batch.tokens.is_cuda:
            torch.cuda.synchronize(batch.tokens.device)
        seconds = time.perf_counter() - t0
        if self.compile_s is None:
            self.compile_s = seconds
        return seconds

    def __call__(self, batch: Any) -> torch.Tensor:
        return self.compiled(batch)


def _private_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a code object of its own. Dynamo keeps compiled graphs, and counts recompilations
    against ``recompile_limit`` (8), per code object; every engine's step closure shares one, so
    without a copy a process that builds many engines (a sweep run inline) would quietly fall back
    to eager steps after the eighth."""
    import types

    if not isinstance(fn, types.FunctionType):
        return fn
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__qualname__ = fn.__kwdefaults__, fn.__qualname__
    return copy


def no_recompile():
    """A context in which a recompilation raises instead of compiling (used around graph capture:
    compiling there would launch autotuning or host syncs inside the capture). A no-op on a torch
    without ``torch.compiler.set_stance``."""
    import contextlib

    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None:
        return contextlib.nullcontext()
    return set_stance("fail_on_recompile")
