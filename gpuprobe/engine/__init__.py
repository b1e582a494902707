"""Decode engine: Qwen2 / Llama / OPT decoders with a paged KV cache, NVTX ranges per op, CUDA-graph replay.

``Engine`` is the entry point (``docs/engine.md``); ``instrument`` adds the same NVTX ranges to any
``torch.nn.Module``. Both load on first use, so importing this package does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Engine": "gpuprobe.engine.engine",
    "MemoryReport": "gpuprobe.engine.engine",
    "instrument": "gpuprobe.engine.instrument",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
