"""Selftest checks of the Triton kernels (paged decode attention, decode GEMM) on a GPU.

Each check runs short, writes its result rows to ``rows.json`` in its evidence folder, and fails
with the measured figures when the claim does not hold. The claims and their thresholds live in
the ``evaluate_*`` functions, which are pure and tested on CPU.
"""
from __future__ import annotations

import json
from typing import Any

from gpuprobe.ceilings import kernel_bench as bench
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda, verdict

REL_ERR_LIMIT = 1e-2
#: Paged attention at B=256, C=2048 reads its KV cache at least this share of the DRAM read ceiling
#: (the kernels' 90%-of-copy target, restated against a read-only stream, which runs a few percent
#: above a copy's read+write rate).
TARGET_READ_FRACTION = 0.85
#: Above this share of the read ceiling, the bytes counted or the ceiling are wrong (an L2-resident
#: working set, or bytes the kernel does not read): a failure, never a fast kernel.
MAX_READ_FRACTION = 1.05

#: (label, (Hq, Hkv, D), batch, max context, page size): bf16 correctness cases at real sizes.
CORRECTNESS_CASES = (
    ("qwen2-0.5b", (14, 2, 64), 64, 2048, 16),
    ("qwen2-1.5b", (12, 2, 128), 32, 4096, 16),
    ("llama-3.2-1b", (32, 8, 64), 16, 1024, 128),
    ("head_dim-80", (16, 2, 80), 8, 3000, 32),
    ("head_dim-96", (8, 8, 96), 8, 1500, 8),
)
#: Split counts run on every case: v1, the heuristic's choice, and a forced split that is not a power of two.
CORRECTNESS_SPLITS = (1, None, 5)


def correctness_lens(batch: int, max_ctx: int) -> list[int]:
    """Fresh random context lengths in ``1..max_ctx``, the first 1 and the last ``max_ctx``.

    Pinning the longest length pins the block table's width, so every run (and the GPU tests,
    which use the same cases) launches the same kernel specialisations and reuses Triton's cache.
    """
    import torch

    lens = torch.randint(1, max_ctx + 1, (batch,)).tolist()
    lens[0] = 1  # a context of one token
    lens[-1] = max_ctx
    return lens


def _require_gpu() -> None:
    require_cuda()
    try:
        import triton  # noqa: F401
    except ImportError:
        raise Skip("triton is not installed") from None


def _save(ctx: CheckContext, rows: list[dict[str, Any]]) -> None:
    (ctx.out_dir / "rows.json").write_text(json.dumps(rows, indent=1, default=str))


def rel_err(out, ref) -> float:
    """Norm-wise relative error ``||out - ref|| / ||ref||`` (float64)."""
    o, r = out.double(), ref.double()
    return float((o - r).norm() / r.norm())


def evaluate_correctness(errors: dict[str, float], limit: float = REL_ERR_LIMIT) -> list[str]:
    """Names of the cases whose relative error is not finite or not below ``limit``."""
    return [name for name, e in errors.items() if not (e == e and e < limit)]


def evaluate_large_batch(row: dict[str, Any]) -> list[str]:
    """Misses of the B=256, C=2048 target: >= 90% of copy bandwidth and <= 1.05x dense SDPA."""

    out = []
    if row["pct_copy_bw"] < bench.TARGET_LARGE_BATCH_PCT:
        out.append(f"{row['pct_copy_bw']:.1f}% of copy bandwidth < {bench.TARGET_LARGE_BATCH_PCT:.0f}%")
    if row.get("ratio_vs_sdpa_dense") is not None and row["ratio_vs_sdpa_dense"] > bench.TARGET_LARGE_BATCH_SDPA_RATIO:
        out.append(f"{row['ratio_vs_sdpa_dense']:.2f}x dense SDPA > {bench.TARGET_LARGE_BATCH_SDPA_RATIO}x")
    return out


def evaluate_splitk(splitk_row: dict[str, Any], v1_row: dict[str, Any]) -> list[str]:
    """Misses of the B=8, C=32768 target: split-K >= 70% of copy bandwidth (and faster than v1)."""

    out = []
    if splitk_row["num_splits"] <= 1:
        out.append("the heuristic chose no split")
    if splitk_row["pct_copy_bw"] < bench.TARGET_SPLITK_PCT:
        out.append(f"split-K at {splitk_row['pct_copy_bw']:.1f}% of copy bandwidth < {bench.TARGET_SPLITK_PCT:.0f}%")
    if splitk_row["time_us"] >= v1_row["time_us"]:
        out.append(f"split-K ({splitk_row['time_us']:.1f} us) not faster than v1 ({v1_row['time_us']:.1f} us)")
    return out


