"""Decode throughput per batch size: one sweep point (:func:`measure_throughput_point`) and its result rows (files and
figure: :mod:`gpuprobe.render.throughput`).

A point builds an engine (random weights), prepares B sequences at context C with a random KV fill,
and times ``steps`` decode steps after ``warmup``: replays of one captured CUDA graph (``graphs=True``)
or eager steps. Every step runs at the same context (the step writes the new token's K/V at slot C
each time), so the figure is the cost of one step at exactly (B, C). Times come from CUDA events
around each step; tokens/s is ``B / p50``. ``compile=True`` measures the ``torch.compile``-fused step
(``Engine(compile=True)``; compiled before capture, ``compile_s`` in the row). ``kernel_mode`` picks
the engine's ``kernels`` (``fused`` | ``unfused``); the row's ``kernels`` column says which ran.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gpuprobe.ceilings.bandwidth import copy_bandwidth_and_source as copy_bandwidth  # noqa: F401  (callers' name)
from gpuprobe.measure.sweep import run_sweep
from gpuprobe.measure.timing import StepStats, time_steps
from gpuprobe.specs.gpus import normalize_dtype

#: Result columns, in order (other stages read these names).
COLUMNS = ("batch", "tokens_per_s", "step_latency_s", "step_latency_p90_s", "weights_bytes", "kv_cache_bytes",
           "peak_memory_bytes", "status", "reason", "mode", "attention", "context", "model", "dtype")
EXTRA_COLUMNS = ("step_latency_mean_s", "steps", "device", "page_size", "compiled", "compile_s", "kernels")


def measure_throughput_point(model: str, batch: int, context: int, attention: str | None = None, dtype: str = "bf16",
                             steps: int = 64, warmup: int = 8, graphs: bool = True, seed: int = 0,
                             device: str | None = None, page_size: int = 16, compile: bool = False,
                             kernels: bool = False, compare_eager: bool = False,
                             kernel_mode: str | None = None) -> dict[str, Any]:
    """Tokens/s, step latency and memory of decode at (batch, context): the sweep's worker.

    ``compile``: time the ``torch.compile``-fused step (compiled once before timing or capture;
    ``compile_s`` is that first call: compilation plus one step). ``kernel_mode``: the engine's
    ``kernels`` (``fused`` | ``unfused``; None: its default), recorded in the ``kernels`` column.
    ``kernels``: also count the CUDA kernels of the measured step (``kernels_per_step``; None with
    ``kernels_per_step_error`` when the profiler cannot run). ``compare_eager``: the measured step's
    logits (the graph's, when replayed)
    against the plain eager step's on the same state: ``eager_max_abs_diff``, ``eager_rel_diff``
    (over the largest eager logit), ``eager_argmax_equal``.
    """
    import torch

    from gpuprobe.engine import Engine

    engine = Engine.from_pretrained(model, dtype=dtype, device=device, attention=attention, seed=seed,
                                    page_size=page_size, compile=compile, kernels=kernel_mode)
    cuda = engine.device.type == "cuda"
    if graphs and not cuda:
        graphs = False  # no CUDA graphs on a CPU: eager, and the row says so
    b = engine.prepare(batch, context, fill="random", seed=seed)
    compile_s = engine.warm_compiled(b)  # None without compile
    if graphs:
        graph = engine.capture(b)
        run = graph.replay
    else:
        def run():
            return engine.fast_step(b)
    stats = StepStats.of(time_steps(run, steps, warmup, cuda))
    p50 = stats.p50_s
    mem = engine.memory(b)
    row = {
        "batch": batch, "tokens_per_s": batch / p50, "step_latency_s": p50,
        "step_latency_p90_s": stats.p90_s, "weights_bytes": mem.weights_bytes,
        "kv_cache_bytes": mem.kv_cache_bytes, "peak_memory_bytes": mem.peak_memory_bytes,
        "status": "ok", "reason": None, "mode": "graph" if graphs else "eager", "attention": engine.attention,
        "context": context, "model": model, "dtype": normalize_dtype(engine.dtype),
        "step_latency_mean_s": stats.mean_s, "steps": steps,
        "device": torch.cuda.get_device_name(engine.device) if cuda else engine.device.type,
        "page_size": page_size, "compiled": bool(compile), "compile_s": compile_s, "kernels": engine.kernels,
    }
    if compare_eager:  # the step is repeatable: the same state gives the same logits
        got = run().clone()
        want = engine.step(b)
        diff, scale = (got.float() - want.float()).abs().max().item(), want.float().abs().max().item()
        row.update(eager_max_abs_diff=diff, eager_rel_diff=diff / scale if scale else diff,
                   eager_argmax_equal=bool(torch.equal(got.argmax(-1), want.argmax(-1))))
    if kernels:
        try:
            row["kernels_per_step"] = kernels_per_step(engine, b, fused=True)
        except Exception as e:  # noqa: BLE001 - context for a figure, never the reason a point fails
            row["kernels_per_step"], row["kernels_per_step_error"] = None, f"{type(e).__name__}: {e}"[:200]
    return row


def kernels_per_step(engine, batch, fused: bool = False) -> int:
    """CUDA kernels one decode step launches (torch.profiler; memcpy/memset not counted): the eager
    step, or with ``fused`` the step graphs capture (:meth:`Engine.fast_step`, compiled when the
    engine compiles), launched without a graph so that each kernel is seen."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    run = engine.fast_step if fused else engine.step
    run(batch)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(batch)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.lower().startswith(("memcpy", "memset")))


