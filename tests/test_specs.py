"""Model and GPU registries: published parameter counts, config.json loading, detection fallbacks."""
import json

import pytest

from gpuprobe.errors import UserError
from gpuprobe.specs import get_gpu, get_model, list_gpus, list_models, load_model_spec

# Published totals (model cards / safetensors metadata), tied embeddings counted once.
PUBLISHED = {
    "qwen2-0.5b": 494_032_768,
    "qwen2-1.5b": 1_543_714_304,
    "qwen2-7b": 7_615_616_512,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "opt-1.3b": 1_315_758_080,
    "opt-6.7b": 6_658_473_984,
}


@pytest.mark.parametrize("name,count", PUBLISHED.items())
def test_parameter_counts_match_published(name, count):
    assert get_model(name).num_params() == count


def test_registry_has_every_required_model():
    required = {"qwen2-0.5b", "qwen2-1.5b", "qwen2-7b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b",
                "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "opt-1.3b", "opt-2.7b", "opt-6.7b"}
    assert required <= {m.name for m in list_models()}


def test_gqa_shapes():
    s = get_model("qwen2-0.5b")
    assert (s.num_heads, s.num_kv_heads, s.head_dim, s.gqa_group) == (14, 2, 64, 7)
    assert s.qkv_size == 896 + 2 * 128
    assert get_model("opt-1.3b").gqa_group == 1


def test_unknown_model_names_close_ones():
    with pytest.raises(UserError, match="qwen2-0.5b"):
        get_model("qwen2-05b")


def test_gpu_registry_and_driver_names():
    assert {"h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l40s", "l4", "a10g", "rtx-4090"} <= {
        g.name for g in list_gpus()}
    assert get_gpu("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert get_gpu("NVIDIA H100 PCIe").name == "h100-pcie"
    assert get_gpu("NVIDIA H200").name == "h200"
    with pytest.raises(UserError, match="gpuprobe gpus"):
        get_gpu("tpu-v5")


def _hf_config(model_type, **kw):
    return dict(model_type=model_type, **kw)


def test_load_qwen2_config_json(tmp_path):
    cfg = _hf_config("qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                     tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-6)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(str(tmp_path))
    assert spec.num_params() == PUBLISHED["qwen2-0.5b"]
    assert spec.qkv_bias and spec.family == "qwen2"


def test_load_opt_and_llama_config_json(tmp_path):
    opt = _hf_config("opt", hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=2048,
                     do_layer_norm_before=True, enable_bias=True)
    (tmp_path / "config.json").write_text(json.dumps(opt))
    assert load_model_spec(tmp_path).num_params() == PUBLISHED["opt-1.3b"]
    llama = _hf_config("llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                       tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072)
    (tmp_path / "config.json").write_text(json.dumps(llama))
    assert load_model_spec(tmp_path).num_params() == PUBLISHED["llama-3.2-1b"]


@pytest.mark.parametrize("content,match", [
    ("{not json", "cannot read"),
    ('{"model_type": "bert"}', "supported families"),
    ('{"model_type": "qwen2", "hidden_size": 8}', "lacks the field"),
])
def test_bad_config_json(tmp_path, content, match):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(UserError, match=match):
        load_model_spec(tmp_path)


def test_missing_config_folder(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model_spec(str(tmp_path / "nowhere/"))


def test_transformers5_rope_parameters_are_read(tmp_path):
    cfg = _hf_config("llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=100,
                     rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(tmp_path)
    assert spec.rope_theta == 500000.0 and spec.rope_scaling["factor"] == 32.0
    cfg = _hf_config("qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=100, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(tmp_path)
    assert spec.rope_theta == 1e6 and spec.rope_scaling is None
