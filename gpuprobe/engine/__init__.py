"""Decode engine: Qwen2 / Llama / OPT decoders with a paged KV cache, NVTX ranges per op, CUDA-graph replay.

``Engine`` is the entry point (``docs/engine.md``); ``instrument`` adds the same NVTX ranges to any
``torch.nn.Module``. Importing this package imports torch.
"""
from __future__ import annotations

from gpuprobe.engine.engine import Engine, MemoryReport
from gpuprobe.engine.instrument import instrument

__all__ = ["Engine", "MemoryReport", "instrument"]
