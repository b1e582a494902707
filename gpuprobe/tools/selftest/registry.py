"""Registry of selftest checks, their run order and their time estimates.

A check is a small function registered with :func:`check`. It receives a :class:`CheckContext`
and returns a dict of the figures it measured (numbers, short strings). It passes by returning,
fails by raising :class:`CheckFailed` (with figures) or any other exception, and skips by raising
:class:`Skip` with the reason. Checks live in ``gpuprobe/tools/selftest/checks/<owner>.py``, one module
per capability, and are discovered on import. A name listed in :data:`EXPECTED` (docs/contracts.md,
selftest checks) with no registered function is reported as skipped, "not built".

Every check has an estimate: the seconds it takes on a healthy GPU, per GPU class where that
differs (:meth:`Check.estimate`). The runner starts a check only when its estimate fits in what is
left of the run's budget, so a run never starts what it cannot finish. :data:`RUN_ORDER` is the
order a run takes; :data:`EXTRA` holds the checks that do not fit one run, run with ``--check NAME``.
"""
from __future__ import annotations

import importlib
import pkgutil
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

Figures = dict[str, Any]
#: Seconds on a healthy GPU: one number, or per GPU class (``{"default": 25, "a100": 40}``; keys are
#: registry names such as ``h100-pcie`` or families such as ``a100``, see :func:`gpu_class_keys`).
Estimate = float | Mapping[str, float]


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


class CheckFailed(Exception):
    """Raised by a check whose claim did not hold; carries the figures it measured."""

    def __init__(self, message: str, figures: Figures | None = None):
        super().__init__(message)
        self.figures = figures or {}


def verdict(figures: Figures, problems: list[str]) -> Figures:
    """A check's end: its ``figures`` when ``problems`` is empty, else :class:`CheckFailed` with them all."""
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures


@dataclass
class CheckContext:
    """What a check gets: a private folder for its evidence, the run's options, a logger.

    ``run_dir`` is the run's output folder (the checks' folders are ``run_dir/checks/<name>``), so
    that a check can reuse what an earlier check of the same run found (the counter probe)."""

    out_dir: Path
    gpu: bool
    budget_s: float
    options: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    def log(self, msg: str) -> None:
        with open(self.out_dir / "log.txt", "a") as f:
            f.write(msg.rstrip() + "\n")

    def check_dir(self, name: str) -> Path | None:
        """The evidence folder of check ``name`` in this run (None outside a run)."""
        return self.run_dir / "checks" / name if self.run_dir is not None else None


def gpu_class_keys(gpu: str | None) -> list[str]:
    """Estimate keys to try for a GPU, most specific first: ``h100-pcie`` -> ``h100-pcie``, ``h100``, ``default``."""
    if not gpu:
        return ["default"]
    name = gpu.strip().lower()
    return list(dict.fromkeys([name, name.split("-")[0], "default"]))


@dataclass(frozen=True)
class Check:
    name: str
    owner: str
    func: Callable[[CheckContext], Figures]
    gpu: bool
    budget_s: float
    description: str
    estimate_s: Estimate | None = None

    def estimate(self, gpu: str | None = None) -> float:
        """Seconds this check takes on ``gpu`` (a registry name; None: the default class). Without an
        estimate of its own, its budget: a check never looks cheaper than the limit it runs under."""
        est = self.estimate_s
        if est is None:
            return self.budget_s
        if isinstance(est, Mapping):
            for key in gpu_class_keys(gpu):
                if key in est:
                    return float(est[key])
            return self.budget_s
        return float(est)


#: Check names each capability owns (docs/contracts.md, selftest checks).
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
    "prediction_vs_measured": "prediction",
    "graph_vs_eager_tokens": "engine",
    "throughput_b1_b256": "engine",
    "gemm_counter_flops": "ncu",
    "advise_measured_curve": "advisor",
    "energy_per_token": "advisor",
    "replicate_mps_cleanup": "advisor",
    "csv_vs_rep_pair": "ncu",
    "profile_torch_program": "ncu",
    "gpu_tests": "gpu_nodes",
    "profile_nsys": "nsys",
    "roofline_nsys": "nsys",
    "kernels_per_layer": "engine",
    "throughput_b1_fused": "engine",
}