def weight_read_floor_s(weights_bytes: int, copy_bytes_per_s: float) -> float:
    """Time to read every weight once at the measured copy bandwidth: the floor of a decode step."""
    return weights_bytes / copy_bytes_per_s


# ---- a sweep ----------------------------------------------------------------------------------------
WORKER = "gpuprobe.measure.throughput:measure_throughput_point"


def sweep_throughput(model: str, batches: list[int], context: int, out: str | Path, *, dtype: str = "bf16",
                     attention: str | None = None, steps: int = 64, warmup: int = 8, graphs: bool = True,
                     compile: bool = False, seed: int = 0, device: str = "cuda", page_size: int = 16,
                     resume: bool = False, timeout_s: float = 900.0, isolate: bool = True,
                     name: str | None = None, kernel_mode: str | None = None) -> list[dict[str, Any]]:
    """Throughput of ``batches`` (one child process per batch, :func:`gpuprobe.measure.sweep.run_sweep`
    into ``out``); the rows of these points (:func:`rows_from_records`), failed batches included.
    ``attention`` None: the engine's default backend on ``device``; ``kernel_mode`` None: the engine's
    default kernels (docs/engine.md)."""
    if attention is None:
        import torch

        from gpuprobe.engine.attention import default_attention

        attention = default_attention(torch.device(device))
    graphs = graphs and device == "cuda"
    points = [dict(model=str(model), batch=b, context=context, attention=attention, dtype=dtype, steps=steps,
                   warmup=warmup, graphs=graphs, seed=seed, device=device, page_size=page_size, compile=compile,
                   kernel_mode=kernel_mode) for b in batches]
    records = run_sweep(points, WORKER, out, resume=resume, timeout_s=timeout_s,
                        label=lambda p: f"{name or model} batch {p['batch']}", isolate=isolate)

    def key(p: dict) -> tuple:
        return p.get("batch"), p.get("graphs"), bool(p.get("compile", False)), p.get("kernel_mode")

    keys = {key(p) for p in points}
    return rows_from_records([r for r in records if key(r["point"]) in keys])


# ---- rows ----------------------------------------------------------------------------
def rows_from_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per sweep record (``results.jsonl``): the worker's result, or the point with its failure."""
    rows = []
    for rec in records:
        p = rec["point"]
        if rec["status"] == "ok" and rec.get("result"):
            row = dict(rec["result"])
        else:
            row = {c: None for c in COLUMNS + EXTRA_COLUMNS}
            row.update(batch=p.get("batch"), context=p.get("context"), model=p.get("model"),
                       dtype=p.get("dtype"), attention=p.get("attention"), steps=p.get("steps"),
                       mode="graph" if p.get("graphs", True) else "eager", page_size=p.get("page_size"),
                       compiled=bool(p.get("compile", False)), kernels=p.get("kernel_mode"))
            row.update(status=rec["status"], reason=rec.get("reason"))
        row.setdefault("compiled", bool(p.get("compile", False)))  # rows of workers before the column
        rows.append({c: row.get(c) for c in COLUMNS + EXTRA_COLUMNS})
    rows.sort(key=lambda r: (r["mode"] or "", bool(r["compiled"]), str(r.get("kernels")), r["batch"] or 0))
    return rows
