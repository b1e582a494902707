"""One point of a measured roofline sweep (one batch size), run in its own child process.

:func:`measure_point` is the sweep worker (``gpuprobe.measure.point:measure_point``). In order:

1. an NVML reading (clocks, temperature, power, throttle reasons) before anything runs;
2. ``ncu`` mode: Nsight Compute profiles one eager decode step of :mod:`gpuprobe.measure.target`
   (a separate process, started before this one touches the GPU, so the two never hold a KV cache
   at the same time), filtered to one representative layer plus ``lm_head`` (or every layer); the
   report is reduced to per-op step totals by :func:`summarize_report`;
3. both modes: the engine is built here, the KV cache filled with random values, a few steps run
   to warm up, then per-op CUDA-event times of an eager step (median of a few) and the time of a
   CUDA-graph replay of the same step (tokens/s);
4. a second NVML reading, and NVML samples over step 3: a point measured while the GPU throttled
   is flagged.

A node that refuses the GPU counters (``ERR_NVGPUCTRPERM``: a cluster grants them on some nodes only;
``LibraryNotLoaded`` in a gVisor sandbox) does
not cost the point: it is measured in timing mode, and its record says so (``mode: "timing"`` and
``fallback: {requested_mode, mode, node, kernel, reason}``).

The returned dict (JSON-able) is the ``result`` of the point's record in ``results.jsonl``; it holds
raw figures only (bytes, seconds, counter FLOPs, ncu's percentages): ``% of measured bandwidth``,
``limiter`` and the analytic side are computed when the sweep is assembled
(:func:`gpuprobe.roofline.assemble.assemble_result`), so a record never goes stale.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gpuprobe.jsonsafe import json_value
from gpuprobe.system.telemetry import BENIGN_REASONS
from gpuprobe.measure.timing import time_steps
from gpuprobe.ncu import load_ncu_report
from gpuprobe.ncu.runner import REFUSAL_MARKERS, CounterPermissionError, NcuError, NoKernelsProfiled, run_ncu
from gpuprobe.ops import STEP_RANGE, nvtx_path
from gpuprobe.specs.models import load_model_spec

#: Whole-step ops profiled besides the representative layer (ncu mode, ``layers="one"``).
STEP_OPS_PROFILED: tuple[str, ...] = ("lm_head",)

RECORD_VERSION = 1


def representative_layer(num_layers: int) -> int:
    """The layer profiled when one stands for all: the middle one (every layer has the same shapes;
    ncu flushes caches before each kernel, so its neighbours do not colour its DRAM bytes)."""
    return num_layers // 2


def nvtx_includes(layers: str, num_layers: int) -> list[str]:
    """The ``--nvtx-include`` expressions of a point: one layer plus the profiled step ops, or all."""
    if layers == "all":
        return [f"{STEP_RANGE}/"]
    k = representative_layer(num_layers)
    return [f"{STEP_RANGE}/layer{k}/"] + [nvtx_path(op) for op in STEP_OPS_PROFILED]


def summarize_report(df, num_layers: int) -> dict[str, Any]:
    """A loaded report (:func:`gpuprobe.ncu.load_ncu_report`) -> per-op whole-step totals, per-kernel rows,
    the report's own peaks and clocks.

    Per-layer ops are multiplied by ``num_layers / layers profiled`` (``scaled``); whole-step ops are
    not. Percentages are ncu's, time-weighted over an op's kernels.
    """
    from gpuprobe.ncu.counter_roofline import kernel_table, op_table

    kernels = kernel_table(df)
    ops = op_table(kernels, None, scale_to_layers=num_layers)
    keep = ("op", "n_kernels", "layers_profiled", "scaled", "time_s", "flops", "flops_tensor", "flops_fp32",
            "dram_read_bytes", "dram_write_bytes", "dram_bytes", "dram_pct_of_ncu_peak", "sm_pct", "tensor_pct")
    op_rows = [{k: json_value(r[k]) for k in keep} for r in ops.to_dict("records")]
    kcols = ("op", "layer", "kernel_short", "time_s", "flops", "flops_tensor", "flops_fp32", "dram_read_bytes",
             "dram_write_bytes", "dram_pct_of_ncu_peak", "sm_pct", "tensor_pct")
    kernel_rows = [{k: json_value(r[k]) for k in kcols} for r in kernels.to_dict("records")]

    def med(col: str) -> float | None:
        if col not in df.columns:
            return None
        import pandas as pd

        s = pd.to_numeric(df[col], errors="coerce").dropna()
        return json_value(float(s.median())) if len(s) else None

    return {
        "ops": op_rows,
        "kernels": kernel_rows,
        "peaks": {k: json_value(v) for k, v in (df.attrs.get("peaks") or {}).items()},
        "clocks": {"sm_hz_median": med("sm_hz"), "dram_hz_median": med("dram_hz")},
        "device_name": df.attrs.get("device_name"),
        "missing_metrics": list(df.attrs.get("missing", [])),
    }


# ---- NVML ------------------------------------------------------------------------------------------
def _telemetry():
    try:
        from gpuprobe.system.telemetry import Telemetry

        return Telemetry()
    except Exception as e:  # telemetry is optional: a point without it is still a point
        return _NoTelemetry(f"telemetry unavailable: {e}")


class _NoTelemetry:
    available = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def snapshot(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}


def throttle_verdict(before: dict[str, Any], after: dict[str, Any], window: dict[str, Any] | None) -> dict[str, Any]:
    """Whether any reading of the point saw the clocks held down (reasons other than idle/app clocks)."""
    reasons: list[str] = []
    throttled = False
    for snap in (before, after, window or {}):
        if snap.get("throttled"):
            throttled = True
        for r in snap.get("throttle_reasons") or []:
            if r not in reasons:
                reasons.append(r)

    return {"throttled": throttled, "reasons": [r for r in reasons if r not in BENIGN_REASONS],
            "all_reasons": reasons}


# ---- ncu -------------------------------------------------------------------------------------------
def target_command(model: str, batch: int, context: int, dtype: str, attention: str | None, layers: str,
                   warmup: int) -> list[str]:
    """The profiled program: ``python -m gpuprobe.measure.target ...``."""
    cmd = [sys.executable, "-m", "gpuprobe.measure.target", "--model", model, "--batch", str(batch),
           "--context", str(context), "--dtype", dtype, "--layers", layers, "--warmup", str(warmup)]
    if attention:
        cmd += ["--attention", attention]
    return cmd


def profile_point(model: str, num_layers: int, batch: int, context: int, dtype: str, attention: str | None,
                  layers: str, out_dir: str | Path, warmup: int = 3, timeout_s: float | None = 480,
                  keep_report: bool = True) -> dict[str, Any]:
    """Run the target under ncu (metric set ``roofline``) and summarize the report."""
    includes = nvtx_includes(layers, num_layers)
    rep = Path(out_dir) / "ncu" / f"b{batch}_c{context}.ncu-rep"
    try:
        # diagnose=False: ncu's look at the first 200 kernels would see only the warm-up steps, which
        # push no ranges, and would cost a second run of the target
        res = run_ncu(target_command(model, batch, context, dtype, attention, layers, warmup), rep,
                      metric_set="roofline", nvtx_include=includes, timeout_s=timeout_s, diagnose=False)
    except NoKernelsProfiled as e:
        raise NoKernelsProfiled(f"{e}; gpuprobe.measure.target pushes decode/ > layer{{i}}/ > {{op}}/ with NVTX "
                                "around one eager step after its warm-up (torch.cuda.nvtx or the nvtx package "
                                "must reach ncu; ranges pushed inside a CUDA graph capture are lost)") from None
    df = load_ncu_report(res.report)
    out = summarize_report(df, num_layers)
    o = res.options
    out["ncu"] = {
        "version": res.ncu.version, "path": str(res.ncu.path), "seconds": round(res.seconds, 3),
        "command": res.command, "report": str(res.report) if keep_report else None,
        "metric_set": o.metric_set, "nvtx_include": list(o.nvtx_include), "replay_mode": o.replay_mode,
        "clock_control": o.clock_control, "cache_control": o.cache_control,
        "reader": df.attrs.get("reader"),
        "layers_profiled": "all" if layers == "all" else [representative_layer(num_layers)],
        "step_ops_profiled": list(STEP_OPS_PROFILED) if layers != "all" else "all",
    }
    if not keep_report:
        Path(res.report).unlink(missing_ok=True)
    return out


# ---- engine timing ---------------------------------------------------------------------------------
def build_batch(model: str, batch: int, context: int, dtype: str, attention: str | None):
    """An engine with random weights and a batch whose next step attends ``context`` tokens (the
    analytic model's C, the new token included): ``context - 1`` cached tokens of random K/V."""
    from gpuprobe.engine.engine import Engine

    eng = Engine.from_pretrained(model, dtype=dtype, attention=attention, weights="random")
    return eng, eng.prepare(batch, context - 1, fill="random")


def point_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a program a profiler runs for one point: the model and the point (batch, context,
    dtype, attention backend); the program adds its own steps. ``doc``'s first line describes it."""
    p = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--context", type=int, required=True)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--attention", default=None)
    return p