def evaluate_gemm(rows: list[dict[str, Any]]) -> list[str]:
    """Misses of the GEMM claim: every row correct, and within 1.2x of cuBLAS for M <= 64."""

    out = []
    for r in rows:
        tag = f"{r.get('op')} M={r['m']}"
        if not r.get("rel_err", 0.0) < REL_ERR_LIMIT:
            out.append(f"{tag}: rel err {r.get('rel_err')}")
        if r["m"] <= 64 and r["ratio_vs_cublas"] > bench.TARGET_GEMM_CUBLAS_RATIO:
            out.append(f"{tag}: {r['ratio_vs_cublas']:.2f}x cuBLAS")
    return out


@check("paged_attention_correct", owner="kernels", gpu=True, budget_s=90,
       estimate_s={"default": 35, "a100": 45})
def paged_attention_correct(ctx: CheckContext) -> dict:
    """Paged attention, bf16 at real sizes, v1 and split-K, and a CUDA-graph replay: rel err < 1e-2 vs float64."""
    _require_gpu()
    import torch

    from gpuprobe.kernels import paged_decode_attention
    from gpuprobe.kernels.reference import paged_attention_reference

    errors: dict[str, float] = {}
    for label, (hq, hkv, d), batch, max_ctx, page in CORRECTNESS_CASES:
        lens = correctness_lens(batch, max_ctx)
        inputs = bench.make_paged_inputs(batch, lens, bench.HeadShape(hq, hkv, d), page_size=page, dtype="bf16")
        ref = paged_attention_reference(*inputs, compute_dtype=torch.float64)
        for splits in CORRECTNESS_SPLITS:
            out = torch.full_like(inputs[0], float("nan"))
            paged_decode_attention(*inputs, num_splits=splits, out=out)
            errors[f"{label}/splits={splits or 'auto'}"] = rel_err(out, ref)
    # Graph safety: capture once, then change the lengths and queries in place and replay.
    q, k_cache, v_cache, block_table, context_lens = bench.make_paged_inputs(
        16, 2048, bench.HeadShape(14, 2, 64), page_size=16, dtype="bf16")
    out = torch.full_like(q, float("nan"))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # compile outside the capture
            for splits in (1, 4):
                paged_decode_attention(q, k_cache, v_cache, block_table, context_lens, num_splits=splits, out=out)
    torch.cuda.current_stream().wait_stream(stream)
    for splits in (1, 4):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            paged_decode_attention(q, k_cache, v_cache, block_table, context_lens, num_splits=splits, out=out)
        context_lens.copy_(torch.randint(1, 2049, context_lens.shape, device="cuda", dtype=torch.int32))
        q.copy_(torch.randn_like(q))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = paged_attention_reference(q, k_cache, v_cache, block_table, context_lens, compute_dtype=torch.float64)
        errors[f"graph_replay/splits={splits}"] = rel_err(out, ref)
    ctx.log(json.dumps(errors, indent=1))
    figures = {"max_rel_err": max(errors.values()), "cases": len(errors)}
    bad = evaluate_correctness(errors)
    if bad:
        raise CheckFailed(f"relative error >= {REL_ERR_LIMIT} in: {', '.join(bad)}",
                          {**figures, **{k: errors[k] for k in bad}})
    return figures


def judge_attention_bandwidth(read_bytes: float, time_s: float, read_ceiling: float, copy_bw: float | None,
                              ratio_vs_sdpa: float | None = None) -> tuple[dict[str, Any], list[str]]:
    """Figures and misses of the B=256 bandwidth claim: the bytes the kernel reads over its time, as a
    fraction of the DRAM read ceiling (at least :data:`TARGET_READ_FRACTION`, at most
    :data:`MAX_READ_FRACTION`), with the copy figure beside it; and at most 1.05x dense SDPA."""

    read_bw = read_bytes / time_s
    fraction = read_bw / read_ceiling
    figures = {"attention_read_tbps": round(read_bw / 1e12, 4), "read_ceiling_tbps": round(read_ceiling / 1e12, 4),
               "fraction_of_read_ceiling": round(fraction, 4),
               "copy_tbps": None if copy_bw is None else round(copy_bw / 1e12, 4),
               "read_over_copy": None if copy_bw is None else round(read_bw / copy_bw, 4),
               "ratio_vs_sdpa_dense": ratio_vs_sdpa}
    problems = []
    if fraction > MAX_READ_FRACTION:
        problems.append(f"attention reads {read_bw / 1e12:.3f} TB/s, above the read ceiling "
                        f"{read_ceiling / 1e12:.3f} TB/s ({fraction:.0%}): bytes counted that the kernel does "
                        "not read from DRAM, or a wrong ceiling")
    elif fraction < TARGET_READ_FRACTION:
        problems.append(f"attention reads at {fraction:.0%} of the read ceiling < {TARGET_READ_FRACTION:.0%}")
    if ratio_vs_sdpa is not None and ratio_vs_sdpa > bench.TARGET_LARGE_BATCH_SDPA_RATIO:
        problems.append(f"{ratio_vs_sdpa:.2f}x dense SDPA > {bench.TARGET_LARGE_BATCH_SDPA_RATIO}x")
    return figures, problems


