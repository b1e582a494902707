"""``gpuprobe.instrument`` on Hugging Face models: ranges named as documented, balanced (also when the
forward raises), removable."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import gpuprobe  # noqa: E402
from engine_helpers import hf_model  # noqa: E402
from gpuprobe.engine.instrument import classify_module  # noqa: E402
from gpuprobe.engine.nvtx import RecordingBackend  # noqa: E402


@pytest.fixture(scope="module")
def qwen():
    return hf_model("qwen2", attn_implementation="sdpa")


def _run(model, rec, tokens=(1, 2, 3, 4)):
    with torch.no_grad():
        return model(torch.tensor([list(tokens)]))


def test_qwen2_ranges_named_as_documented(qwen):
    rec = RecordingBackend()
    with gpuprobe.instrument(qwen, backend=rec) as handle:
        _run(qwen, rec)
    assert rec.balanced
    paths = set(rec.paths)
    for i in (0, 1):
        a = f"decode/layer{i}/attn_block/"
        assert {f"decode/layer{i}/", f"decode/layer{i}/input_norm/", a, a + "qkv_proj/", a + "o_proj/",
                a + "attention/", f"decode/layer{i}/post_norm/", f"decode/layer{i}/mlp/",
                f"decode/layer{i}/mlp/gate_up_proj/", f"decode/layer{i}/mlp/act/",
                f"decode/layer{i}/mlp/down_proj/"} <= paths
    assert {"decode/", "decode/embed/", "decode/rope/", "decode/final_norm/", "decode/lm_head/"} <= paths
    assert sum(p == "decode/layer0/attn_block/qkv_proj/" for p in rec.paths) == 3  # q, k, v modules
    assert handle.names["model.layers.1.mlp.up_proj"] == "gate_up_proj"
    assert all(p.startswith("decode/") for p in rec.paths)


def test_opt_norms_and_fc_layers(tmp_path):
    opt = hf_model("opt", attn_implementation="sdpa")
    rec = RecordingBackend()
    with gpuprobe.instrument(opt, backend=rec) as handle:
        _run(opt, rec)
    assert rec.balanced
    assert handle.names["model.decoder.layers.0.final_layer_norm"] == "post_norm"
    assert handle.names["model.decoder.layers.0.self_attn_layer_norm"] == "input_norm"
    assert handle.names["model.decoder.final_layer_norm"] == "final_norm"
    assert handle.names["model.decoder.layers.1.fc1"] == "gate_up_proj"
    assert handle.names["model.decoder.layers.1.fc2"] == "down_proj"
    assert handle.names["model.decoder.layers.1.self_attn.out_proj"] == "o_proj"
    assert handle.names["model.decoder.embed_positions"] == "embed"
    assert "decode/layer1/attn_block/attention/" in rec.paths


def test_balanced_when_forward_raises(qwen, monkeypatch):
    rec = RecordingBackend()
    handle = gpuprobe.instrument(qwen, backend=rec)
    down = qwen.model.layers[1].mlp.down_proj

    def broken(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(down, "forward", broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            _run(qwen, rec)
    finally:
        handle.remove()
    assert rec.balanced
    assert rec.paths[-1] == "decode/layer1/mlp/down_proj/"


def test_remove_takes_every_hook_and_the_wrapper_away(qwen):
    original = F.scaled_dot_product_attention
    rec = RecordingBackend()
    handle = gpuprobe.instrument(qwen, backend=rec)
    assert F.scaled_dot_product_attention is not original
    handle.remove()
    assert F.scaled_dot_product_attention is original
    _run(qwen, rec)
    assert rec.events == []
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in qwen.modules())


def test_outputs_unchanged_by_instrumentation(qwen):
    before = _run(qwen, None).logits
    with gpuprobe.instrument(qwen, backend=RecordingBackend()):
        during = _run(qwen, None).logits
    torch.testing.assert_close(before, during, rtol=0, atol=0)


def test_engine_model_classifies_into_its_own_op_names():
    """The engine's own modules use the contract names, so instrument() agrees with its ranges."""
    import dataclasses

    from gpuprobe.engine import Engine
    from gpuprobe.specs import get_model

    spec = dataclasses.replace(get_model("qwen2-0.5b").with_layers(1), hidden_size=64, num_heads=4,
                               num_kv_heads=2, head_dim=16, intermediate_size=96, vocab_size=97)
    eng = Engine.from_spec(spec, dtype="fp32", device="cpu", attention="torch")
    names = {p: classify_module(p, m) for p, m in eng.model.named_modules()}
    assert names["layers.0.qkv_proj"] == "qkv_proj" and names["layers.0.gate_up_proj"] == "gate_up_proj"
    assert names["layers.0.input_norm"] == "input_norm" and names["layers.0.post_norm"] == "post_norm"
    assert names["final_norm"] == "final_norm" and names["embed"] == "embed" and names["layers.0"] == "layer0"