#: The order a run takes. The doctor first (the environment every GPU check is gated on, and the one
#: counter-permission probe), the ceilings next (the copy and read bandwidth the kernels' checks
#: divide by, cached for the checks after them), then the core claims of the mission: paged attention
#: correct and at bandwidth, counters readable, the two-point measured roofline and the calibrated
#: prediction against its timing points; then the engine and the advisor's curve. Checks registered but
#: not named here run after these, in registration order; the :data:`EXTRA` ones only when named with
#: ``--check``. Estimates: each check's ``@check``; the plan: ``gpuprobe selftest --plan``.
RUN_ORDER: tuple[str, ...] = (
    "doctor",
    "ceilings",
    "paged_attention_correct",
    "paged_attention_bandwidth",
    "ncu_counter_permission",
    "roofline_two_points",
    "prediction_vs_measured",
    "analytic_vs_fixture",
    "graph_vs_eager_tokens",
    "throughput_b1_b256",
    "kernels_per_layer",
    "throughput_b1_fused",
    "advise_measured_curve",
)

#: Estimates (seconds) the plan counts for expected checks whose module is not there yet, so that a plan
#: made before they land still fits once they do.
PLANNED_ESTIMATE_S: dict[str, float] = {
    "prediction_vs_measured": 5.0,  # reads the two-point roofline's files and a shipped calibration: no GPU work
}

#: Checks that do not fit the main run (``scripts/device_selftest.sh``'s budget with 10% to spare), with
#: the reason; ``gpuprobe selftest --gpu --check NAME`` runs them. docs/gpu-nodes.md plans the second call.
EXTRA: dict[str, str] = {
    "energy_per_token": "a 6 s energy window plus a replica's start (~25 s): the second call's first check",
    "replicate_mps_cleanup": "two replicas under a private MPS daemon (~25 s): the second call, where a leftover "
                             "daemon can disturb no later run",
    "splitk_bandwidth": "a secondary kernel target (long context, small batch); the paged-attention checks "
                        "cover the kernel's correctness and bandwidth",
    "decode_gemm": "a secondary kernel target (Triton GEMM against cuBLAS at M <= 64)",
    "gemm_counter_flops": "the two-point roofline's cross-checks already compare counter FLOPs of the "
                          "engine's GEMMs with 2MNK",
    "csv_vs_rep_pair": "reader equivalence, checked on CPU with real fixtures; the GPU adds a fresh pair",
    "profile_torch_program": "the two-point roofline already profiles a real decode step under ncu",
    "throughput_b1_compiled": "torch.compile of the step takes 40-90 s on a cold cache; the fused engine's "
                              "batch-1 check (main run) judges the batch-1 graph step",
    "gpu_tests": "pytest of every gpu-marked test file: one to two minutes, more than the run has left",
    "profile_nsys": "nsys is not on the usual GPU node's PATH; run it with --check where nsys exists",
    "roofline_nsys": "nsys is not on the usual GPU node's PATH; run it with --check where nsys exists",
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


def require_nsys() -> str:
    """The ``nsys`` executable on PATH; otherwise :class:`Skip` with the reason (the sandboxed H200
    node has none on its PATH: an nsys check is skipped there, never failed)."""
    path = shutil.which("nsys")
    if path is None:
        raise Skip("nsys (Nsight Systems) is not on the PATH here")
    return path


def check(name: str, *, owner: str, gpu: bool = True, budget_s: float = 60.0, estimate_s: Estimate | None = None):
    """Register ``func`` as the check ``name``; the docstring's first line describes it.

    ``budget_s``: the check's own limit (stopped there, a real failure); ``estimate_s``: what it takes
    on a healthy GPU (seconds, or per GPU class), used to plan a run; its budget when not given."""

    def deco(func: Callable[[CheckContext], Figures]) -> Callable[[CheckContext], Figures]:
        if name in _CHECKS and _CHECKS[name].func is not func:
            raise ValueError(f"selftest check '{name}' registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        _CHECKS[name] = Check(name, owner, func, gpu, float(budget_s), doc[0] if doc else "", estimate_s)
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
    """Every known check by name: the run order's, the other expected ones (None where nothing
    registered), the other registered ones, then the extra ones."""
    names = [*RUN_ORDER, *(n for n in [*EXPECTED, *_CHECKS] if n not in EXTRA), *EXTRA]
    return {n: _CHECKS.get(n) for n in dict.fromkeys(names)}


def all_checks() -> dict[str, Check | None]:
    """Every known check after discovery (modules that fail to import simply register nothing)."""
    discover()
    return registered_checks()
