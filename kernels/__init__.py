"""Triton kernels of gpuprobe, installed as ``gpuprobe.kernels`` (this folder is not a top-level module).

``paged_decode_attention`` (:mod:`.paged_attention`), ``decode_gemm`` (:mod:`.gemm`) and the engine's
fused elementwise kernels ``fused_add_norm`` (:mod:`.norm`), ``rotary_kv_write`` (:mod:`.rotary`) and
``fused_activation`` (:mod:`.activation`) are loaded on first use, so ``import gpuprobe.kernels`` (and
:mod:`.reference`, :mod:`.activation_table`) works where Triton is not installed. Helpers the kernels share
(input checks, the dtype map, launch sizes, the GPU timer) are :mod:`.common`; nothing here imports
gpuprobe outside this package.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any


def _hand_over_to_installed_kernels() -> None:
    """Where this folder was found as top-level ``kernels`` (a checkout's root on ``sys.path``, as under
    ``python -m`` there), put the installed ``kernels`` distribution (Hugging Face's, which transformers
    >= 5.25 imports) in its place in ``sys.modules``; the import system then returns that one."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    elsewhere = [p for p in sys.path if os.path.realpath(p or os.curdir) != checkout]
    spec = importlib.machinery.PathFinder.find_spec(__name__, elsewhere)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[__name__]
        raise


if __name__ == "kernels":
    _hand_over_to_installed_kernels()

_LAZY = {
    "paged_decode_attention": "paged_attention",
    "choose_num_splits": "paged_attention",
    "decode_gemm": "gemm",
    "choose_gemm_config": "gemm",
    "fused_add_norm": "norm",
    "rotary_kv_write": "rotary",
    "fused_activation": "activation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
