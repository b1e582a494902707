"""The analytic cost model against numbers worked out by hand for qwen2-0.5b."""
import pytest

from gpuprobe.analytic import (
    decode_costs, max_batch_that_fits, memory_footprint, op_costs_per_layer, predict_step,
)
from gpuprobe.specs import get_gpu, get_model

QWEN = get_model("qwen2-0.5b")  # h=896, Hq=14, Hkv=2, D=64, I=4864, V=151936, 24 layers, bf16: 2 bytes


def per_layer(batch, context, kernels="unfused"):
    return {c.op: c for c in op_costs_per_layer(QWEN, batch, context, "bf16", kernels)}


# Worked by hand, unfused kernels. B=1, C=1024. qkv width 896 + 2*128 = 1152.
HAND_B1_C1024 = {
    #               flops,                                 read bytes,                                         write bytes
    "input_norm":   (4 * 896,                              896 * 2 + 896 * 2,                                  896 * 2),
    "qkv_proj":     (2 * 896 * 1152 + 1152,                (896 * 1152 + 1152) * 2 + 896 * 2,                  1152 * 2),
    "rope":         (3 * 16 * 64,                          16 * 64 * 2 + 2 * 64 * 2,                           16 * 64 * 2),
    "kv_write":     (0,                                    2 * 2 * 64 * 2 + 8,                                 2 * 2 * 64 * 2),
    "attention":    (4 * 14 * 1024 * 64,                   2 * 1024 * 2 * 64 * 2 + 14 * 64 * 2,                14 * 64 * 2),
    "o_proj":       (2 * 896 * 896,                        896 * 896 * 2 + 896 * 2,                            896 * 2),
    "residual_add": (2 * 896,                              2 * 2 * 896 * 2,                                    2 * 896 * 2),
    "post_norm":    (4 * 896,                              896 * 2 + 896 * 2,                                  896 * 2),
    "gate_up_proj": (2 * 896 * 9728,                       896 * 9728 * 2 + 896 * 2,                           9728 * 2),
    "act":          (5 * 4864,                             9728 * 2,                                           4864 * 2),
    "down_proj":    (2 * 4864 * 896,                       4864 * 896 * 2 + 4864 * 2,                          896 * 2),
}

# B=64, C=2048.
B, C = 64, 2048
HAND_B64_C2048 = {
    "input_norm":   (4 * B * 896,                          B * 896 * 2 + 896 * 2,                              B * 896 * 2),
    "qkv_proj":     (2 * B * 896 * 1152 + B * 1152,        (896 * 1152 + 1152) * 2 + B * 896 * 2,              B * 1152 * 2),
    "rope":         (3 * B * 16 * 64,                      B * 16 * 64 * 2 + 2 * B * 64 * 2,                   B * 16 * 64 * 2),
    "kv_write":     (0,                                    B * 2 * 2 * 64 * 2 + B * 8,                         B * 2 * 2 * 64 * 2),
    "attention":    (4 * B * 14 * C * 64,                  2 * B * C * 2 * 64 * 2 + B * 14 * 64 * 2,           B * 14 * 64 * 2),
    "o_proj":       (2 * B * 896 * 896,                    896 * 896 * 2 + B * 896 * 2,                        B * 896 * 2),
    "residual_add": (2 * B * 896,                          2 * 2 * B * 896 * 2,                                2 * B * 896 * 2),
    "post_norm":    (4 * B * 896,                          B * 896 * 2 + 896 * 2,                              B * 896 * 2),
    "gate_up_proj": (2 * B * 896 * 9728,                   896 * 9728 * 2 + B * 896 * 2,                       B * 9728 * 2),
    "act":          (5 * B * 4864,                         B * 9728 * 2,                                       B * 4864 * 2),
    "down_proj":    (2 * B * 4864 * 896,                   4864 * 896 * 2 + B * 4864 * 2,                      B * 896 * 2),
}


@pytest.mark.parametrize("batch,context,hand", [(1, 1024, HAND_B1_C1024), (64, 2048, HAND_B64_C2048)])
def test_every_layer_op_against_hand_numbers(batch, context, hand):
    got = per_layer(batch, context)
    assert set(got) == set(hand)
    for op, (flops, read, write) in hand.items():
        assert got[op].flops == flops, op
        assert got[op].dram_read_bytes == read, op
        assert got[op].dram_write_bytes == write, op


