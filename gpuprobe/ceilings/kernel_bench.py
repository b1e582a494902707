"""The project's Triton kernels measured against their baselines and the measured copy bandwidth.

Used by ``gpuprobe attention-bench``, ``benchmarks/attention.py``, ``benchmarks/gemm.py`` and the
``kernels`` selftest checks, so every figure is computed one way:

* time: median of ``triton.testing.do_bench`` (:func:`gpuprobe.kernels.common.time_s`: CUDA events; the
  L2 cache is flushed before every repetition, so each run reads its KV from DRAM as in a decode step).
* bytes: the minimum DRAM traffic, each byte once: attention's from :func:`gpuprobe.analytic.attention_bytes`
  (K and V of every context token of every KV head, q read, out written); the GEMM reads x and W and
  writes y (:func:`gpuprobe.kernels.gemm.gemm_bytes`); the fused kernels' from their own modules.
* % of copy bandwidth: bytes / time over the project's one measured copy bandwidth
  (:func:`gpuprobe.ceilings.bandwidth.copy_bandwidth_and_source`: the cached ``gpuprobe ceilings``
  figure, else a quick torch device-to-device copy; read + written bytes).
* baselines: ``torch.nn.functional.scaled_dot_product_attention(enable_gqa=True)`` on a dense cache
  ``[B, Hkv, C, D]`` of the same shape (cuDNN / flash on a GPU), the paged reference
  (gather then SDPA, :mod:`gpuprobe.kernels.reference`), and ``torch.matmul`` (cuBLAS) for the GEMM.

``dtype`` arguments are normalised names (``bf16`` | ``fp16`` | ``fp32``). The pure parts (byte counts,
targets, knob parsing) run anywhere; timing needs CUDA. torch, Triton and the kernels load inside the
functions that time (``import gpuprobe.ceilings`` stays light).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from gpuprobe.analytic import attention_bytes, dtype_bytes
from gpuprobe.ceilings.bandwidth import copy_bandwidth_and_source as copy_bandwidth
from gpuprobe.errors import NotAvailable
from gpuprobe.ops import gemm_shapes
from gpuprobe.specs.models import load_model_spec

#: Targets of the issue (H100, bf16, Qwen2-0.5B heads, page 16).
TARGET_LARGE_BATCH_PCT = 90.0  # B=256, C=2048: % of copy bandwidth, at least
TARGET_LARGE_BATCH_SDPA_RATIO = 1.05  # ... and time / dense-SDPA time, at most
TARGET_SPLITK_PCT = 70.0  # B=8, C=32768: split-K % of copy bandwidth, at least
TARGET_GEMM_CUBLAS_RATIO = 1.2  # M <= 64: time / cuBLAS time, at most


@dataclass(frozen=True)
class HeadShape:
    """The attention shape of one model layer."""

    num_q_heads: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def of_model(cls, name: str) -> "HeadShape":
        spec = load_model_spec(name)
        return cls(spec.num_heads, spec.num_kv_heads, spec.head_dim)


def attention_call_bytes(batch: int, context: int, shape: HeadShape, elt_bytes: int = 2) -> int:
    """Minimum DRAM bytes of one decode-attention call of ``shape`` (:func:`gpuprobe.analytic.attention_bytes`)."""
    return attention_bytes(batch, context, num_heads=shape.num_q_heads, num_kv_heads=shape.num_kv_heads,
                           head_dim=shape.head_dim, elt_bytes=elt_bytes).total


def pct(bytes_moved: float, seconds: float, bandwidth: float) -> float:
    """Achieved bandwidth as a percentage of ``bandwidth`` (bytes/s)."""
    if seconds <= 0 or bandwidth <= 0:
        raise ValueError("seconds and bandwidth must be positive")
    return 100.0 * bytes_moved / seconds / bandwidth


def attention_target(batch: int, context: int, row: dict[str, Any]) -> str:
    """'met' / 'missed (...)' / '' for a result row of the Qwen2-0.5B shape at the issue's two points."""
    if (batch, context) == (256, 2048):
        misses = []
        if row["pct_copy_bw"] < TARGET_LARGE_BATCH_PCT:
            misses.append(f"{row['pct_copy_bw']:.0f}% < {TARGET_LARGE_BATCH_PCT:.0f}% bw")
        ratio = row.get("ratio_vs_sdpa_dense")
        if ratio is not None and ratio > TARGET_LARGE_BATCH_SDPA_RATIO:
            misses.append(f"{ratio:.2f}x SDPA > {TARGET_LARGE_BATCH_SDPA_RATIO}")
        return "met" if not misses else "missed: " + ", ".join(misses)
    if (batch, context) == (8, 32768) and row.get("num_splits", 1) > 1:
        p = row["pct_copy_bw"]
        return "met" if p >= TARGET_SPLITK_PCT else f"missed: {p:.0f}% < {TARGET_SPLITK_PCT:.0f}% bw"
    return ""


