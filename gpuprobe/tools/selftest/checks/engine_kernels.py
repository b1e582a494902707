"""GPU checks of the engine's fused kernels: kernels per decode layer counted per op by the torch profiler
(fused and unfused), and the fused batch-1 CUDA-graph step of qwen2-0.5b against a target reachable on the
GPU at hand (docs/contracts.md section 10), its ratio to the weight-read floor kept as a figure."""
from __future__ import annotations

import json
from typing import Any

from gpuprobe.specs import load_model_spec
from gpuprobe.tools.selftest import targets
from gpuprobe.tools.selftest.checks.engine import CONTEXT, MODEL, _free
from gpuprobe.tools.selftest.layer_kernels import fused_layer_limit, judge_layer_count
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check, require_cuda
from gpuprobe.tools.selftest.targets import fused_step_target, missed, targets_figure

#: A graph step whose logits differ from the eager step's by more than this share of the largest logit is broken.
GRAPH_REL_DIFF_LIMIT = 0.05


def _splitk_reduce(batch: int, context: int, page_size: int = 16) -> int:
    """1 when the Triton backend runs split-K (a reduce kernel after the attention) at this shape."""
    import torch

    from gpuprobe.engine.kvcache import pages_for
    from gpuprobe.kernels.common import device_sm_count
    from gpuprobe.kernels.paged_attention import choose_num_splits

    spec = load_model_spec(MODEL)
    tokens = pages_for(context + 1, page_size) * page_size
    return int(choose_num_splits(batch, spec.num_kv_heads, tokens, device_sm_count(torch.device("cuda"))) > 1)


def bias_projections(spec) -> int:
    """Projections of a layer whose ``F.linear`` carries a bias (cuBLAS copies it before the GEMM at M = 1)."""
    return int(spec.qkv_bias) + int(spec.o_bias) + 2 * int(spec.mlp_bias)


@check("kernels_per_layer", owner="engine", gpu=True, budget_s=90, estimate_s=20)
def kernels_per_layer(ctx: CheckContext) -> dict:
    """CUDA kernels of one qwen2-0.5b decode layer per op (B=1, C=1024, bf16), fused and unfused; fused at most
    9 + a bias copy per biased projection + one library reduce (+ the attention's split-K reduce), never 0."""
    torch = require_cuda()
    from gpuprobe.tools.selftest.layer_kernels import count_layer_kernels  # looked up at call time (tests stand in)

    figures: dict[str, Any] = {}
    detail = {}
    for mode in ("fused", "unfused"):
        r = count_layer_kernels(MODEL, mode, batch=1, context=CONTEXT)
        detail[mode] = r
        figures[f"{mode}_per_layer"] = r["per_layer"]
        figures[f"{mode}_per_op"] = r["per_op"]
        figures["attention"] = r["attention"]
        ctx.log(f"{mode}: {json.dumps(r)}")
        _free(torch)
    reduce = _splitk_reduce(1, CONTEXT) if figures["attention"] == "triton" else 0
    bias = bias_projections(load_model_spec(MODEL))
    limit = fused_layer_limit(bias, bool(reduce))
    fused = detail["fused"]
    figures.update(splitk_reduce_kernel=bool(reduce), bias_copies_allowed=bias, fused_limit=limit,
                   fused_step_kernels=fused["step_kernels"], fused_device_kernels_seen=fused["device_kernels_seen"],
                   unfused_over_fused=(round(figures["unfused_per_layer"] / figures["fused_per_layer"], 2)
                                       if figures["fused_per_layer"] else None))
    (ctx.out_dir / "kernels_per_layer.json").write_text(json.dumps({"figures": figures, **detail}, indent=2))
    problems = judge_layer_count(fused["per_op"], limit, fused["names"])
    if not detail["unfused"]["per_layer"]:
        problems.append("the profiler attributed no kernel to the unfused layer's ops")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures


def calibrated_prediction(gpu_spec, spec, context: int, dtype: str = "bf16") -> tuple[Any, str]:
    """(the shipped calibration's prediction of the fused batch-1 step, or None; where it came from or why
    there is none). The calibration package is optional here: a node without it judges the per-GPU target."""
    if gpu_spec is None:
        return None, "the GPU is not in gpuprobe's registry"
    try:
        from gpuprobe.calibration import predict_decode_step, shipped_calibration
    except ImportError as e:
        return None, f"no calibrated prediction: gpuprobe.calibration does not provide it here ({e})"[:200]
    cal = shipped_calibration(gpu_spec.name, dtype)
    if cal is None:
        return None, f"no shipped calibration for {gpu_spec.name} {dtype}"
    pred = predict_decode_step(spec, gpu_spec, 1, context, dtype, cal, kernels="fused")
    return pred, f"shipped calibration for {gpu_spec.name} {dtype}"


@check("throughput_b1_fused", owner="engine", gpu=True, budget_s=90, estimate_s=25)
def throughput_b1_fused(ctx: CheckContext) -> dict:
    """Batch-1 CUDA-graph step of qwen2-0.5b with the fused kernels (C=1024, bf16) within a target reachable on
    this GPU (the calibrated prediction within its error, else the per-GPU target); the ratio to the floor a figure."""
    torch = require_cuda()
    from gpuprobe.measure.throughput import copy_bandwidth, measure_throughput_point, weight_read_floor_s

    bw, bw_source = copy_bandwidth()
    row = measure_throughput_point(MODEL, 1, CONTEXT, attention=None, dtype="bf16", steps=100, warmup=10, graphs=True,
                                   kernel_mode="fused", kernels=True, compare_eager=True)
    _free(torch)
    floor = weight_read_floor_s(row["weights_bytes"], bw)
    ratio = row["step_latency_s"] / floor
    spec, gpu_spec = load_model_spec(MODEL), targets.spec_here()
    try:
        prediction, source = calibrated_prediction(gpu_spec, spec, CONTEXT)
    except Exception as e:  # noqa: BLE001 - a broken calibration is reported; the per-GPU target still judges
        prediction, source = None, f"the calibrated prediction failed: {type(e).__name__}: {e}"[:200]
    target = fused_step_target(row["step_latency_s"], floor, spec.num_layers, gpu_spec, prediction)
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
        "prediction_source": source,
        "predicted_ms": round(prediction.predicted_s * 1e3, 4) if prediction is not None else None,
        "prediction_error_median": getattr(prediction, "error_median", None),
        "graph_rel_diff_vs_eager": row.get("eager_rel_diff"),
        "graph_argmax_equals_eager": row.get("eager_argmax_equal"),
        "targets": targets_figure([target]),
    }
    if target is None:
        figures["target_note"] = ("no target for this GPU (no calibration, no per-GPU figure): the step and its "
                                  "ratio to the floor are figures")
    if row.get("kernels_per_step_error"):
        figures["kernels_per_step_error"] = row["kernels_per_step_error"]
    (ctx.out_dir / "throughput_b1_fused.json").write_text(json.dumps({"figures": figures, "row": row}, indent=2,
                                                                    default=str))
    problems = []
    if row["eager_rel_diff"] > GRAPH_REL_DIFF_LIMIT:
        problems.append(f"the fused graph step's logits differ from the eager step's by {row['eager_rel_diff']:.3g} "
                        f"of the largest logit (limit {GRAPH_REL_DIFF_LIMIT})")
    problems += missed([target])
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
