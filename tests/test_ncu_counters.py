"""Counter FLOPs and bytes (docs/contracts.md section 3) on the real H100 fixtures."""
from __future__ import annotations

import math

import pytest

from _ncu_data import B32_BASE, B32_REP, B32_SOL, B64_DETAILS, B64_RAW, loaded
from gpuprobe.ncu.counter_roofline import check_attention_reads, kernel_table, op_table, report_peaks

B, C, H, NH, NKV, HD, I = 64, 1024, 896, 14, 2, 64, 4864


def _kernels(name):
    return loaded(name).set_index("id")


def test_tensor_flops_are_exact_for_projections_and_show_padding():
    df = _kernels(B64_RAW)
    qkv, o = 2 * B * H * (NH + 2 * NKV) * HD, 2 * B * (NH * HD) * H
    assert df.loc[0, "flops_tensor"] == qkv  # exactly 2MNK
    assert df.loc[2, "flops_tensor"] == o
    assert df.loc[4, "flops_tensor"] / (2 * B * H * 2 * I) == pytest.approx(1.03, abs=0.01)  # gate_up padded
    assert df.loc[7, "flops_tensor"] / (2 * B * I * H) == pytest.approx(1.17, abs=0.01)  # down_proj padded
    useful_attention = 2 * 2 * B * NH * C * HD
    assert df.loc[1, "flops_tensor"] / useful_attention == pytest.approx(2.29, abs=0.01)  # GQA 7 -> 16


def test_fp32_flops_from_counts_and_from_rates_agree():
    """The SOL report holds FP32 instructions only as rates; rate x cycles gives the other run's exact counts."""
    counts, rates = _kernels(B32_BASE), _kernels(B32_SOL)
    assert counts.loc[1, "flops_fp32"] == 1_458_176 + 2_179_072 + 2 * 65_536
    assert rates["flops_fp32"].tolist() == pytest.approx(counts["flops_fp32"].tolist(), rel=1e-4, abs=1.0)


def test_missing_counters_are_missing_not_guessed():
    df = loaded(B32_BASE)  # has tensor instruction counts, not tensor ops
    assert df["flops_tensor"].isna().all() and df["flops"].isna().all()
    assert df["sm__inst_executed_pipe_tensor.sum"].max() > 0
    assert "sm__ops_path_tensor_src_*.sum" in df.attrs["missing"]
    sol = loaded(B32_SOL)  # total DRAM bytes from the rate, reads and writes unknown
    assert sol["dram_read_bytes"].isna().all() and sol["dram_bytes"].notna().all()
    assert sol["dram_bytes"].tolist() == pytest.approx(loaded(B32_REP)["dram_bytes"].tolist(), rel=0.01)
    ops = op_table(kernel_table(df))
    assert ops["flops"].isna().all() and math.isnan(ops["intensity"][0])


def test_report_peaks():
    p = report_peaks(loaded(B64_RAW))
    assert p["dram"] == pytest.approx(1280 * 2.6e9, rel=0.01)  # 3.33 TB/s
    assert 0.95e15 < p["tensor_bf16"] < 1.1e15  # dense HGMMA peak at the clocks seen
    assert 55e12 < p["fp32"] < 70e12
    assert report_peaks(loaded(B64_DETAILS)) == {}


@pytest.mark.parametrize("name, batch, context, ratio", [(B64_RAW, 64, 1024, 1.004), (B32_BASE, 32, 512, 1.009)])
def test_attention_dram_reads_match_analytic_kv_bytes(name, batch, context, ratio):
    from gpuprobe.analytic import decode_costs
    from gpuprobe.specs.models import get_model

    df = loaded(name)
    layers = int(df["layer"].nunique())
    spec = get_model("qwen2-0.5b").with_layers(layers)
    kv = next(c for c in decode_costs(spec, batch, context, "bf16") if c.op == "attention").kv_read_bytes
    got = check_attention_reads(op_table(kernel_table(df)), kv)
    assert got["read_ratio"] == pytest.approx(ratio, abs=0.001)
    assert got["dram_write_bytes"] is not None  # writes kept apart, not compared with reads
