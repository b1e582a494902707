"""Cross-checks of counters against the cost model, on the real H100 counters of the shared fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprobe.roofline.crosscheck import (TOLERANCE, CrossCheck, check_point, check_points, failures, gemm_flops,
                                          step_attention_bytes)
from gpuprobe.specs.models import get_model

MEASURED = Path(__file__).resolve().parent / "fixtures" / "measured"
SPEC = get_model("qwen2-0.5b")


def _layer_totals(csv_name: str) -> dict[str, dict[str, float]]:
    """Counter sums per op over the layers of a real report, and the number of layers in it."""
    from gpuprobe.ncu import load_ncu_report

    df = load_ncu_report(MEASURED / csv_name)
    out = {}
    for op, g in df.groupby("op"):
        out[op] = {"read": float(g["dram_read_bytes"].sum()), "write": float(g["dram_write_bytes"].sum()),
                   "tensor": float(g["flops_tensor"].sum()), "layers": g["layer"].nunique()}
    return out


def test_attention_reads_match_kv_bytes_on_both_h100_reports():
    """Contracts: 1.004 (B=64, C=1024) and 1.009 (B=32, C=512)."""
    for name, batch, ctx, want in (("ncu_b64_c1024_2layers.csv", 64, 1024, 1.004),
                                   ("ncu_b32_c512_layer0.csv", 32, 512, 1.009)):
        att = _layer_totals(name)["attention"]
        scale = SPEC.num_layers / att["layers"]
        checks = {c.name: c for c in check_point("attention", batch, spec=SPEC, context=ctx, dtype="bf16",
                                                 dram_read_bytes=att["read"] * scale,
                                                 dram_write_bytes=att["write"] * scale)}
        read = checks["attention_dram_read"]
        assert read.ratio == pytest.approx(want, abs=0.0006) and not read.flagged
        assert "match the KV bytes" in read.note
        kv, _ = step_attention_bytes(SPEC, batch, ctx, "bf16")
        assert kv == 2 * batch * ctx * 2 * 64 * 2 * 24


def test_attention_writes_are_compared_with_writes_and_flagged():
    att = _layer_totals("ncu_b64_c1024_2layers.csv")["attention"]  # 1.41 + 1.69 MB of write-backs
    w = {c.name: c for c in check_point("attention", 64, spec=SPEC, context=1024, dtype="bf16",
                                        dram_read_bytes=att["read"] * 12, dram_write_bytes=att["write"] * 12)}
    write = w["attention_dram_write"]
    assert write.expected == 64 * 14 * 64 * 2 * 24 and write.ratio > 10 and write.flagged
    assert "write-backs" in write.note
    assert failures(w.values()) == []  # write-backs are flagged, not a failed measurement


def test_gemm_padding_on_the_h100_report():
    """qkv_proj and o_proj count exactly 2MNK; the MLP group (gate_up 1.03x, down 1.17x) 1.075x overall."""
    ops = _layer_totals("ncu_b64_c1024_2layers.csv")
    ratios = {}
    for op in ("qkv_proj", "o_proj", "mlp"):
        (c,) = check_point(op, 64, spec=SPEC, context=1024, dtype="bf16", flops_tensor=ops[op]["tensor"] * 12)
        ratios[op] = c.ratio
        assert c.name == "gemm_flops"
    assert ratios["qkv_proj"] == pytest.approx(1.0, abs=1e-6) and ratios["o_proj"] == pytest.approx(1.0, abs=1e-6)
    assert ratios["mlp"] == pytest.approx(1.0757, abs=0.001)
    # kernel by kernel, the contract's figures: gate_up 1.03x, down 1.17x (split-K tiles)
    from gpuprobe.ncu import load_ncu_report

    df = load_ncu_report(MEASURED / "ncu_b64_c1024_2layers.csv")
    gemms = df[(df["op"] == "mlp") & (df["flops_tensor"] > 0) & (df["layer"] == 0)]
    gate_up, down = gemms["flops_tensor"].tolist()
    assert gate_up / (2 * 64 * 896 * 9728) == pytest.approx(1.026, abs=0.002)
    assert down / (2 * 64 * 4864 * 896) == pytest.approx(1.173, abs=0.002)
    assert gemm_flops(SPEC, "mlp", 64) == (2 * 64 * 896 * 9728 + 2 * 64 * 4864 * 896) * 24


def test_flags_and_failures():
    exact = CrossCheck("gemm_flops", "qkv_proj", 64, 1.0, 1.0, 1.0, False, "")
    padded = check_point("down_proj", 1, spec=SPEC, context=1024, dtype="bf16",
                         flops_tensor=gemm_flops(SPEC, "down_proj", 1) * 8)[0]
    assert padded.flagged and "padding" in padded.note and failures([padded]) == []
    short = check_point("lm_head", 8, spec=SPEC, context=1024, dtype="bf16",
                        flops_tensor=gemm_flops(SPEC, "lm_head", 8) * 0.5)[0]
    assert short.flagged and failures([short]) == [short] and "less tensor work" in short.note
    assert gemm_flops(SPEC, "lm_head", 8) == 2 * 8 * 896 * 151936  # once per step, not per layer
    missing = check_point("o_proj", 8, spec=SPEC, context=1024, dtype="bf16")[0]
    assert missing.ratio is None and missing.flagged and failures([missing]) == [missing]
    gather = check_point("attention", 8, spec=SPEC, context=1024, dtype="bf16",
                         dram_read_bytes=step_attention_bytes(SPEC, 8, 1024, "bf16")[0] * 3, dram_write_bytes=0.0)
    assert failures(gather)[0].name == "attention_dram_read"  # the torch reference moves 3x the KV bytes
    assert exact.summary == "gemm_flops qkv_proj B=64: 1.000" and TOLERANCE == 0.10
    assert CrossCheck.from_dict(json.loads(json.dumps(padded.to_dict()))) == padded


def test_check_points_use_each_points_own_context():
    pts = [{"op": "attention", "batch": 4, "context": 512, "dram_read_bytes": step_attention_bytes(SPEC, 4, 512, "bf16")[0],
            "dram_write_bytes": None, "flops_executed": 1.0},
           {"op": "rope", "batch": 4, "flops_executed": 1.0}]
    checks = check_points(pts, SPEC, 1024, "bf16")
    assert [c.name for c in checks] == ["attention_dram_read", "attention_dram_write"]
    assert checks[0].ratio == pytest.approx(1.0) and checks[1].ratio is None


def test_selftest_verdict_on_recorded_results():
    """The selftest check's pure parts on the recorded H100 sweep (batches 32 and 64, not 1 and 64)."""
    from gpuprobe.roofline.assemble import assemble_result
    from gpuprobe.tools.selftest.checks.roofline import figures_of, verify
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.measure.sweep import read_results

    res = assemble_result(read_results(MEASURED / "ncu" / "results.jsonl"), spec=SPEC, gpu=get_gpu("h100-sxm"),
                          dtype="bf16", copy_bw=3.01e12)
    data = json.loads(json.dumps(res.to_dict()))
    figs = figures_of(data)
    assert figs["attention_read_ratio_b64"] == 1.004 and figs["attention_read_ratio_b32"] == 1.009
    assert figs["attention_dram_pct_b64"] > figs["attention_dram_pct_b32"]
    problems = verify(data)
    assert any("qkv_proj B=32" in p and "no tensor FLOP counters" in p for p in problems)
    data["crosschecks"] = [c for c in data["crosschecks"] if c["batch"] == 64]
    assert verify(data) == []


def test_gemm_on_cuda_cores_is_compared_by_all_its_flops():
    """cuBLAS runs M=1 GEMMs as GEMV kernels on CUDA cores: no tensor-pipe FLOPs, 2MNK FP32 FLOPs.
    Not a failure when all counted FLOPs reach 2MNK; still a failure when they do not."""
    want = gemm_flops(SPEC, "lm_head", 1)
    (gemv,) = check_point("lm_head", 1, spec=SPEC, context=1024, dtype="bf16", flops_tensor=0.0,
                          flops_total=want * 1.02)
    assert gemv.ratio == pytest.approx(1.02) and not gemv.flagged and "CUDA cores" in gemv.note
    assert failures([gemv]) == []
    (lost,) = check_point("lm_head", 1, spec=SPEC, context=1024, dtype="bf16", flops_tensor=0.0,
                          flops_total=want * 0.3)
    assert lost.ratio == 0.0 and failures([lost]) == [lost]
    pts = [{"op": "o_proj", "batch": 1, "flops_tensor": 0.0, "flops_executed": gemm_flops(SPEC, "o_proj", 1)}]
    assert failures(check_points(pts, SPEC, 1024, "bf16")) == []
