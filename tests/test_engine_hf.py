"""The engine against Hugging Face transformers (float32, CPU): prefill logits, decode logits through the
paged cache with ragged prompts, greedy tokens, with the fused Triton kernels (interpreted here) and the
unfused PyTorch ops; HF checkpoints loaded by name, sharded too."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from engine_helpers import FAMILIES, VOCAB, assert_logits_match, drop_tensor, hf_greedy, hf_model, save_hf  # noqa: E402
from gpuprobe import Engine  # noqa: E402

PROMPTS = [[3, 17, 5, 9, 120, 44, 7], [11, 2, 99, 150, 8, 61, 33, 27, 190, 4, 13, 71, 6], [42, 200]]
STEPS = 5
TOL = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, save_hf(request.param, folder), hf_model(request.param)


@pytest.mark.parametrize("kernels", ["fused", "unfused"])
@pytest.mark.parametrize("attention", ["torch", "sdpa-dense"])
def test_prefill_and_decode_logits_match_transformers(family_dir, attention, kernels):
    family, folder, ref = family_dir
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu", attention=attention, page_size=4,
                                 kernels=kernels)
    assert eng.kernels == kernels
    assert eng.checkpoint is not None
    assert_logits_match(eng, ref, PROMPTS, STEPS, TOL, f"{family}/{attention}/{kernels}",
                        distinct_tokens=family != "opt")


@pytest.mark.parametrize("attention", ["torch", "triton"])
def test_generate_equals_transformers_greedy(family_dir, attention):
    family, folder, ref = family_dir
    want = [hf_greedy(ref, p, 6) for p in PROMPTS]
    for kernels in ("fused", "unfused") if attention == "torch" else ("fused",):
        eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu", attention=attention, page_size=4,
                                     kernels=kernels)
        assert eng.generate(PROMPTS, 6) == want, f"{family}/{attention}/{kernels}"
        assert eng.cache is not None and eng.cache.allocator.num_used == 0  # pages given back


def test_generate_with_transformers_generate(tmp_path):
    """HF's own cached generate(), not just recomputation, agrees for one family."""
    folder = save_hf("qwen2", tmp_path / "q")
    ref = hf_model("qwen2")
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu")
    for p in PROMPTS:
        out = ref.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                           max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert eng.generate([p], 4) == [out[0, len(p):].tolist()]


def test_sharded_checkpoint_loads(tmp_path):
    folder = save_hf("qwen2", tmp_path / "sharded", max_shard_size="50KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("*.safetensors"))) > 1
    ref = hf_model("qwen2")
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu")
    assert eng.generate(PROMPTS[:2], 4) == [hf_greedy(ref, p, 4) for p in PROMPTS[:2]]


def test_rope_parameters_of_transformers5_configs_are_read(tmp_path):
    folder = save_hf("llama", tmp_path / "l")
    cfg = json.loads((folder / "config.json").read_text())
    eng = Engine.from_pretrained(folder, dtype="fp32", device="cpu")
    assert eng.spec.rope_scaling and eng.spec.rope_scaling["rope_type"] == "llama3"
    theta = (cfg.get("rope_parameters") or cfg)["rope_theta"]
    assert eng.spec.rope_theta == theta


def test_missing_tensor_is_a_clear_error(tmp_path):
    from gpuprobe.errors import UserError

    folder = save_hf("qwen2", tmp_path / "broken")
    drop_tensor(folder, "model.layers.1.mlp.up_proj.weight")
    with pytest.raises(UserError, match="up_proj"):
        Engine.from_pretrained(folder, dtype="fp32", device="cpu")


def test_random_weights_stay_finite_over_many_steps():
    """Registry model width (1 layer, vocab cut), random init: bf16 logits finite and O(1) after 24 steps."""
    import dataclasses

    from gpuprobe.specs import get_model

    spec = dataclasses.replace(get_model("qwen2-0.5b").with_layers(1), vocab_size=VOCAB * 5)
    eng = Engine.from_spec(spec, dtype="bf16", device="cpu", attention="torch")
    batch = eng.prepare(2, 8, fill="prefill", extra_tokens=24)
    for _ in range(24):
        logits = eng.step(batch)
        batch.advance()
    assert torch.isfinite(logits).all()
    assert 0.1 < logits.float().std().item() < 100
