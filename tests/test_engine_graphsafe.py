"""The decode step is CUDA-graph safe by construction, checked on a CPU: the same buffers every step, no
host synchronisation inside the step, repeatable (warm-up and capture are harmless); large configs
plan on the meta device without allocating."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gpuprobe.engine import Engine
from gpuprobe.engine.kvcache import page_bytes
from gpuprobe.errors import NotAvailable
from gpuprobe.specs import get_model

TINY = dataclasses.replace(get_model("qwen2-0.5b").with_layers(2), hidden_size=64, num_heads=4, num_kv_heads=2,
                           head_dim=16, intermediate_size=96, vocab_size=97)
BUFFERS = ("tokens", "next_tokens", "positions", "context_lens", "slot_mapping", "block_table", "dense_mask")


def _ptrs(batch) -> dict[str, int]:
    out = {n: getattr(batch, n).data_ptr() for n in BUFFERS if getattr(batch, n) is not None}
    out["cache"] = (batch.cache.pool if batch.cache is not None else batch.dense).data_ptr()
    return out


class _HostSync(AssertionError):
    pass


@pytest.mark.parametrize("kernels", ["fused", "unfused"])
@pytest.mark.parametrize("attention", ["torch", "sdpa-dense", "triton"])
def test_step_keeps_buffers_and_never_syncs(attention, kernels, monkeypatch):
    if attention == "triton" or kernels == "fused":
        pytest.importorskip("triton")
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention=attention, page_size=4, kernels=kernels)
    batch = eng.new_batch([3, 9, 6], [16, 16, 16])
    eng.start(batch, [[1, 2, 3], list(range(10, 19)), [5] * 6])
    before = _ptrs(batch)

    def boom(*a, **k):
        raise _HostSync("host synchronisation")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "numpy"):
            m.setattr(torch.Tensor, name, boom)
        for _ in range(4):  # steps and advances (page boundaries crossed) never touch the host
            eng.step(batch)
            batch.advance()
    assert _ptrs(batch) == before
    assert batch.lens == [7, 13, 10]


def test_patched_item_does_fire():
    """The patch above is real: a .item() under it raises."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch.Tensor, "item", lambda *a: (_ for _ in ()).throw(_HostSync("x")))
        with pytest.raises(_HostSync):
            torch.ones(1).item()


@pytest.mark.parametrize("kernels", ["fused", "unfused"])
@pytest.mark.parametrize("attention", ["torch", "sdpa-dense"])
def test_step_is_repeatable(attention, kernels):
    """Running the step twice (graph warm-up, capture) gives the same result and state."""
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention=attention, kernels=kernels)
    batch = eng.prepare(3, 21)
    a = eng.step(batch).clone()
    tok = batch.next_tokens.clone()
    cache = (batch.cache.pool if batch.cache is not None else batch.dense).clone()
    b = eng.step(batch)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(tok, batch.next_tokens)
    assert torch.equal(cache, batch.cache.pool if batch.cache is not None else batch.dense)


def test_graph_capture_needs_cuda():
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch")
    with pytest.raises(NotAvailable, match="CUDA"):
        eng.capture(eng.prepare(1, 4))


@pytest.mark.parametrize("kernels", ["fused", "unfused"])
def test_qwen2_7b_batch_512_plans_on_meta(kernels):
    spec = get_model("qwen2-7b")
    eng = Engine.from_spec(spec, dtype="bf16", device="meta", attention="torch", kernels=kernels)
    assert all(p.device.type == "meta" for p in eng.model.parameters())
    assert eng.weights_bytes == spec.weight_bytes(2)
    plan = eng.plan(512, 1024)
    pages = 512 * -(-1025 // 16)
    assert plan.kv_cache_bytes == pages * page_bytes(spec, 16, torch.bfloat16)
    assert plan.kv_cache_bytes > 30e9  # 512 x 1040 slots x 56 KiB per token, never allocated here
    batch = eng.prepare(512, 1024)  # allocates on meta only
    assert batch.cache.pool.device.type == "meta" and batch.kv_bytes == plan.kv_cache_bytes
    logits = eng.step(batch)  # the whole step traces through on meta: every shape is consistent
    assert logits.shape == (512, spec.vocab_size) and logits.device.type == "meta"
    dense = Engine.from_spec(spec, dtype="bf16", device="meta", attention="sdpa-dense", kernels=kernels)
    assert dense.plan(512, 1024).kv_cache_bytes == 512 * 1025 * spec.kv_bytes_per_token(2)
    assert dense.step(dense.prepare(512, 1024)).shape == (512, spec.vocab_size)
