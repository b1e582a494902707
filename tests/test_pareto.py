"""The Pareto frontier of throughput against joules per token (and latency)."""
from __future__ import annotations

from gpuprobe.advise.pareto import ENERGY_LATENCY_OBJECTIVES, dominates, pareto_front, pareto_mask
from gpuprobe.render.plots.pareto import plot_pareto

CONFIGS = [
    {"label": "1x512", "tokens_per_s": 100_000, "joules_per_token": 0.0060, "step_latency_s": 0.0050},
    {"label": "2x128", "tokens_per_s": 120_000, "joules_per_token": 0.0055, "step_latency_s": 0.0021},
    {"label": "4x128", "tokens_per_s": 130_000, "joules_per_token": 0.0058, "step_latency_s": 0.0040},
    {"label": "4x128 mps", "tokens_per_s": 110_000, "joules_per_token": 0.0070, "step_latency_s": 0.0045},
    {"label": "1x64", "tokens_per_s": 40_000, "joules_per_token": 0.0050, "step_latency_s": 0.0016},
]


def test_frontier_of_throughput_and_energy():
    assert pareto_mask(CONFIGS) == [False, True, True, False, True]
    assert [c["label"] for c in pareto_front(CONFIGS)] == ["4x128", "2x128", "1x64"]


def test_latency_as_a_third_objective():
    mask = pareto_mask(CONFIGS, ENERGY_LATENCY_OBJECTIVES)
    assert mask == [False, True, True, False, True]
    fast_but_hungry = {"tokens_per_s": 100_000, "joules_per_token": 0.0065, "step_latency_s": 0.0010}
    assert pareto_mask(CONFIGS + [fast_but_hungry], ENERGY_LATENCY_OBJECTIVES)[-1] is True
    assert pareto_mask(CONFIGS + [fast_but_hungry])[-1] is False


def test_equal_configurations_are_both_optimal_and_missing_figures_are_left_out():
    a = {"tokens_per_s": 10, "joules_per_token": 1.0}
    assert pareto_mask([a, dict(a)]) == [True, True]
    assert pareto_mask([a, {"tokens_per_s": 99, "joules_per_token": None}]) == [True, None]
    assert dominates((2, -1), (1, -1)) and not dominates((1, -1), (1, -1))


def test_plot(tmp_path):
    p = plot_pareto(CONFIGS, tmp_path / "pareto.png")
    assert p.stat().st_size > 10_000
