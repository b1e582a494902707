"""Decode throughput per batch size: one sweep point (:func:`measure_point`), result rows, files, plot.

A point builds an engine (random weights), prepares B sequences at context C with a random KV fill,
and times ``steps`` decode steps after ``warmup``: replays of one captured CUDA graph (``graphs=True``)
or eager steps. Every step runs at the same context (the step writes the new token's K/V at slot C
each time), so the figure is the cost of one step at exactly (B, C). Times come from CUDA events
around each step; tokens/s is ``B / p50``. ``compile=True`` measures the ``torch.compile``-fused step
(``Engine(compile=True)``; compiled before capture, ``compile_s`` in the row). ``kernel_mode`` picks
the engine's ``kernels`` (``fused`` | ``unfused``); the row's ``kernels`` column says which ran.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

#: Result columns, in order (other stages read these names).
COLUMNS = ("batch", "tokens_per_s", "step_latency_s", "step_latency_p90_s", "weights_bytes", "kv_cache_bytes",
           "peak_memory_bytes", "status", "reason", "mode", "attention", "context", "model", "dtype")
EXTRA_COLUMNS = ("step_latency_mean_s", "steps", "device", "page_size", "compiled", "compile_s", "kernels")


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_steps(run, steps: int, warmup: int, cuda: bool) -> list[float]:
    """Seconds of each of ``steps`` calls of ``run`` after ``warmup`` (CUDA events per step on a GPU)."""
    import torch

    for _ in range(warmup):
        run()
    if not cuda:
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            run()
            out.append(time.perf_counter() - t0)
        return out
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for a, b in events:
        a.record()
        run()
        b.record()
    torch.cuda.synchronize()
    return [a.elapsed_time(b) / 1e3 for a, b in events]


def measure_point(model: str, batch: int, context: int, attention: str | None = None, dtype: str = "bf16",
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
    from gpuprobe.specs.gpus import normalize_dtype

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
    times = time_steps(run, steps, warmup, cuda)
    p50 = statistics.median(times)
    mem = engine.memory(b)
    row = {
        "batch": batch, "tokens_per_s": batch / p50, "step_latency_s": p50,
        "step_latency_p90_s": _percentile(times, 0.9), "weights_bytes": mem.weights_bytes,
        "kv_cache_bytes": mem.kv_cache_bytes, "peak_memory_bytes": mem.peak_memory_bytes,
        "status": "ok", "reason": None, "mode": "graph" if graphs else "eager", "attention": engine.attention,
        "context": context, "model": model, "dtype": normalize_dtype(engine.dtype),
        "step_latency_mean_s": statistics.fmean(times), "steps": steps,
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


def copy_bandwidth() -> tuple[float, str]:
    """``(bytes/s, source)``: ``gpuprobe.ceilings.copy_bandwidth()`` (the project's one figure), or, when
    that is unavailable, a 1 GiB device-to-device copy timed here (bytes read + written)."""
    try:
        from gpuprobe.ceilings import copy_bandwidth as measured

        return float(measured()), "gpuprobe.ceilings.copy_bandwidth"
    except Exception:  # not built or no figure yet: measure a plain copy
        pass
    import torch

    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(10):
        dst.copy_(src)
    b.record()
    b.synchronize()
    del src, dst
    return 2 * n / (a.elapsed_time(b) / 1e3 / 10), "torch device-to-device copy, 1 GiB, read + written"


# ---- rows, files, plot ----------------------------------------------------------------------------
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
    rows.sort(key=lambda r: (series(r), r["batch"] or 0))
    return rows


def series(row: dict[str, Any]) -> str:
    """A row's line in tables and plots: ``graph``, ``eager``, ``graph+compile``, ``eager+compile``, and
    ``+unfused`` for steps run with the PyTorch elementwise ops outside ``--compile``."""
    unfused = row.get("kernels") == "unfused" and not row.get("compiled")
    return f"{row.get('mode') or ''}{'+compile' if row.get('compiled') else ''}{'+unfused' if unfused else ''}"


def write_results(rows: list[dict[str, Any]], out_dir: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """``throughput.csv``, ``throughput.json`` and ``throughput.png`` in ``out_dir``."""
    import pandas as pd

    out = Path(out_dir)
    df = pd.DataFrame(rows, columns=list(COLUMNS + EXTRA_COLUMNS))
    paths = {"csv": out / "throughput.csv", "json": out / "throughput.json", "png": out / "throughput.png"}
    df.to_csv(paths["csv"], index=False)
    paths["json"].write_text(json.dumps({"meta": meta or {}, "rows": rows}, indent=2, default=str))
    plot_throughput(rows, paths["png"])
    return paths


def plot_throughput(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Tokens/s against batch (log-log), one line per :func:`series`; out-of-memory batches marked on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for line in sorted({series(r) for r in rows if r["mode"]}):
        ok = [r for r in rows if series(r) == line and r["status"] == "ok"]
        if ok:
            ax.plot([r["batch"] for r in ok], [r["tokens_per_s"] for r in ok], marker="o", label=line)
        bad = [r for r in rows if series(r) == line and r["status"] != "ok"]
        for r in bad:
            ax.axvline(r["batch"], color="tab:red", alpha=0.3, ls="--")
            ax.annotate(r["status"], (r["batch"], 0.02), xycoords=("data", "axes fraction"), color="tab:red",
                        fontsize=8, rotation=90)
    first = rows[0] if rows else {}
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("tokens / s")
    ax.set_title(f"{first.get('model')}  context {first.get('context')}  {first.get('dtype')}  "
                 f"attention {first.get('attention')}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