def gemm_target(m: int, row: dict[str, Any]) -> str:
    if m > 64 or row.get("ratio_vs_cublas") is None:
        return ""
    r = row["ratio_vs_cublas"]
    return "met" if r <= TARGET_GEMM_CUBLAS_RATIO else f"missed: {r:.2f}x > {TARGET_GEMM_CUBLAS_RATIO}x cuBLAS"


# --------------------------------------------------------------------------------------------------
# Knob grids
# --------------------------------------------------------------------------------------------------
ATTENTION_KNOB_NAMES = ("block_kv", "num_warps", "num_stages", "num_splits")
GEMM_KNOB_NAMES = ("block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages")


def parse_knobs(text: str | None, allowed: tuple[str, ...]) -> list[dict[str, int | None]]:
    """'block_kv=32,64 num_warps=4,8' -> the product as a list of dicts; 'auto' -> None (heuristic).

    An empty or missing text gives ``[{}]`` (every knob at its default). Raises ValueError with a
    message naming the bad part.
    """
    if not text or not text.strip():
        return [{}]
    axes: dict[str, list[int | None]] = {}
    for part in text.replace(";", " ").split():
        name, sep, values = part.partition("=")
        if not sep or name not in allowed:
            raise ValueError(f"bad knob '{part}': use NAME=V1,V2 with NAME one of {', '.join(allowed)}")
        vals: list[int | None] = []
        for v in values.split(","):
            v = v.strip().lower()
            if v in ("auto", "default"):
                vals.append(None)
                continue
            try:
                iv = int(v)
            except ValueError:
                raise ValueError(f"bad value '{v}' for knob {name}: give positive integers or 'auto'") from None
            if iv <= 0:
                raise ValueError(f"bad value '{v}' for knob {name}: give positive integers or 'auto'")
            vals.append(iv)
        axes[name] = vals
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


# --------------------------------------------------------------------------------------------------
# Device side
# --------------------------------------------------------------------------------------------------
def require_cuda() -> None:
    """NotAvailable (one line, exit 2 from the CLI) unless a CUDA GPU is visible."""
    import torch

    if not torch.cuda.is_available():
        raise NotAvailable("this benchmark times CUDA kernels and no CUDA GPU is visible here; run it on a GPU node.")


