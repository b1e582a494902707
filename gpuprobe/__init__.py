"""gpuprobe: where the time of LLM decoding goes on a GPU, kernel by kernel.

Light to import: heavy pieces (torch, triton, ncu_report) load only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Engine": ("gpuprobe.engine", "Engine"),
    "instrument": ("gpuprobe.engine.instrument", "instrument"),
    "load_report": ("gpuprobe.reports", "load_report"),
    "open_report": ("gpuprobe.reports", "open_report"),
    "ModelSpec": ("gpuprobe.specs", "ModelSpec"),
    "GPUSpec": ("gpuprobe.specs", "GPUSpec"),
    "get_model": ("gpuprobe.specs", "get_model"),
    "get_gpu": ("gpuprobe.specs", "get_gpu"),
    "load_model_spec": ("gpuprobe.specs", "load_model_spec"),
    "decode_costs": ("gpuprobe.analytic", "decode_costs"),
    "RooflineResult": ("gpuprobe.roofline.schema", "RooflineResult"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'gpuprobe' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
