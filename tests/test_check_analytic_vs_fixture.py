"""The foundation's selftest check: analytic bytes against real H100 counters."""
import pytest

from gpuprobe.tools.selftest.checks import foundation
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed


def test_attention_and_qkv_reads_match_counters(tmp_path):
    figs = foundation.analytic_vs_fixture(CheckContext(tmp_path, gpu=False, budget_s=60))
    # KV-cache bytes dominate attention's reads: the counters see them within 1% (cold caches).
    assert 1.0 <= figs["attention_read_ratio"] < 1.01
    assert 1.0 <= figs["qkv_proj_read_ratio"] < 1.02


def test_check_fails_when_the_model_disagrees(tmp_path, monkeypatch):
    monkeypatch.setattr(foundation, "READ_RATIO_RANGE", (1.05, 1.10))
    with pytest.raises(CheckFailed) as e:
        foundation.analytic_vs_fixture(CheckContext(tmp_path, gpu=False, budget_s=60))
    assert "attention_read_ratio" in e.value.figures
