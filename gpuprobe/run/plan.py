"""Planning a roofline run: the GPU, the mode, the batch list, the points of a sweep, resume checks.

The GPU (:func:`gpu_and_device`), the mode (``analytic``, ``timing``, ``ncu`` or ``nsys``) and the measured
roofs cached by ``gpuprobe ceilings`` are chosen here and nowhere else.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from gpuprobe.analytic import max_batch_that_fits
from gpuprobe.ceilings import cached_ceilings, measured_roofs
from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.measure.sweep import RESULTS_FILE
from gpuprobe.ncu.runner import check_counter_permission
from gpuprobe.specs.gpus import DetectedGPU, GPUSpec, detect_gpu, resolve_gpu

SWEEP_FILE = "sweep.json"
#: The sweep settings a resumed sweep must share with the one it continues.
_RESUME_KEYS = ("model", "context", "dtype", "attention", "mode", "layers")


# ---- GPU -------------------------------------------------------------------------------------------
def gpu_and_device(name: str | None = None) -> tuple[GPUSpec, DetectedGPU | None]:
    """The GPU a run is about (:func:`~gpuprobe.specs.gpus.resolve_gpu`: ``--gpu``, else this machine's GPU,
    else :data:`~gpuprobe.specs.gpus.DEFAULT_GPU`) and the GPU on this machine (None without one)."""
    detected = detect_gpu()
    return resolve_gpu(name, detected=detected), detected


# ---- mode ------------------------------------------------------------------------------------------
def ncu_status() -> tuple[bool, str]:
    """(usable, why): Nsight Compute found and allowed to read the GPU counters."""
    state, msg = check_counter_permission()
    first = msg.strip().splitlines()[0] if msg.strip() else state
    return state == "ok", first


def choose_measured_mode(requested: str, status: tuple[bool, str] | None = None) -> tuple[str, str]:
    """``ncu`` or ``timing`` from ``auto|ncu|timing`` and whether ncu can run; the reason for the banner.

    ``--mode ncu`` without a usable ncu raises :class:`NotAvailable` (one line, exit 2)."""
    if requested in ("timing", "nsys"):
        return requested, f"forced with --mode {requested}"
    ok, why = status if status is not None else ncu_status()
    if ok:
        return "ncu", why
    if requested == "ncu":
        raise NotAvailable(f"--mode ncu needs Nsight Compute with counter access: {why}")
    return "timing", why


def choose_mode(requested: str, has_gpu: bool, ncu: tuple[bool, str] | None = None) -> tuple[str, str]:
    """The mode to run (``analytic``, ``timing``, ``ncu`` or ``nsys``) and why (the banner's reason).

    Analytic when asked or without a GPU (``--mode timing|ncu`` there: :class:`NotAvailable`); else
    :func:`choose_measured_mode` (``ncu``: the counter-permission check, unless given)."""
    if requested == "analytic":
        return "analytic", "forced with --mode analytic"
    if not has_gpu:
        if requested in ("timing", "ncu", "nsys"):
            raise NotAvailable(f"--mode {requested} needs a CUDA GPU and this machine has none; "
                               "drop --mode (or use --mode analytic) for the analytic roofline.")
        return "analytic", "no GPU on this machine"
    return choose_measured_mode(requested, ncu)


def cached_roofs(gpu, dtype: str, use: bool = True) -> list:
    """Measured roofs of this GPU cached by ``gpuprobe ceilings`` (none when absent or not wanted)."""
    if not use:
        return []

    cached = cached_ceilings(gpu.display_name)
    return measured_roofs(cached, dtype) if cached else []


# ---- batches and points ----------------------------------------------------------------------------
def plan_batches(batches: Sequence[int], spec, gpu, context: int, dtype: str, *, explicit: bool,
                 memory_bytes: int | None = None) -> tuple[list[int], str | None]:
    """The default batch list is cut at the largest batch whose weights and KV cache fit
    (:func:`gpuprobe.analytic.max_batch_that_fits`), which is added as the last point; a list the
    user gave is kept (a point that does not fit is recorded as ``oom``)."""
    fits = max_batch_that_fits(spec, gpu, context, dtype, memory_bytes=memory_bytes)
    if explicit:
        return list(batches), None
    if fits < 1:
        raise UserError(f"{spec.name} at context {context} does not fit {gpu.display_name} even at batch 1; "
                        "lower --context or pick a smaller model.")
    kept = [b for b in batches if b <= fits]
    if len(kept) == len(batches):
        return kept, None
    if fits not in kept:
        kept.append(fits)
    return kept, (f"batches above {fits} do not fit {gpu.display_name} at context {context} "
                  f"(weights + KV cache in 90% of memory): sweeping {','.join(map(str, kept))}")


def make_points(model: str, batches: Iterable[int], *, context: int, dtype: str, attention: str | None,
                mode: str, layers: str, out_dir: str | Path, keep_reports: bool = True,
                ncu_timeout_s: float | None = None, graph_iters: int | None = None) -> list[dict[str, Any]]:
    """One JSON-able kwargs dict per batch size for the mode's worker: :func:`gpuprobe.measure.point.measure_point`
    (``keep_reports=False``: delete each .ncu-rep once read; a report of one layer is about 17 MB;
    ``ncu_timeout_s``, ``graph_iters``: the worker's defaults when None), or in ``nsys`` mode
    :func:`gpuprobe.measure.nsys_point.nsys_point` (whole graph-replayed steps: no layer filter)."""
    out = str(Path(out_dir).resolve())
    if mode == "nsys":
        return [{"model": model, "batch": int(b), "context": int(context), "dtype": dtype, "attention": attention,
                 "out_dir": out} for b in batches]
    extra: dict[str, Any] = {} if keep_reports else {"keep_report": False}
    if ncu_timeout_s is not None:
        extra["ncu_timeout_s"] = float(ncu_timeout_s)
    if graph_iters is not None:
        extra["graph_iters"] = int(graph_iters)
    return [{"model": model, "batch": int(b), "context": int(context), "dtype": dtype, "attention": attention,
             "mode": mode, "layers": layers, "out_dir": out, **extra} for b in batches]


# ---- resume ----------------------------------------------------------------------------------------
def sweep_config(model: str, *, context: int, dtype: str, attention: str | None, mode: str, layers: str,
                 batches: Sequence[int]) -> dict[str, Any]:
    """The settings of a sweep, written to ``sweep.json`` (what ``--resume`` checks against)."""
    return {"model": model, "context": context, "dtype": dtype, "attention": attention, "mode": mode,
            "layers": layers, "batches": list(batches)}


def check_resume(out: Path, config: dict[str, Any]) -> None:
    """A resumed sweep must have the settings of the one in ``out``; else one line saying which differ."""
    path = out / SWEEP_FILE
    if not out.is_dir() or not (path.exists() or (out / RESULTS_FILE).exists()):
        raise UserError(f"--resume {out}: no sweep there (no {SWEEP_FILE} or {RESULTS_FILE}); "
                        "pass the --out folder of an earlier `gpuprobe roofline` run.")
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"--resume {out}: {SWEEP_FILE} is not valid JSON; start a new sweep with --out.") from None
    diff = [f"{k} {old.get(k)!r} there, {config[k]!r} now" for k in _RESUME_KEYS if old.get(k) != config[k]]
    if diff:
        raise UserError(f"--resume {out}: the sweep there was made with other settings ({'; '.join(diff)}); "
                        "pass the same options, or a new --out.")
