"""CUDA kernels of one decode layer counted per op on a GPU, and the limit a fused layer is judged against.

One eager step of the engine runs under the torch profiler while its NVTX ranges (``decode/layer{i}/{op}``)
are also opened as profiler ranges (:class:`ProfilerRanges`, an NVTX backend). Every CUDA kernel the
profiler saw is counted for the innermost op range open when the CPU op that launched it started
(:func:`attribute`): an ``aten::addmm`` inside ``decode/layer1/qkv_proj`` counts its bias copy and its
GEMM for ``qkv_proj``; a Triton launch counts for the range around it. Memory copies and sets
(``Memcpy``, ``Memset``) are not kernels, as in :func:`gpuprobe.engine.kernel_count.step_kernel_names`.

The limit (:func:`fused_layer_limit`): a fused layer launches :data:`FUSED_LAYER_KERNELS` kernels, one per
op (docs/engine.md); cuBLAS adds a copy of the bias before the GEMM for ``F.linear`` with bias at M = 1
(its bias epilogue needs M > 1), one per projection with a bias, and may add one split-K reduce
(:data:`LIBRARY_REDUCES`); the Triton attention adds its own reduce where it splits the context. A
count of zero is never a pass: it means the profiler or the attribution saw nothing.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from gpuprobe.engine.nvtx import use_backend
from gpuprobe.ops import STEP_RANGE

#: Kernels of a fused Qwen2/Llama decode layer, one per op: input_norm (with the residual add), qkv_proj,
#: kv_write (with RoPE), attention, o_proj, post_attention_norm, gate_up_proj, act, down_proj.
FUSED_LAYER_KERNELS = 9
#: Library reduces a layer may add (a cuBLAS split-K GEMM's reduce kernel).
LIBRARY_REDUCES = 1
#: Prefix of the profiler ranges opened for the engine's NVTX ranges.
RANGE_PREFIX = "gpuprobe_nvtx:"
_NOT_KERNELS = ("memcpy", "memset")


class ProfilerRanges:
    """An NVTX backend (:mod:`gpuprobe.engine.nvtx`) that opens a torch profiler range named
    ``RANGE_PREFIX + path`` (``decode/layer1/qkv_proj``) for every range pushed."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self._open: list[Any] = []

    def push(self, name: str) -> None:
        from torch.autograd.profiler import record_function

        self.stack.append(name)
        rf = record_function(RANGE_PREFIX + "/".join(self.stack))
        rf.__enter__()
        self._open.append(rf)

    def pop(self) -> None:
        self._open.pop().__exit__(None, None, None)
        self.stack.pop()


def _is_kernel(name: str) -> bool:
    return not name.lower().startswith(_NOT_KERNELS)


def attribute(events: Iterable[Any], prefix: str = RANGE_PREFIX) -> dict[str, list[str]]:
    """Kernel names by the innermost op range open when their launching CPU op started.

    ``events``: the profiler's function events (``name``, ``time_range.start``/``.end`` and ``kernels``,
    the device kernels the profiler linked to that CPU op, each with a ``name``). Ranges are the events
    named ``prefix + path``; kernels launched outside every range go under ``""``."""
    events = list(events)
    ranges = sorted(((e.name[len(prefix):], e.time_range.start, e.time_range.end) for e in events
                     if e.name.startswith(prefix)), key=lambda r: r[1])
    out: dict[str, list[str]] = {}
    for e in events:
        names = [k.name for k in getattr(e, "kernels", None) or [] if _is_kernel(k.name)]
        if not names:
            continue
        t = e.time_range.start
        inside = [r for r in ranges if r[1] <= t <= r[2]]
        path = max(inside, key=lambda r: (r[0].count("/"), r[1]))[0] if inside else ""
        out.setdefault(path, []).extend(names)
    return out


def per_op_of_layer(by_path: dict[str, list[str]], layer: int) -> tuple[dict[str, int], dict[str, list[str]]]:
    """(kernels per op, kernel names per op) of ``decode/layer{layer}/``; kernels inside the layer but
    outside its op ranges count under ``(layer)``."""
    base = f"{STEP_RANGE}/layer{layer}"
    names: dict[str, list[str]] = {}
    for path, kernels in by_path.items():
        if path == base:
            names.setdefault("(layer)", []).extend(kernels)
        elif path.startswith(base + "/"):
            op = path[len(base) + 1:].split("/")[0]
            names.setdefault(op, []).extend(kernels)
    return {op: len(k) for op, k in names.items()}, names


def count_layer_kernels(model: str, kernels: str, *, batch: int = 1, context: int = 1024, dtype: str = "bf16",
                        attention: str | None = None, layers: int = 2) -> dict[str, Any]:
    """One eager step of a ``layers``-layer ``model`` on the GPU under the torch profiler; the last layer's
    kernels per op (``per_op``, ``names``), their sum (``per_layer``), the step's kernels and the engine's
    attention backend and kernel mode."""
    import gc

    import torch
    from torch.profiler import ProfilerActivity, profile

    from gpuprobe.engine import Engine

    eng = Engine.from_pretrained(model, dtype=dtype, device="cuda", attention=attention, kernels=kernels,
                                 layers=layers)
    b = eng.prepare(batch, context)
    try:
        eng.step(b)  # warm: Triton compiles, cuBLAS picks its kernels
        torch.cuda.synchronize()
        backend = ProfilerRanges()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, use_backend(backend):
            eng.step(b, nvtx=True)
            torch.cuda.synchronize()
        events = list(prof.events())
        by_path = attribute(events)
        per_op, names = per_op_of_layer(by_path, layers - 1)
        step = sum(len(k) for k in by_path.values())
        device_kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                             and _is_kernel(e.name))
        return {"per_layer": sum(per_op.values()), "per_op": per_op, "names": {op: dict(Counter(k))
                                                                               for op, k in names.items()},
                "step_kernels": step, "device_kernels_seen": device_kernels, "attention": eng.attention,
                "kernels": eng.kernels, "layer": layers - 1}
    finally:
        del eng, b
        gc.collect()
        torch.cuda.empty_cache()


def fused_layer_limit(bias_projections: int, attention_reduce: bool) -> int:
    """Kernels a fused layer may launch: one per op, a bias copy per projection with a bias, one library
    reduce, and the attention's own reduce where it splits the context."""
    return FUSED_LAYER_KERNELS + bias_projections + LIBRARY_REDUCES + int(attention_reduce)


def judge_layer_count(per_op: dict[str, int], limit: int, names: dict[str, dict[str, int]] | None = None) -> list[str]:
    """What is wrong with a fused layer's count: none seen (no evidence), or more than ``limit``."""
    total = sum(per_op.values())
    if total == 0:
        return ["the profiler attributed no kernel to the layer's ops: a count of zero is no evidence (the "
                "profiler saw no CUDA kernel, or the op ranges were not opened)"]
    if total > limit:
        extra = {op: n for op, n in per_op.items() if n > 1 or op == "(layer)"}
        detail = "; ".join(f"{op} {n}: {(names or {}).get(op, '')}" for op, n in extra.items())
        return [f"a fused decode layer launches {total} kernels (limit {limit}); ops with more than one: {detail}"]
    return []