@check("paged_attention_bandwidth", owner="kernels", gpu=True, budget_s=60, estimate_s=15)
def paged_attention_bandwidth(ctx: CheckContext) -> dict:
    """B=256, C=2048, Qwen2-0.5B heads (14/2/64), page 16, bf16: KV reads >= 85% of the DRAM read ceiling
    (CUDA events), copy figure beside, <= 1.05x dense SDPA."""
    _require_gpu()
    from gpuprobe.tools.selftest.read_ceiling import read_ceiling
    from gpuprobe.tools.selftest.targets import missed, read_ceiling_target, spec_here, targets_figure

    batch, context, shape = 256, 2048, bench.HeadShape.of_model("qwen2-0.5b")
    row = bench.bench_attention(model="qwen2-0.5b", batch=batch, context=context, page_size=16, dtype="bf16",
                                knobs={"num_splits": None}, reference=False)
    _save(ctx, [row])
    ceiling, source = read_ceiling()
    out_bytes = batch * shape.num_q_heads * shape.head_dim * 2  # the one write: the output
    figures, problems = judge_attention_bandwidth(row["bytes"] - out_bytes, row["time_us"] * 1e-6, ceiling,
                                                  row["copy_bw_gbps"] * 1e9, row.get("ratio_vs_sdpa_dense"))
    targets = [read_ceiling_target(ceiling, spec_here())]
    figures.update(time_us=row["time_us"], pct_copy_bw=row["pct_copy_bw"], num_splits=row["num_splits"],
                   rel_err=row.get("rel_err"), read_ceiling_source=source, copy_source=row.get("copy_bw_source"),
                   targets=targets_figure(targets))
    return verdict(figures, problems + missed(targets))


@check("splitk_bandwidth", owner="kernels", gpu=True, budget_s=45, estimate_s=15)
def splitk_bandwidth(ctx: CheckContext) -> dict:
    """B=8, C=32768, Qwen2-0.5B heads, page 16, bf16: split-K >= 70% of copy bandwidth, beside v1."""
    _require_gpu()

    common = dict(model="qwen2-0.5b", batch=8, context=32768, page_size=16, dtype="bf16", reference=False)
    v1 = bench.bench_attention(**common, knobs={"num_splits": 1})
    sk = bench.bench_attention(**common, knobs={"num_splits": None})
    _save(ctx, [v1, sk])
    figures = {"splitk_us": sk["time_us"], "splitk_pct_copy_bw": sk["pct_copy_bw"], "num_splits": sk["num_splits"],
               "v1_us": v1["time_us"], "v1_pct_copy_bw": v1["pct_copy_bw"], "sdpa_dense_us": sk.get("sdpa_dense_us"),
               "splitk_rel_err": sk.get("rel_err")}
    return verdict(figures, evaluate_splitk(sk, v1))


@check("decode_gemm", owner="kernels", gpu=True, budget_s=60, estimate_s=20)
def decode_gemm_check(ctx: CheckContext) -> dict:
    """Decode GEMM on Qwen2-0.5B projections, M = 1, 16, 64, bf16: correct and within 1.2x of cuBLAS."""
    _require_gpu()

    rows = [bench.bench_gemm(m=m, n=n, k=k, dtype="bf16", op=op, rep_ms=50)
            for op, (k, n) in bench.model_gemm_shapes("qwen2-0.5b").items() for m in (1, 16, 64)]
    _save(ctx, rows)
    figures = {"worst_ratio_vs_cublas": max(r["ratio_vs_cublas"] for r in rows),
               "best_ratio_vs_cublas": min(r["ratio_vs_cublas"] for r in rows),
               "max_rel_err": max(r["rel_err"] for r in rows), "points": len(rows)}
    return verdict(figures, evaluate_gemm(rows))