# Fused kernels, B=1, C=1024, worked by hand: one kernel each.
HAND_FUSED_B1_C1024 = {
    # add + RMSNorm: reads the layer output and the residual (896 x 2 B each) and the weight;
    # writes the normed row and the new residual
    "input_norm":   (5 * 896,                              2 * 896 * 2 + 896 * 2,                              2 * 896 * 2),
    # RoPE + KV write: reads q (14 x 64), k, v (2 x 64 each), half a cos and half a sin row (32 + 32),
    # the position and the slot (8 + 8); writes rotated q and the k, v cache rows
    "kv_write":     (3 * 16 * 64,                          18 * 64 * 2 + 64 * 2 + 16,                          18 * 64 * 2),
    "post_norm":    (5 * 896,                              2 * 896 * 2 + 896 * 2,                              2 * 896 * 2),
    "act":          (5 * 4864,                             9728 * 2,                                           4864 * 2),
}


def test_fused_ops_against_hand_numbers():
    got = per_layer(1, 1024, "fused")
    assert "residual_add" not in got and "rope" not in got  # their work runs inside the fused kernels
    assert set(got) == set(HAND_B1_C1024) - {"residual_add", "rope"}
    for op, (flops, read, write) in HAND_FUSED_B1_C1024.items():
        assert (got[op].flops, got[op].dram_read_bytes, got[op].dram_write_bytes) == (flops, read, write), op
    assert got["kv_write"].kv_write_bytes == 2 * 2 * 64 * 2
    for op in ("qkv_proj", "attention", "o_proj", "gate_up_proj", "down_proj"):  # GEMMs and attention unchanged
        assert got[op] == per_layer(1, 1024)[op]


def test_fused_step_totals():
    """The first layer's norm adds no residual; the final norm adds the last one and writes only its output."""
    costs = {c.op: c for c in decode_costs(QWEN, 1, 1024, "bf16", kernels="fused")}
    assert costs["input_norm"].dram_read_bytes == 896 * 2 + 896 * 2 + 23 * (2 * 896 * 2 + 896 * 2)
    assert costs["input_norm"].dram_write_bytes == 896 * 2 + 23 * 2 * 896 * 2
    assert costs["input_norm"].count == 24
    assert (costs["final_norm"].dram_read_bytes, costs["final_norm"].dram_write_bytes) == (2 * 896 * 2 + 896 * 2, 896 * 2)
    unfused = {c.op: c for c in decode_costs(QWEN, 1, 1024, "bf16", kernels="unfused")}
    # fused moves fewer bytes: rope and the adds no longer write and re-read intermediate rows
    assert sum(c.dram_bytes for c in costs.values()) < sum(c.dram_bytes for c in unfused.values())
    assert sum(c.weight_bytes for c in costs.values()) == sum(c.weight_bytes for c in unfused.values())
    opt = {c.op for c in decode_costs(get_model("opt-1.3b"), 1, 64, kernels="fused")}
    assert "kv_write" in opt and "rope" not in opt and "residual_add" not in opt
    from gpuprobe.errors import UserError

    with pytest.raises(UserError, match="kernels mode"):
        decode_costs(QWEN, 1, 1024, kernels="triton")


@pytest.mark.parametrize("batch", [1, 64])
def test_step_ops_and_layer_scaling(batch):
    costs = {c.op: c for c in decode_costs(QWEN, batch, 1024, "bf16", kernels="unfused")}
    layer = per_layer(batch, 1024)
    assert costs["attention"].flops == 24 * layer["attention"].flops
    assert costs["attention"].kv_read_bytes == 24 * 2 * batch * 1024 * 2 * 64 * 2
    # lm_head: tied embedding still read in full; logits written in bf16.
    assert costs["lm_head"].flops == 2 * batch * 896 * 151936
    assert costs["lm_head"].dram_bytes == 151936 * 896 * 2 + batch * 896 * 2 + batch * 151936 * 2
    assert costs["final_norm"].flops == 4 * batch * 896
    assert costs["embed"].dram_bytes == batch * 896 * 2 + batch * 8 + batch * 896 * 2
    assert costs["sample"].dram_read_bytes == batch * 151936 * 2
    # Weights read once per step add up to the parameter bytes (the embedding table is read by
    # lm_head in full; embed reads only B rows, so it is not a weight read).
    weights = sum(c.weight_bytes for c in costs.values())
    assert weights == pytest.approx(QWEN.weight_bytes(2) - 0, rel=1e-12)