def warmed_batch(a: argparse.Namespace):
    """:func:`build_batch` for the point ``a`` names, after ``a.warmup`` (at least one) unannotated steps."""
    eng, b = build_batch(a.model, a.batch, a.context, a.dtype, a.attention)
    for _ in range(max(a.warmup, 1)):
        eng.step(b)
    return eng, b


def say_point(verb: str, a: argparse.Namespace, eng, detail: str) -> None:
    """Print the one line a point program ends with (``verb``: what it did; ``detail``: its own steps)."""
    print(f"{verb}: batch {a.batch}, context {a.context}, attention {eng.attention}, {detail}", flush=True)


def time_engine(eng, b, *, repeats: int = 3, graph_iters: int = 50, warmup: int = 3) -> dict[str, Any]:
    """Per-op eager times (CUDA events, median of ``repeats``), eager step time, CUDA-graph replay time
    (:func:`gpuprobe.measure.timing.time_steps`, mean)."""
    batch = b.size
    cuda = eng.device.type == "cuda"
    runs = [eng.time_step(b, warmup=warmup if i == 0 else 1) for i in range(repeats)]
    ops = sorted({op for r in runs for op in r.per_op})
    per_op = {op: statistics.median(r.per_op.get(op, 0.0) for r in runs) for op in ops}
    op_step_s = statistics.median(r.step_s for r in runs)

    n_eager = 10
    eager_s = statistics.fmean(time_steps(lambda: eng.step(b), n_eager, 0, cuda))

    graph: dict[str, Any] | None = None
    if cuda:
        g = eng.capture(b)
        step = statistics.fmean(time_steps(g.replay, graph_iters, 3, cuda))
        graph = {"step_s": step, "tokens_per_s": batch / step, "replays": graph_iters}
        del g
    mem = eng.memory(b).to_dict()
    return {
        "timing": {"per_op_s": per_op, "step_s": op_step_s, "repeats": repeats,
                   "method": ("CUDA events around each op of one eager step, the GPU queued behind a sleep "
                              "kernel so launch gaps do not show; median of repeats") if cuda else
                             "perf_counter around each op of one eager step on the CPU; median of repeats"},
        "eager": {"step_s": eager_s, "tokens_per_s": batch / eager_s, "steps": n_eager},
        "graph": graph,
        "memory": mem,
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            out["device_name"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        from gpuprobe.system.telemetry import load_nvml

        nv = load_nvml()
        drv = nv.nvmlSystemGetDriverVersion()
        out["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
    except Exception:
        out["driver"] = None
    return out


# ---- the worker ------------------------------------------------------------------------------------
def counters_refused(error: Exception) -> bool:
    """Whether an ncu failure is the node refusing the GPU counters (the point can still be timed)."""
    return isinstance(error, CounterPermissionError) or any(m in str(error) for m in REFUSAL_MARKERS)


def counter_fallback(why: str) -> dict[str, Any]:
    """What a point records when its node refuses GPU counters: it was asked for ``ncu``, measured in
    ``timing`` mode instead (CUDA-event times, analytic bytes and FLOPs), and why; the node is named, since
    on a cluster counter access differs from node to node."""
    import platform

    return {"requested_mode": "ncu", "mode": "timing", "node": platform.node(), "kernel": platform.release(),
            "reason": " ".join(why.split())}


def measure_point(*, model: str, batch: int, context: int, dtype: str = "bf16", attention: str | None = None,
                  mode: str = "ncu", layers: str = "one", out_dir: str = ".", warmup: int = 3,
                  graph_iters: int = 50, ncu_timeout_s: float | None = 480, keep_report: bool = True) -> dict[str, Any]:
    """Measure one batch size; see the module docstring. Raises on any failure (the sweep records it)."""
    if mode not in ("ncu", "timing"):
        raise ValueError(f"mode must be 'ncu' or 'timing', got {mode!r}")
    spec = load_model_spec(model)
    phases: dict[str, float] = {}
    tel = _telemetry()
    before = tel.snapshot()
    rec: dict[str, Any] = {"record_version": RECORD_VERSION, "mode": mode, "model": spec.name, "batch": batch,
                           "context": context, "dtype": dtype, "num_layers": spec.num_layers, "layers": layers}
    if mode == "ncu":
        t0 = time.perf_counter()
        try:
            rec["ncu"] = profile_point(model, spec.num_layers, batch, context, dtype, attention, layers, out_dir,
                                       warmup=warmup, timeout_s=ncu_timeout_s, keep_report=keep_report)
        except NcuError as e:
            if not counters_refused(e):
                raise
            rec["mode"] = "timing"
            rec["fallback"] = counter_fallback(str(e))
        phases["ncu_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eng, b = build_batch(model, batch, context, dtype, attention)
    rec["attention"] = eng.attention
    phases["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    window = None
    if getattr(tel, "available", False):
        tel.start()
    rec.update(time_engine(eng, b, graph_iters=graph_iters, warmup=warmup))
    if getattr(tel, "available", False):
        window = tel.stop().to_dict()
    phases["timing_s"] = time.perf_counter() - t0
    after = tel.snapshot()
    rec["telemetry"] = {"before": before, "after": after, "window": window,
                        **throttle_verdict(before, after, window)}
    rec["versions"] = versions()
    rec["phases"] = phases
    if hasattr(tel, "close"):
        tel.close()
    return rec
