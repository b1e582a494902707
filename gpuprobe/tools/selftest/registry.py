"""Registry of selftest checks.

A check is a small function registered with :func:`check`. It receives a :class:`CheckContext`
and returns a dict of the figures it measured (numbers, short strings). It passes by returning,
fails by raising :class:`CheckFailed` (with figures) or any other exception, and skips by raising
:class:`Skip` with the reason. Checks live in ``gpuprobe/tools/selftest/checks/<owner>.py``, one module
per capability, and are discovered on import. A name listed in :data:`EXPECTED` (CONTRACTS.md
section 9) with no registered function is reported as skipped, "not built".
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Figures = dict[str, Any]


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


class CheckFailed(Exception):
    """Raised by a check whose claim did not hold; carries the figures it measured."""

    def __init__(self, message: str, figures: Figures | None = None):
        super().__init__(message)
        self.figures = figures or {}


@dataclass
class CheckContext:
    """What a check gets: a private folder for its evidence, the run's options, a logger."""

    out_dir: Path
    gpu: bool
    budget_s: float
    options: dict[str, Any] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        with open(self.out_dir / "log.txt", "a") as f:
            f.write(msg.rstrip() + "\n")


@dataclass(frozen=True)
class Check:
    name: str
    owner: str
    func: Callable[[CheckContext], Figures]
    gpu: bool
    budget_s: float
    description: str


#: Check names each capability owns (CONTRACTS.md section 9), in the order a run takes them. The
#: claims the rest build on come first: the doctor (the environment every GPU check is gated on),
#: the ceilings (the measured copy bandwidth every "% of bandwidth" divides by, cached for the checks
#: after it), the kernels and the measured roofline behind the central claim, then the engine, the
#: advisor, and the slow or secondary checks last, so a run cut short by its total budget loses the
#: least. Estimated seconds on an H100 of each: docs/gpu-nodes.md.
EXPECTED: dict[str, str] = {
    "doctor": "gpu_nodes",
    "analytic_vs_fixture": "foundation",
    "ceilings": "ceilings",
    "paged_attention_correct": "kernels",
    "paged_attention_bandwidth": "kernels",
    "splitk_bandwidth": "kernels",
    "decode_gemm": "kernels",
    "ncu_counter_permission": "ncu",
    "roofline_two_points": "roofline",
    "graph_vs_eager_tokens": "engine",
    "throughput_b1_b256": "engine",
    "gemm_counter_flops": "ncu",
    "advise_measured_curve": "advisor",
    "energy_per_token": "advisor",
    "replicate_mps_cleanup": "advisor",
    "csv_vs_rep_pair": "ncu",
    "profile_torch_program": "ncu",
    "gpu_tests": "gpu_nodes",
}

_CHECKS: dict[str, Check] = {}


def require_cuda():
    """``torch`` with a visible CUDA device; otherwise :class:`Skip` with the reason."""
    try:
        import torch
    except ImportError:
        raise Skip("torch is not installed") from None
    if not torch.cuda.is_available():
        raise Skip("no CUDA GPU")
    return torch


def check(name: str, *, owner: str, gpu: bool = True, budget_s: float = 60.0):
    """Register ``func`` as the check ``name``; the docstring's first line describes it."""

    def deco(func: Callable[[CheckContext], Figures]) -> Callable[[CheckContext], Figures]:
        if name in _CHECKS and _CHECKS[name].func is not func:
            raise ValueError(f"selftest check '{name}' registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        _CHECKS[name] = Check(name, owner, func, gpu, float(budget_s), doc[0] if doc else "")
        return func

    return deco


def discover() -> dict[str, str]:
    """Import every module of ``gpuprobe.tools.selftest.checks`` so their checks register.

    Returns, by module name, the modules that failed to import: a broken module costs its own
    checks (reported as not built) and never the others.
    """
    from gpuprobe.tools.selftest import checks

    errors: dict[str, str] = {}
    for info in pkgutil.iter_modules(checks.__path__):
        try:
            importlib.import_module(f"{checks.__name__}.{info.name}")
        except Exception as e:  # noqa: BLE001 - any import failure is reported, not raised
            errors[info.name] = f"{type(e).__name__}: {e}"
    return errors


def registered_checks() -> dict[str, Check | None]:
    """Every known check by name: expected ones first (None where nothing registered), then the rest."""
    names = list(EXPECTED) + [n for n in _CHECKS if n not in EXPECTED]
    return {n: _CHECKS.get(n) for n in names}


def all_checks() -> dict[str, Check | None]:
    """Every known check after discovery (modules that fail to import simply register nothing)."""
    discover()
    return registered_checks()