def test_attention_memory_bound_and_gemm_intensity_grows_with_batch():
    gpu = get_gpu("h100-sxm")
    ridge = gpu.bf16_flops_per_s / gpu.dram_bytes_per_s
    prev = None
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        costs = {c.op: c for c in decode_costs(QWEN, b, 1024, "bf16")}
        # Attention intensity is fixed by the GQA group (7 query heads per KV head): ~7 FLOP/B.
        assert costs["attention"].intensity < ridge / 20
        assert costs["attention"].intensity == pytest.approx(7.0, rel=0.01)
        g = costs["gate_up_proj"].intensity
        # 2BKN FLOPs over 2(KN + BK + BN) bytes: ~B FLOP/byte while the weights dominate the bytes.
        assert g == pytest.approx(2 * b * 896 * 9728 / (2 * (896 * 9728 + b * 896 + b * 9728)), rel=1e-9)
        assert 0.55 * b < g <= b
        if prev is not None:
            assert g > 1.6 * prev
        prev = g


def test_gqa_exact_kv_bytes_differ_from_mha():
    llama = get_model("llama-3.2-1b")  # 32 q heads, 8 kv heads
    att = {c.op: c for c in op_costs_per_layer(llama, 4, 100)}["attention"]
    assert att.kv_read_bytes == 2 * 4 * 100 * 8 * 64 * 2
    assert att.flops == 4 * 4 * 32 * 100 * 64


def test_memory_footprint_and_max_batch():
    gpu = get_gpu("h100-sxm")
    fp = memory_footprint(QWEN, 256, 1024)
    assert fp.weight_bytes == 494_032_768 * 2
    assert fp.kv_cache_bytes == 256 * 1024 * 24 * 2 * 128 * 2
    fits = max_batch_that_fits(QWEN, gpu, 1024)
    per_seq = 1024 * 24 * 2 * 128 * 2
    assert fits == int((85_017_493_504 * 0.9 - 494_032_768 * 2) // per_seq)  # H100 80GB HBM3 as the device reports it
    assert max_batch_that_fits(get_model("llama-3.1-8b"), get_gpu("l4"), 131072) == 0


def test_predicted_step_time_and_throughput():
    gpu = get_gpu("h100-sxm")
    p1 = predict_step(QWEN, gpu, 1, 1024, kernels="unfused")
    # Batch 1 is bound by reading the weights: about 0.99 GB at 3.35 TB/s, ~0.3 ms.
    assert 0.28e-3 < p1.step_time_s < 0.32e-3
    p512 = predict_step(QWEN, gpu, 512, 1024)
    assert p512.tokens_per_s > 20 * p1.tokens_per_s
    assert p512.op_times_s["attention"] > p512.op_times_s["gate_up_proj"]


def test_bad_batch_and_context():
    from gpuprobe.errors import UserError

    with pytest.raises(UserError):
        op_costs_per_layer(QWEN, 0, 10)
    with pytest.raises(UserError):
        op_costs_per_layer(QWEN, 1, -5)


@pytest.mark.parametrize("activation,flops_per_element,gated", [
    ("relu", 1, False), ("gelu", 5, False), ("gelu_tanh", 9, False), ("swiglu", 5, True), ("geglu_tanh", 10, True)])
def test_act_cost_follows_the_activation_table(activation, flops_per_element, gated):
    """FLOPs per element counted by hand (one per add, multiply, transcendental); bytes: the input (gate and up
    when gated) read once, the output written once."""
    import dataclasses

    spec = dataclasses.replace(get_model("opt-1.3b"), activation=activation)  # I = 8192, fp16: 2 bytes
    act = {c.op: c for c in op_costs_per_layer(spec, 4, 64, "fp16")}["act"]
    assert act.flops == flops_per_element * 4 * 8192
    assert (act.dram_read_bytes, act.dram_write_bytes) == ((2 if gated else 1) * 4 * 8192 * 2, 4 * 8192 * 2)
    gate_up = {c.op: c for c in op_costs_per_layer(spec, 4, 64, "fp16")}["gate_up_proj"]
    assert gate_up.dram_write_bytes == (2 if gated else 1) * 4 * 8192 * 2


def test_dtype_is_a_normalised_name():
    """Spellings are normalised once where a user gives them (gpuprobe.specs.gpus.normalize_dtype)."""
    from gpuprobe.errors import UserError

    with pytest.raises(UserError, match="unknown dtype 'bfloat16'; use one of bf16, fp16, fp32"):
        decode_costs(QWEN, 1, 64, "bfloat16")
