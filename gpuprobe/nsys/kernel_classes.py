"""The one adapter to the kernel rule table (:mod:`gpuprobe.kernel_rules`): kernel name -> op class.

The rule table (regex -> op class such as ``gemm``, ``attention``, ``norm``; docs/contracts.md) names a
kernel's op when no NVTX range does. It is imported lazily; where it is not installed every kernel
stays ``other:<short name>``.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Callable


@lru_cache(maxsize=1)
def _classifier() -> Callable[[str], Any] | None:
    try:
        mod = importlib.import_module("gpuprobe.kernel_rules")
    except ImportError:
        return None
    rules = mod.load_rules() if hasattr(mod, "load_rules") else None
    if rules is not None and hasattr(rules, "classify"):
        return rules.classify
    return getattr(mod, "classify", None)


def rules_available() -> bool:
    """True when :mod:`gpuprobe.kernel_rules` can be imported."""
    return _classifier() is not None


@lru_cache(maxsize=65536)
def kernel_class(name: str) -> str | None:
    """The op class of a kernel name by the rule table, or None (no rule matches, or no table)."""
    classify = _classifier()
    if classify is None or not name:
        return None
    out = classify(name)
    return str(out) if out else None
