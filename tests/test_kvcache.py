"""Page-table bookkeeping of the paged KV cache: allocation, freeing, exhaustion, block tables, slots."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gpuprobe.engine import Engine
from gpuprobe.engine.kvcache import KVCacheFull, PageAllocator, PagedKVCache, page_bytes, resolve_budget
from gpuprobe.errors import UserError
from gpuprobe.kernels.reference import gather_kv
from gpuprobe.specs import get_model

TINY = dataclasses.replace(get_model("qwen2-0.5b").with_layers(2), hidden_size=64, num_heads=4, num_kv_heads=2,
                           head_dim=16, intermediate_size=96, vocab_size=97)


def test_allocator_hands_out_distinct_pages_and_takes_them_back():
    a = PageAllocator(8, 16)
    x, y = a.allocate(3), a.allocate(5)
    assert sorted(x + y) == list(range(8)) and a.num_free == 0 and a.num_used == 8
    a.free(x)
    assert a.num_free == 3
    assert sorted(a.allocate(3)) == sorted(x)


def test_exhaustion_is_a_clear_error_and_allocates_nothing():
    a = PageAllocator(4, 16)
    a.allocate(3)
    with pytest.raises(KVCacheFull, match=r"2 pages needed, 1 of 4 free .*raise kv_budget"):
        a.allocate(2)
    assert a.num_free == 1
    assert issubclass(KVCacheFull, UserError)


def test_double_free_is_an_error():
    a = PageAllocator(4, 16)
    pages = a.allocate(2)
    a.free(pages)
    with pytest.raises(ValueError, match="double free"):
        a.free(pages)


def test_block_table_slots_and_reserve():
    cache = PagedKVCache(TINY, num_pages=10, page_size=4, dtype=torch.float32)
    s1, s2 = cache.new_sequence(9), cache.new_sequence(2)  # 3 pages, 1 page
    assert len(s1.pages) == 3 and len(s2.pages) == 1
    table = cache.block_table([s1, s2], max_pages=4)
    assert table.dtype == torch.int32 and table.shape == (2, 4)
    assert table[0, :3].tolist() == s1.pages and table[1].tolist() == [s2.pages[0], 0, 0, 0]
    assert cache.slots(s1, 3, 6) == [s1.pages[0] * 4 + 3, s1.pages[1] * 4, s1.pages[1] * 4 + 1]
    cache.reserve(s2, 7)
    assert len(s2.pages) == 2 and cache.allocator.num_used == 5
    cache.free(s1)
    assert cache.allocator.num_used == 2 and s1.pages == []
    assert cache.k(1).shape == (10, 4, 2, 16) and cache.k(1).data_ptr() != cache.v(1).data_ptr()


def test_budget_in_bytes_and_fraction():
    per_page = page_bytes(TINY, 16, torch.bfloat16)
    assert per_page == 2 * 2 * 16 * 2 * 16 * 2
    assert resolve_budget(10 * per_page + 5, TINY, 16, torch.bfloat16, torch.device("cpu")) == 10
    with pytest.raises(UserError, match="CUDA"):
        resolve_budget(0.5, TINY, 16, torch.bfloat16, torch.device("cpu"))
    with pytest.raises(KVCacheFull, match="holds no page"):
        resolve_budget(per_page - 1, TINY, 16, torch.bfloat16, torch.device("cpu"))
    with pytest.raises(UserError):
        resolve_budget(-3, TINY, 16, torch.bfloat16, torch.device("cpu"))


def test_engine_budget_exhaustion_and_release():
    per_page = page_bytes(TINY, 4, torch.float32)
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch", page_size=4, kv_budget=6 * per_page)
    assert eng.generate([[1, 2, 3], [4, 5]], 3)  # 2 + 2 pages
    assert eng.cache.num_pages == 6 and eng.cache.allocator.num_used == 0
    with pytest.raises(KVCacheFull, match="KV cache full"):
        eng.generate([[1] * 10, [2] * 10], 4)  # 4 + 4 pages > 6
    assert eng.cache.allocator.num_used == 0


def test_advance_past_reserved_capacity_raises():
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch", page_size=4)
    batch = eng.prepare(2, 5, extra_tokens=1)  # positions 5, capacity 7: one advance allowed
    batch.advance()
    with pytest.raises(KVCacheFull, match="holds 7 tokens"):
        batch.advance()


def test_ragged_paged_cache_holds_what_the_dense_cache_holds():
    """Prefill the same ragged prompts into pages (page size 4) and into a dense cache: every stored
    K/V row agrees once the pages are gathered through the block table."""
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16]]
    lens = [len(p) for p in prompts]
    paged = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch", page_size=4, seed=3)
    dense = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="sdpa-dense", seed=3)
    bp, bd = paged.new_batch(lens, [12] * 3), dense.new_batch(lens, [12] * 3)
    paged.start(bp, prompts)
    dense.start(bd, prompts)
    assert bp.block_table.shape == (3, 3)
    for layer in range(TINY.num_layers):
        for kv in (0, 1):
            pages = bp.cache.pool[layer, kv]
            got = gather_kv(pages, bp.block_table)  # [B, Hkv, 12, D]
            want = bd.dense[layer, kv]
            for b, n in enumerate(lens):
                torch.testing.assert_close(got[b, :, :n], want[b, :, :n])
    assert bp.slot_mapping.tolist() == [bp.seqs[b].pages[n // 4] * 4 + n % 4 for b, n in enumerate(lens)]
    assert bp.context_lens.tolist() == [n + 1 for n in lens]


def test_random_fill_writes_every_page():
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch")
    batch = eng.prepare(3, 40)
    assert eng.cache.num_pages == 3 * 3  # exact fit: ceil(41 / 16) pages per sequence
    assert batch.kv_bytes == eng.cache.nbytes
    assert (eng.cache.pool != 0).float().mean() > 0.99 and torch.isfinite(eng.cache.pool).all()


def test_pool_without_budget_grows_and_keeps_pages():
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch", page_size=4)
    held = eng.prepare(2, 5)  # 2 x 2 pages, still in use
    before = [eng.cache.pool[:, :, p].clone() for p in held.seqs[0].pages]
    gen = eng.cache.generation
    assert eng.generate([[1, 2, 3]] * 3, 4)  # needs more pages than the pool has
    assert eng.cache.generation == gen + 1 and eng.cache.num_pages >= 4 + 3 * 2
    for p, old in zip(held.seqs[0].pages, before):
        assert torch.equal(eng.cache.pool[:, :, p], old)
    assert eng.cache.allocator.num_used == 4
    assert eng.step(held).shape == (2, TINY.vocab_size)  # the held batch sees the grown pool


def test_random_fill_of_one_batch_leaves_other_batches_alone():
    eng = Engine.from_spec(TINY, dtype="fp32", device="cpu", attention="torch", page_size=4)
    a = eng.prepare(1, 6)
    held = eng.cache.pool[:, :, a.seqs[0].pages].clone()
    eng.cache.grow(eng.cache.num_pages + 4)
    b = eng.prepare(2, 3)  # 1 page each, filled on their own
    assert torch.equal(eng.cache.pool[:, :, a.seqs[0].pages], held)
    assert (eng.cache.pool[:, :, b.seqs[1].pages] != 0).all()
