"""NVTX ranges of the engine's step (``decode/`` > ``layer{i}/`` > ``{op}/``), only-layer-k, and the op timer."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gpuprobe.engine import Engine
from gpuprobe.engine.nvtx import NullBackend, OpTimer, RecordingBackend, Ranges, get_backend, use_backend
from gpuprobe.ops import OPS, STEP_OPS, is_known
from gpuprobe.specs import get_model

LAYER_OPS = ["input_norm", "qkv_proj", "rope", "kv_write", "attention", "o_proj", "residual_add", "post_norm",
             "gate_up_proj", "act", "down_proj", "residual_add"]
#: Fused kernels: the adds run inside the norms, RoPE inside kv_write; those ranges are not pushed.
FUSED_LAYER_OPS = ["input_norm", "qkv_proj", "kv_write", "attention", "o_proj", "post_norm", "gate_up_proj", "act",
                   "down_proj"]


def _spec(family: str):
    base = {"qwen2": "qwen2-0.5b", "opt": "opt-1.3b"}[family]
    return dataclasses.replace(get_model(base).with_layers(3), hidden_size=64, num_heads=4,
                               num_kv_heads=4 if family == "opt" else 2, head_dim=16, intermediate_size=96,
                               vocab_size=97)


def expected_paths(layers, ops) -> list[str]:
    paths = ["decode/", "decode/embed/"]
    for i in layers:
        paths.append(f"decode/layer{i}/")
        paths += [f"decode/layer{i}/{op}/" for op in ops]
    return paths + ["decode/final_norm/", "decode/lm_head/", "decode/sample/"]


@pytest.mark.parametrize("kernels,ops", [("unfused", LAYER_OPS), ("fused", FUSED_LAYER_OPS)])
def test_step_ranges_are_named_and_nested_as_documented(kernels, ops):
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch", kernels=kernels)
    batch = eng.prepare(2, 5)
    rec = RecordingBackend()
    with use_backend(rec):
        eng.step(batch, nvtx=True)
    assert rec.paths == expected_paths(range(3), ops)
    assert rec.balanced
    assert all(is_known(name) or name.startswith("layer") or name == "decode" for _, name in rec.events)


@pytest.mark.parametrize("kernels,ops", [("unfused", LAYER_OPS), ("fused", FUSED_LAYER_OPS)])
def test_opt_has_no_rope_range(kernels, ops):
    eng = Engine.from_spec(_spec("opt"), dtype="fp32", device="cpu", attention="torch", kernels=kernels)
    rec = RecordingBackend()
    with use_backend(rec):
        eng.step(eng.prepare(1, 3), nvtx=True)
    assert rec.paths == expected_paths(range(3), [op for op in ops if op != "rope"])


@pytest.mark.parametrize("kernels,ops", [("unfused", LAYER_OPS), ("fused", FUSED_LAYER_OPS)])
def test_only_layer_k_is_annotated(kernels, ops):
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch", kernels=kernels)
    rec = RecordingBackend()
    with use_backend(rec):
        eng.step(eng.prepare(2, 5), nvtx=True, layers=[1])
    assert rec.paths == expected_paths([1], ops)
    assert rec.balanced


def test_no_ranges_unless_asked():
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch")
    rec = RecordingBackend()
    with use_backend(rec):
        eng.step(eng.prepare(1, 3))
        eng.generate([[1, 2, 3]], 3)
    assert rec.events == []


def test_ranges_balanced_when_the_step_raises(monkeypatch):
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch")
    batch = eng.prepare(1, 3)

    def broken(*a, **k):
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(eng.backend, "decode", broken)
    rec = RecordingBackend()
    with use_backend(rec), pytest.raises(RuntimeError, match="kernel failed"):
        eng.step(batch, nvtx=True)
    assert rec.balanced and rec.paths[-1] == "decode/layer0/attention/"


def test_default_backend_is_usable():
    backend = get_backend()
    backend.push("decode")
    backend.pop()
    assert not isinstance(backend, RecordingBackend)


@pytest.mark.parametrize("kernels", ["unfused", "fused"])
def test_op_timer_times_every_op_of_every_layer(kernels):
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch", kernels=kernels)
    times = eng.time_step(eng.prepare(2, 9), warmup=1)
    absent = {"rope", "residual_add"} if kernels == "fused" else set()
    assert set(times.per_op) == set(OPS) - absent
    assert sum(1 for op, layer, _ in times.records if op == "qkv_proj") == 3
    assert sum(1 for op, layer, _ in times.records if op == "residual_add") == (0 if absent else 6)
    assert all(layer is None for op, layer, _ in times.records if op in STEP_OPS)
    assert times.step_s > 0 and 0 < sum(times.per_op.values()) <= times.step_s * 1.001
    assert abs(sum(times.shares().values()) - sum(times.per_op.values()) / times.step_s) < 1e-9


def test_timer_and_layer_filter_are_independent():
    """With only layer 2 annotated, the timer still sees every layer."""
    eng = Engine.from_spec(_spec("qwen2"), dtype="fp32", device="cpu", attention="torch")
    timer, rec = OpTimer("cpu"), RecordingBackend()
    eng.step(eng.prepare(1, 3), ranges=Ranges(nvtx=True, layers=[2], timer=timer, backend=rec))
    assert {layer for op, layer, _ in timer.result().records if op == "attention"} == {0, 1, 2}
    assert [p for p in rec.paths if p.endswith("attention/")] == ["decode/layer2/attention/"]


def test_null_backend_and_ranges_disabled_cost_nothing():
    r = Ranges()
    assert not r.active and r.op("qkv_proj", 0) is r.step()
    NullBackend().push("x")
    assert torch.is_tensor(torch.ones(1))
