"""The registry's newer families against transformers (float32, CPU, nothing downloaded).

- Mistral (MistralForCausalLM), SmolLM2 (LlamaForCausalLM, tied embeddings, an odd head count) and Phi-3
  (Phi3ForCausalLM, whose checkpoint stores ``qkv_proj`` and ``gate_up_proj`` fused) as tiny random models,
  saved as safetensors and loaded through the engine's local-folder loader: the same prefill and decode
  logits (within the engine tests' tolerance) and the same greedy tokens.
- Every registry model's parameter count equals that of transformers' own model class built from the
  same config values on the meta device (no weights, no download).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from engine_helpers import assert_logits_match, drop_tensor, hf_greedy  # noqa: E402
from gpuprobe import Engine  # noqa: E402
from gpuprobe.specs import get_model, list_models  # noqa: E402
from gpuprobe.specs.models import ModelSpec  # noqa: E402

VOCAB = 211
PROMPTS = [[3, 17, 5, 9, 120, 44, 7], [11, 2, 99, 150, 8, 61, 33, 27, 190, 4, 13, 71, 6], [42, 200]]
STEPS = 5
TOL = 1e-4  # as in test_engine_hf.py

TINY_FAMILIES = ("mistral", "smollm2", "phi3")


def tiny_config(family: str):
    """A small config of the family with the shape features of its published models."""
    from transformers import LlamaConfig, MistralConfig, Phi3Config

    if family == "mistral":  # GQA 4:1... here 4:2, untied, plain RoPE; its window is longer than any prompt
        return MistralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=96, vocab_size=VOCAB, rope_theta=10000.0, sliding_window=4096,
                             max_position_embeddings=256, tie_word_embeddings=False)
    if family == "smollm2":  # an odd head count with GQA (135M: 9 heads, 3 KV heads), tied embeddings
        return LlamaConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
                           intermediate_size=128, vocab_size=VOCAB, rope_theta=100000.0, tie_word_embeddings=True,
                           max_position_embeddings=256, rms_norm_eps=1e-5)
    if family == "phi3":  # fused qkv_proj / gate_up_proj in the checkpoint; GQA so the qkv split is exercised
        return Phi3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=96, vocab_size=VOCAB, rope_theta=10000.0, max_position_embeddings=256,
                          original_max_position_embeddings=256, sliding_window=None, tie_word_embeddings=False,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0):
    """Random weights large enough that greedy tokens vary."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    ref = tiny_model(request.param)
    ref.save_pretrained(folder, safe_serialization=True)
    return request.param, folder, ref


def test_checkpoint_names_and_spec(family_dir):
    """The saved checkpoint has the family's own tensor names; the spec maps it onto the llama layout."""
    from safetensors import safe_open

    family, folder, _ = family_dir
    keys = set()
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys |= set(h.keys())
    fused = {"model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.mlp.gate_up_proj.weight"}
    if family == "phi3":
        assert fused <= keys and "model.layers.0.self_attn.q_proj.weight" not in keys
    else:
        assert not fused & keys and "model.layers.0.self_attn.q_proj.weight" in keys
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu", attention="torch", page_size=4)
    assert eng.checkpoint is not None and eng.spec.family == "llama"
    assert eng.spec.model_type == {"mistral": "mistral", "smollm2": "llama", "phi3": "phi3"}[family]
    assert eng.spec.tie_word_embeddings == (family == "smollm2")


@pytest.mark.parametrize("attention", ["torch", "sdpa-dense"])
def test_prefill_and_decode_logits_match_transformers(family_dir, attention):
    family, folder, ref = family_dir
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu", attention=attention, page_size=4)
    assert_logits_match(eng, ref, PROMPTS, STEPS, TOL, f"{family}/{attention}")


def test_generate_equals_transformers_greedy(family_dir):
    family, folder, ref = family_dir
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu", attention="torch", page_size=4)
    assert eng.generate(PROMPTS, 6) == [hf_greedy(ref, p, 6) for p in PROMPTS]


def test_fused_checkpoint_with_a_missing_tensor_is_a_clear_error(tmp_path):
    from gpuprobe.errors import UserError

    tiny_model("phi3").save_pretrained(tmp_path, safe_serialization=True)
    drop_tensor(tmp_path, "model.layers.1.mlp.gate_up_proj.weight")
    with pytest.raises(UserError, match="gate_proj"):
        Engine.from_pretrained(tmp_path, dtype="fp32", device="cpu")


# ---- parameter counts: the spec against transformers' own classes ----------------------------------------
def hf_config_of(spec: ModelSpec):
    """The Hugging Face config a registry spec stands for (its published values, as the spec holds them)."""
    from transformers import LlamaConfig, MistralConfig, OPTConfig, Phi3Config, Qwen2Config

    common = dict(hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                  num_attention_heads=spec.num_heads, vocab_size=spec.vocab_size,
                  max_position_embeddings=spec.max_position_embeddings,
                  tie_word_embeddings=spec.tie_word_embeddings)
    if spec.model_type == "opt":
        return OPTConfig(**common, ffn_dim=spec.intermediate_size, word_embed_proj_dim=spec.hidden_size)
    gqa = dict(common, num_key_value_heads=spec.num_kv_heads, intermediate_size=spec.intermediate_size)
    if spec.model_type == "qwen2":
        return Qwen2Config(**gqa)
    if spec.model_type == "mistral":
        return MistralConfig(**gqa, sliding_window=spec.sliding_window)
    if spec.model_type == "phi3":
        return Phi3Config(**gqa, pad_token_id=0)
    return LlamaConfig(**gqa, head_dim=spec.head_dim)


@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_param_count_equals_transformers_on_meta(name):
    from transformers import AutoModelForCausalLM

    spec = get_model(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config_of(spec))
    assert sum(p.numel() for p in model.parameters()) == spec.num_params()  # tied weights counted once
