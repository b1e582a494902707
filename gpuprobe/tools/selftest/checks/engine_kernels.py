"""GPU checks of the engine's fused kernels: kernels per decode layer counted by the torch profiler (fused
and unfused), and the fused batch-1 CUDA-graph step of qwen2-0.5b against the weight-read floor."""
from __future__ import annotations

import json
from typing import Any

from gpuprobe.tools.selftest.checks.engine import CONTEXT, FLOOR_FACTOR_TARGET, MODEL, _free
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check, require_cuda

#: A fused Qwen2 decode layer launches at most this many kernels (split-K attention may add its reduce).
FUSED_LAYER_LIMIT = 10
#: A graph step whose logits differ from the eager step's by more than this share of the largest logit is broken.
GRAPH_REL_DIFF_LIMIT = 0.05


def _splitk_reduce(batch: int, context: int, page_size: int = 16) -> int:
    """1 when the Triton backend runs split-K (a reduce kernel after the attention) at this shape."""
    import torch

    from gpuprobe.engine.kvcache import pages_for
    from gpuprobe.kernels.paged_attention import _sm_count, choose_num_splits
    from gpuprobe.specs import get_model

    spec = get_model(MODEL)
    tokens = pages_for(context + 1, page_size) * page_size
    return int(choose_num_splits(batch, spec.num_kv_heads, tokens, _sm_count(torch.device("cuda"))) > 1)


@check("kernels_per_layer", owner="engine", gpu=True, budget_s=90, estimate_s=30)
def kernels_per_layer(ctx: CheckContext) -> dict:
    """CUDA kernels of one qwen2-0.5b decode layer (B=1, C=1024, bf16), fused and unfused; fused at most 10."""
    torch = require_cuda()
    from gpuprobe.engine.kernel_count import kernels_per_layer_gpu

    figures: dict[str, Any] = {}
    detail = {}
    for mode in ("fused", "unfused"):
        r = kernels_per_layer_gpu(MODEL, mode, batch=1, context=CONTEXT)
        detail[mode] = r
        figures[f"{mode}_per_layer"] = r["per_layer"]
        figures[f"{mode}_step_1_layer"] = r["step_1_layer"]
        figures["attention"] = r["attention"]
        ctx.log(f"{mode}: {json.dumps(r)}")
        _free(torch)
    reduce = _splitk_reduce(1, CONTEXT) if figures["attention"] == "triton" else 0
    limit = FUSED_LAYER_LIMIT + reduce
    figures.update(splitk_reduce_kernel=bool(reduce), fused_limit=limit,
                   unfused_over_fused=round(figures["unfused_per_layer"] / max(figures["fused_per_layer"], 1), 2))
    (ctx.out_dir / "kernels_per_layer.json").write_text(json.dumps({"figures": figures, **detail}, indent=2))
    if figures["fused_per_layer"] > limit:
        raise CheckFailed(f"a fused decode layer launches {figures['fused_per_layer']} kernels (limit {limit}): "
                          f"{detail['fused']['layer_kernels']}", figures)
    return figures


@check("throughput_b1_fused", owner="engine", gpu=True, budget_s=90, estimate_s=25)
def throughput_b1_fused(ctx: CheckContext) -> dict:
    """Batch-1 CUDA-graph step of qwen2-0.5b with the fused kernels (C=1024, bf16) within 2x the weight-read floor."""
    torch = require_cuda()
    from gpuprobe.measure.throughput import copy_bandwidth, measure_point, weight_read_floor_s

    bw, bw_source = copy_bandwidth()
    row = measure_point(MODEL, 1, CONTEXT, attention=None, dtype="bf16", steps=100, warmup=10, graphs=True,
                        kernel_mode="fused", kernels=True, compare_eager=True)
    _free(torch)
    floor = weight_read_floor_s(row["weights_bytes"], bw)
    ratio = row["step_latency_s"] / floor
    figures = {
        "kernels": row["kernels"],
        "attention": row["attention"],
        "b1_step_ms": round(row["step_latency_s"] * 1e3, 4),
        "b1_step_p90_ms": round(row["step_latency_p90_s"] * 1e3, 4),
        "b1_tokens_per_s": round(row["tokens_per_s"], 1),
        "kernels_per_step": row.get("kernels_per_step"),
        "weights_bytes": row["weights_bytes"],
        "copy_bandwidth_bytes_per_s": bw,
        "copy_bandwidth_source": bw_source,
        "weight_read_floor_ms": round(floor * 1e3, 4),
        "b1_step_over_floor": round(ratio, 3),
        "target_over_floor": FLOOR_FACTOR_TARGET,
        "graph_rel_diff_vs_eager": row.get("eager_rel_diff"),
        "graph_argmax_equals_eager": row.get("eager_argmax_equal"),
    }
    if row.get("kernels_per_step_error"):
        figures["kernels_per_step_error"] = row["kernels_per_step_error"]
    (ctx.out_dir / "throughput_b1_fused.json").write_text(json.dumps({"figures": figures, "row": row}, indent=2,
                                                                    default=str))
    if row["eager_rel_diff"] > GRAPH_REL_DIFF_LIMIT:
        raise CheckFailed(f"the fused graph step's logits differ from the eager step's by {row['eager_rel_diff']:.3g} "
                          f"of the largest logit (limit {GRAPH_REL_DIFF_LIMIT})", figures)
    if ratio > FLOOR_FACTOR_TARGET:
        raise CheckFailed(f"fused batch-1 graph step {figures['b1_step_ms']} ms is {ratio:.2f}x the weight-read floor "
                          f"({figures['weight_read_floor_ms']} ms, {figures['kernels_per_step']} kernels per step); "
                          f"target {FLOOR_FACTOR_TARGET}x", figures)
    return figures
