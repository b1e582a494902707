"""CUDA graphs of one decode step: capture once per batch, replay for honest throughput.

Eager PyTorch spends most of a small-batch step launching kernels from Python (4.1 ms per Qwen2-0.5B
step at batch 1 on an H100, against 0.33 ms of weight reads). A captured step replays all its
kernels with one launch. The step is graph-safe by construction (see :mod:`gpuprobe.engine.batch`):
it reads and writes only the batch's static buffers, allocates nothing that outlives it, and never
synchronises with the host; so capture needs no special code path, only a warm-up on a side stream
(Triton compiles, cuBLAS picks its kernels) before ``torch.cuda.graph``.

With ``Engine(compile=True)`` the captured step is the ``torch.compile``-fused one
(:mod:`gpuprobe.engine.compiled`): the warm-up compiles it before capture, and the capture runs
under ``fail_on_recompile`` so that a guard miss raises instead of compiling inside the capture.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

import torch

from gpuprobe.engine.compiled import no_recompile

from gpuprobe.errors import NotAvailable

if TYPE_CHECKING:
    from gpuprobe.engine.batch import DecodeBatch


class Stepper(Protocol):
    """What a capture needs of :class:`gpuprobe.engine.engine.Engine` (graphs does not import the engine)."""

    device: torch.device
    compile: bool

    def warm_compiled(self, batch: DecodeBatch) -> Any: ...

    def fast_step(self, batch: DecodeBatch) -> torch.Tensor: ...


class StepGraph:
    """One captured decode step of one batch; :meth:`replay` runs it, returning the static logits."""

    def __init__(self, engine: Stepper, batch: "DecodeBatch", warmup: int = 2, pool: Any = None) -> None:
        if engine.device.type != "cuda":
            raise NotAvailable("CUDA graphs need a CUDA device; use eager steps (graphs=False) on a CPU.")
        self.batch, self.version = batch, batch.version
        self.pool_generation = batch.cache.generation if batch.cache is not None else 0
        self.compiled = engine.compile
        stream = torch.cuda.Stream(device=engine.device)
        stream.wait_stream(torch.cuda.current_stream(engine.device))
        with torch.cuda.stream(stream):
            engine.warm_compiled(batch)  # compiles here, never inside the capture
            for _ in range(warmup):
                engine.fast_step(batch)
        torch.cuda.current_stream(engine.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), (no_recompile() if self.compiled else contextlib.nullcontext()), \
                torch.cuda.graph(self.graph, pool=pool):
            self.logits = engine.fast_step(batch)  # [B, V], a static output of the graph
        torch.cuda.synchronize(engine.device)

    def replay(self) -> torch.Tensor:
        """Run the captured step (asynchronous); ``batch.next_tokens`` and the returned logits hold its result."""
        gen = self.batch.cache.generation if self.batch.cache is not None else 0
        if self.batch.version != self.version or gen != self.pool_generation:
            raise RuntimeError("the batch's static shapes or the KV pool changed since capture; "
                               "capture the step again")
        self.graph.replay()
        return self.logits
