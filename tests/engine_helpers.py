"""Tiny random Hugging Face models of each family, saved as safetensors, for the engine tests."""
from __future__ import annotations

from pathlib import Path

import torch

FAMILIES = ("qwen2", "llama", "opt")
VOCAB = 211


def hf_config(family: str):
    from transformers import LlamaConfig, OPTConfig, Qwen2Config

    if family == "qwen2":
        return Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=96, vocab_size=VOCAB, rope_theta=5000.0, tie_word_embeddings=False,
                           max_position_embeddings=256)
    if family == "llama":  # head_dim != hidden / heads, llama3 RoPE scaling that bites at these positions
        return LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=32, intermediate_size=96, vocab_size=VOCAB, tie_word_embeddings=True,
                           rope_theta=10000.0, max_position_embeddings=256,
                           rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    if family == "opt":
        return OPTConfig(hidden_size=64, num_hidden_layers=2, ffn_dim=96, num_attention_heads=4, vocab_size=VOCAB,
                         max_position_embeddings=64, word_embed_proj_dim=64)
    raise ValueError(family)


def hf_model(family: str, seed: int = 0, attn_implementation: str = "eager"):
    """A tiny model whose weights are large enough that greedy tokens vary (and no bias is zero)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family), attn_implementation=attn_implementation).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.15)
    return model


def save_hf(family: str, folder: Path, **kwargs) -> Path:
    model = hf_model(family)
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    return folder


def drop_tensor(folder: Path, name: str) -> None:
    """Remove tensor ``name`` from the safetensors file of a saved model folder (a broken checkpoint)."""
    from safetensors.torch import load_file, save_file

    f = next(folder.glob("*.safetensors"))
    tensors = load_file(f)
    tensors.pop(name)
    save_file(tensors, f)


def hf_greedy(model, prompt: list[int], new: int) -> list[int]:
    """Greedy continuation by full recomputation (no cache): the plainest reference."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def engine_checks_on_cpu(monkeypatch, model_dir, bandwidth: float):
    """The engine's selftest checks module set up to run its bodies on a CPU: every engine on the CPU in
    fp32 with the unfused kernels (the interpreted Triton kernels would take minutes at the checks' batch
    256; the fused ones have their own tests), the tiny model in ``model_dir`` at context 12,
    ``bandwidth`` as the copy bandwidth."""
    from gpuprobe.measure import throughput as tp
    from gpuprobe.engine.engine import Engine
    from gpuprobe.tools.selftest.checks import engine as checks

    real = Engine.from_pretrained.__func__
    monkeypatch.setattr(Engine, "from_pretrained",
                        classmethod(lambda cls, name, **kw: real(cls, name, **{**kw, "device": "cpu", "dtype": "fp32",
                                                                                  "kernels": "unfused"})))
    monkeypatch.setattr(checks, "require_cuda", lambda: torch)
    monkeypatch.setattr(checks, "MODEL", str(model_dir))
    monkeypatch.setattr(checks, "CONTEXT", 12)
    monkeypatch.setattr(tp, "copy_bandwidth", lambda: (bandwidth, "test figure"))
    return checks


def assert_checks_skip_without_cuda(tmp_path: Path, *checks) -> None:
    """Each selftest check body raises ``Skip`` naming CUDA on a machine without a GPU (the test is skipped
    where there is one: the checks run for real there)."""
    import pytest

    from gpuprobe.tools.selftest.registry import CheckContext, Skip

    if torch.cuda.is_available():
        pytest.skip("runs for real on a GPU")
    ctx = CheckContext(out_dir=tmp_path, gpu=False, budget_s=60)
    for fn in checks:
        with pytest.raises(Skip, match="CUDA"):
            fn(ctx)


def assert_logits_match(eng, ref, prompts, steps: int, tol: float, label: str, distinct_tokens: bool = True) -> None:
    """The engine's prefill logits (one ragged batch) and ``steps`` decode steps through its paged cache
    against ``ref`` (a transformers model) recomputing each sequence in full: logits within ``tol``, the
    same greedy tokens; ``distinct_tokens``: the sequences do not all decode the same tokens."""
    lens = [len(p) for p in prompts]
    batch = eng.new_batch(lens, [n + steps + 1 for n in lens])
    logits = eng.prefill(batch, prompts, all_logits=True)  # [B, T, V]
    with torch.no_grad():
        for b, p in enumerate(prompts):
            want = ref(torch.tensor([p])).logits[0]
            assert (logits[b, : len(p)] - want).abs().max().item() < tol, f"{label}: prefill logits"
    eng.release(batch)

    batch = eng.new_batch(lens, [n + steps + 1 for n in lens])
    eng.start(batch, prompts)
    seqs = [list(p) + [int(t)] for p, t in zip(prompts, batch.next_tokens.tolist())]
    worst = 0.0
    for step in range(steps):
        out = eng.step(batch)
        with torch.no_grad():
            for b, seq in enumerate(seqs):
                want = ref(torch.tensor([seq])).logits[0, -1]
                worst = max(worst, (out[b] - want).abs().max().item())
                assert int(batch.next_tokens[b]) == int(want.argmax()), f"{label}: greedy token"
        for b, t in enumerate(batch.next_tokens.tolist()):
            seqs[b].append(int(t))
        if step < steps - 1:
            batch.advance()
    assert worst < tol, f"{label}: decode logits differ by {worst}"
    if distinct_tokens:
        assert len({tuple(s[-steps:]) for s in seqs}) > 1, f"{label}: degenerate tokens"