def make_paged_inputs(batch: int, context: int | list[int], shape: HeadShape, *, page_size: int = 16,
                      dtype: str = "bf16", device: str = "cuda", shuffle: bool = True, seed: int | None = None):
    """Random q and a paged cache holding ``context`` tokens per sequence (pages shuffled by default).

    ``context`` is one length for every sequence or a list of ``batch`` lengths. Returns
    ``(q, k_cache, v_cache, block_table, context_lens)`` in the contract's layout.
    """
    import torch

    from gpuprobe.kernels.common import torch_dtype

    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else torch.seed() % (1 << 62))
    lens = [context] * batch if isinstance(context, int) else list(context)
    if len(lens) != batch or min(lens) < 0:
        raise ValueError("context must be one length or a list of batch non-negative lengths")
    max_pages = max(1, -(-max(lens) // page_size))
    num_pages = batch * max_pages
    tdt = torch_dtype(dtype)
    q = torch.randn(batch, shape.num_q_heads, shape.head_dim, generator=gen).to(device=device, dtype=tdt)
    kv_shape = (num_pages, page_size, shape.num_kv_heads, shape.head_dim)
    k_cache = torch.randn(kv_shape, dtype=tdt, device=device)  # device RNG: fast, fresh each run
    v_cache = torch.randn(kv_shape, dtype=tdt, device=device)
    order = torch.randperm(num_pages, generator=gen) if shuffle else torch.arange(num_pages)
    block_table = order.reshape(batch, max_pages).to(device=device, dtype=torch.int32)
    context_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    return q, k_cache, v_cache, block_table, context_lens


def dense_sdpa_fn(batch: int, context: int, shape: HeadShape, dtype: str):
    """A closure running SDPA (GQA) of one query token over a dense ``[B, Hkv, C, D]`` cache."""
    import torch
    import torch.nn.functional as F

    from gpuprobe.kernels.common import torch_dtype

    tdt = torch_dtype(dtype)
    q = torch.randn(batch, shape.num_q_heads, 1, shape.head_dim, device="cuda", dtype=tdt)
    k = torch.randn(batch, shape.num_kv_heads, context, shape.head_dim, device="cuda", dtype=tdt)
    v = torch.randn_like(k)
    gqa = shape.num_q_heads != shape.num_kv_heads
    return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)


def bench_attention(*, model: str | None = None, shape: HeadShape | None = None, batch: int, context: int,
                    page_size: int = 16, dtype: str = "bf16", knobs: dict[str, int | None] | None = None,
                    baselines: bool = True, reference: bool = True, check: bool = True,
                    rep_ms: int = 100) -> dict[str, Any]:
    """Time the paged kernel at one point (and its baselines); returns one result row."""
    import torch

    from gpuprobe.kernels import paged_attention as pa
    from gpuprobe.kernels.common import time_s
    from gpuprobe.kernels.reference import paged_attention_reference

    require_cuda()
    shape = shape or HeadShape.of_model(model or "qwen2-0.5b")
    knobs = dict(knobs or {})
    inputs = make_paged_inputs(batch, context, shape, page_size=page_size, dtype=dtype)
    q, k_cache, v_cache, block_table, context_lens = inputs
    out = torch.empty_like(q)
    sm = torch.cuda.get_device_properties(q.device).multi_processor_count
    splits = knobs.get("num_splits")
    if splits is None:
        splits = pa.choose_num_splits(batch, shape.num_kv_heads, block_table.shape[1] * page_size, sm)
    kw = {k: v for k, v in knobs.items() if v is not None and k != "num_splits"}

    def run():
        return pa.paged_decode_attention(*inputs, num_splits=splits, out=out, **kw)

    block_kv = kw.get("block_kv", pa.default_block_kv(shape.head_dim))
    row: dict[str, Any] = dict(model=model, q_heads=shape.num_q_heads, kv_heads=shape.num_kv_heads,
                               head_dim=shape.head_dim, batch=batch, context=context, page_size=page_size,
                               dtype=dtype, num_splits=splits, block_kv=block_kv,
                               num_warps=kw.get("num_warps", 4),
                               num_stages=kw.get("num_stages", 2))
    run()
    if check:
        ref = paged_attention_reference(*inputs, compute_dtype=torch.float32).float()
        err = ((out.float() - ref).norm() / ref.norm()).item()
        row["rel_err"] = err
    t = time_s(run, rep_ms=rep_ms)
    nbytes = attention_call_bytes(batch, context, shape, dtype_bytes(dtype))
    bw, bw_source = copy_bandwidth()
    row.update(time_us=t * 1e6, bytes=nbytes, gbps=nbytes / t / 1e9, pct_copy_bw=pct(nbytes, t, bw),
               copy_bw_gbps=bw / 1e9, copy_bw_source=bw_source)
    if baselines:
        dense = dense_sdpa_fn(batch, context, shape, dtype)
        t_dense = time_s(dense, rep_ms=rep_ms)
        row.update(sdpa_dense_us=t_dense * 1e6, ratio_vs_sdpa_dense=t / t_dense)
        del dense
    if reference:
        try:
            t_ref = time_s(lambda: paged_attention_reference(*inputs), rep_ms=rep_ms)
            row.update(reference_us=t_ref * 1e6, ratio_vs_reference=t / t_ref)
        except torch.cuda.OutOfMemoryError:
            row.update(reference_us=None, ratio_vs_reference=None)
    torch.cuda.empty_cache()
    row["target"] = attention_target(batch, context, row) if (shape.num_q_heads, shape.num_kv_heads,
                                                              shape.head_dim, page_size, dtype) == (
        14, 2, 64, 16, "bf16") else ""
    return row


def model_gemm_shapes(model: str) -> dict[str, tuple[int, int]]:
    """(K, N) of each projection of ``model``'s layers: y[M, N] = x[M, K] W[K, N]."""
    return {op: kn for op, kn in gemm_shapes(load_model_spec(model)).items() if op != "lm_head"}


def bench_gemm(*, m: int, n: int, k: int, dtype: str = "bf16", knobs: dict[str, int | None] | None = None,
               op: str | None = None, check: bool = True, rep_ms: int = 100) -> dict[str, Any]:
    """Time :func:`decode_gemm` and ``torch.matmul`` (cuBLAS) at one shape; returns one result row."""
    import torch

    from gpuprobe.kernels.common import time_s, torch_dtype
    from gpuprobe.kernels.gemm import choose_gemm_config, decode_gemm, gemm_bytes

    require_cuda()
    tdt = torch_dtype(dtype)
    x = torch.randn(m, k, device="cuda", dtype=tdt)
    w = torch.randn(k, n, device="cuda", dtype=tdt) / math.sqrt(k)
    out = torch.empty(m, n, device="cuda", dtype=tdt)
    sm = torch.cuda.get_device_properties(x.device).multi_processor_count
    cfg = choose_gemm_config(m, n, k, sm).as_kwargs()
    cfg.update({kk: v for kk, v in (knobs or {}).items() if v is not None})
    row: dict[str, Any] = dict(op=op, m=m, n=n, k=k, dtype=dtype, **cfg)
    run = lambda: decode_gemm(x, w, out=out, **cfg)  # noqa: E731
    run()
    if check:
        ref = x.float() @ w.float()
        row["rel_err"] = ((out.float() - ref).norm() / ref.norm()).item()
    t = time_s(run, rep_ms=rep_ms)
    t_cublas = time_s(lambda: torch.matmul(x, w), rep_ms=rep_ms)
    nbytes = gemm_bytes(m, n, k, dtype_bytes(dtype))
    bw, _ = copy_bandwidth()
    row.update(time_us=t * 1e6, cublas_us=t_cublas * 1e6, ratio_vs_cublas=t / t_cublas,
               pct_copy_bw=pct(nbytes, t, bw), cublas_pct_copy_bw=pct(nbytes, t_cublas, bw),
               tflops=2 * m * n * k / t / 1e12)
    row["target"] = gemm_target(m, row)
    return row


_FUSED_BENCHES = {"activation": ("activation", "bench_activation"), "fused_add_norm": ("norm", "bench_add_norm"),
                  "rotary_kv_write": ("rotary", "bench_rotary_kv_write")}


def bench_fused_kernel(kernel: str, *args, **kwargs) -> dict[str, Any]:
    """One of the engine's fused kernels (``activation``, ``fused_add_norm``, ``rotary_kv_write``) timed by
    its own module's benchmark, with its % of the measured copy bandwidth added."""
    import importlib

    if kernel not in _FUSED_BENCHES:
        raise ValueError(f"kernel must be one of {', '.join(_FUSED_BENCHES)}, got {kernel!r}")
    require_cuda()
    module, function = _FUSED_BENCHES[kernel]
    row = getattr(importlib.import_module(f"gpuprobe.kernels.{module}"), function)(*args, **kwargs)
    bw, source = copy_bandwidth()
    return {**row, "pct_of_copy_bw": pct(row["bytes"], row["time_s"], bw), "copy_bw_source": source}


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
ATTENTION_COLUMNS = [
    ("batch", "B", ""), ("context", "ctx", ""), ("num_splits", "splits", ""), ("block_kv", "blk", ""),
    ("num_warps", "warps", ""), ("num_stages", "stages", ""), ("time_us", "time us", ".1f"),
    ("gbps", "GB/s", ".0f"), ("pct_copy_bw", "% copy bw", ".1f"), ("sdpa_dense_us", "SDPA us", ".1f"),
    ("ratio_vs_sdpa_dense", "/SDPA", ".2f"), ("ratio_vs_reference", "/ref", ".2f"), ("rel_err", "rel err", ".1e"),
    ("target", "target", ""),
]
GEMM_COLUMNS = [
    ("op", "op", ""), ("m", "M", ""), ("n", "N", ""), ("k", "K", ""), ("block_m", "BM", ""), ("block_n", "BN", ""),
    ("block_k", "BK", ""), ("split_k", "splitK", ""), ("time_us", "time us", ".1f"), ("cublas_us", "cuBLAS us", ".1f"),
    ("ratio_vs_cublas", "/cuBLAS", ".2f"), ("pct_copy_bw", "% bw", ".1f"), ("rel_err", "rel err", ".1e"),
    ("target", "target", ""),
]
