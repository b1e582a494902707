"""The paged KV cache: one pool of pages, a page allocator, and per-sequence page lists.

Layout (docs/contracts.md section 4), per layer: K and V each ``[num_pages, page_size, num_kv_heads,
head_dim]``. The pool is one allocation ``[num_layers, 2, num_pages, page_size, num_kv_heads,
head_dim]``; ``k(i)`` / ``v(i)`` are views of it. Token ``t`` of a sequence lives in page
``pages[t // page_size]``, slot ``t % page_size``; a batch's block table lists each sequence's pages
(``int32 [batch, max_pages]``, unused entries 0, never read past ``context_lens``).

The pool is sized from a budget: a fraction of free GPU memory (``0.9``), a byte count
(``2 * 2**30``), or exactly the pages a request needs. Running out raises :class:`KVCacheFull`.

Filling: a real prefill writes the K/V the model computes (``Engine.prefill``); :meth:`PagedKVCache.
random_fill` writes random values into a batch's pages (the whole pool in one kernel when it holds
them all), for sweeps where only shapes and bytes matter (the attention reads the same bytes; the tokens that come out are meaningless).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gpuprobe.errors import UserError
from gpuprobe.specs.models import ModelSpec


class KVCacheFull(UserError):
    """The pool has fewer free pages than a request needs."""


def page_bytes(spec: ModelSpec, page_size: int, dtype: torch.dtype) -> int:
    """Bytes of one page across all layers, K and V."""
    elem = dtype.itemsize
    return 2 * spec.num_layers * page_size * spec.num_kv_heads * spec.head_dim * elem


def pages_for(tokens: int, page_size: int) -> int:
    return math.ceil(tokens / page_size)


def resolve_budget(budget: float | int, spec: ModelSpec, page_size: int, dtype: torch.dtype,
                   device: torch.device) -> int:
    """Pages that fit a budget: a float in (0, 1] is a fraction of free GPU memory, an int is bytes."""
    per_page = page_bytes(spec, page_size, dtype)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise UserError(f"kv_budget must be a fraction of free GPU memory in (0, 1] or a byte count, got {budget!r}.")
    if isinstance(budget, float):
        if budget > 1:
            raise UserError(f"kv_budget {budget} is neither a fraction in (0, 1] nor an integer byte count.")
        if device.type != "cuda":
            raise UserError("a kv_budget fraction needs a CUDA device (free GPU memory); give bytes instead.")
        free, _ = torch.cuda.mem_get_info(device)
        nbytes = int(free * budget)
    else:
        nbytes = int(budget)
    pages = nbytes // per_page
    if pages < 1:
        raise KVCacheFull(f"a KV budget of {nbytes} bytes holds no page ({per_page} bytes per page of "
                          f"{page_size} tokens); give a larger kv_budget.")
    return int(pages)


class PageAllocator:
    """Free list of page ids ``0..num_pages-1``: allocate, free, count. Host-side bookkeeping only."""

    def __init__(self, num_pages: int, page_size: int) -> None:
        if num_pages < 1 or page_size < 1:
            raise ValueError("num_pages and page_size must be positive")
        self.num_pages, self.page_size = num_pages, page_size
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low ids first
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    def allocate(self, n: int) -> list[int]:
        """``n`` page ids; raises :class:`KVCacheFull` (allocating nothing) when fewer are free."""
        if n > len(self._free):
            raise KVCacheFull(
                f"KV cache full: {n} pages needed, {len(self._free)} of {self.num_pages} free "
                f"({self.page_size} tokens each); lower the batch or context, or raise kv_budget."
            )
        pages = [self._free.pop() for _ in range(n)]
        self._used.update(pages)
        return pages

    def grow(self, num_pages: int) -> None:
        """Add pages ``self.num_pages..num_pages-1`` to the free list."""
        if num_pages > self.num_pages:
            self._free[:0] = list(range(num_pages - 1, self.num_pages - 1, -1))
            self.num_pages = num_pages

    def free(self, pages: list[int]) -> None:
        """Return pages to the pool; freeing a page that is not in use is an error."""
        bad = [p for p in pages if p not in self._used]
        if bad or len(set(pages)) != len(pages):
            raise ValueError(f"pages not in use (double free?): {sorted(set(bad) or set(pages))[:8]}")
        self._used.difference_update(pages)
        self._free.extend(reversed(pages))


@dataclass
class Sequence:
    """One sequence's pages and the tokens they hold."""

    pages: list[int]
    length: int = 0

    def capacity(self, page_size: int) -> int:
        return len(self.pages) * page_size


class PagedKVCache:
    """The page pool of all layers plus its allocator."""

    def __init__(self, spec: ModelSpec, num_pages: int, page_size: int = 16,
                 dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu") -> None:
        self.spec, self.page_size, self.dtype = spec, page_size, dtype
        self.device = torch.device(device)
        self.num_pages = num_pages
        # [layers, K/V, pages, page_size, kv_heads, head_dim]; zeroed: a gather-based reader multiplies
        # masked-out slots by probability 0, and 0 * NaN from uninitialised memory would be NaN.
        self.pool = torch.zeros((spec.num_layers, 2, num_pages, page_size, spec.num_kv_heads, spec.head_dim),
                                dtype=dtype, device=self.device)
        self.allocator = PageAllocator(num_pages, page_size)
        self.generation = 0  # bumped when the pool tensor is replaced (captured graphs go stale)

    @classmethod
    def from_budget(cls, spec: ModelSpec, budget: float | int, page_size: int = 16,
                    dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cuda") -> "PagedKVCache":
        dev = torch.device(device)
        return cls(spec, resolve_budget(budget, spec, page_size, dtype, dev), page_size, dtype, dev)

    @property
    def nbytes(self) -> int:
        return self.pool.numel() * self.pool.element_size()

    def grow(self, num_pages: int) -> None:
        """Replace the pool by one of ``num_pages`` pages, keeping every page's contents and id."""
        if num_pages <= self.num_pages:
            return
        s = self.spec
        new = torch.zeros((s.num_layers, 2, num_pages, self.page_size, s.num_kv_heads, s.head_dim),
                          dtype=self.dtype, device=self.device)
        new[:, :, : self.num_pages].copy_(self.pool)
        self.pool = new
        self.allocator.grow(num_pages)
        self.num_pages = num_pages
        self.generation += 1

    def k(self, layer: int) -> torch.Tensor:
        """``[num_pages, page_size, num_kv_heads, head_dim]`` view of layer ``layer``'s keys."""
        return self.pool[layer, 0]

    def v(self, layer: int) -> torch.Tensor:
        return self.pool[layer, 1]

    def new_sequence(self, capacity_tokens: int) -> Sequence:
        """A sequence with pages for ``capacity_tokens`` tokens reserved."""
        return Sequence(self.allocator.allocate(pages_for(max(capacity_tokens, 1), self.page_size)))

    def reserve(self, seq: Sequence, tokens: int) -> None:
        """Grow ``seq``'s pages to hold ``tokens`` tokens."""
        need = pages_for(tokens, self.page_size) - len(seq.pages)
        if need > 0:
            seq.pages.extend(self.allocator.allocate(need))

    def free(self, seq: Sequence) -> None:
        self.allocator.free(seq.pages)
        seq.pages, seq.length = [], 0

    def block_table(self, seqs: list[Sequence], max_pages: int | None = None) -> torch.Tensor:
        """``int32 [len(seqs), max_pages]`` of page ids, padded with 0 (host tensor)."""
        width = max_pages if max_pages is not None else max(len(s.pages) for s in seqs)
        table = torch.zeros((len(seqs), width), dtype=torch.int32)
        for b, s in enumerate(seqs):
            if len(s.pages) > width:
                raise ValueError(f"sequence {b} has {len(s.pages)} pages, block table width is {width}")
            table[b, : len(s.pages)] = torch.tensor(s.pages, dtype=torch.int32)
        return table

    def slots(self, seq: Sequence, start: int, stop: int) -> list[int]:
        """Flat slot ids (``page * page_size + offset``) of tokens ``start..stop-1`` of ``seq``."""
        p = self.page_size
        return [seq.pages[t // p] * p + t % p for t in range(start, stop)]

    def random_fill(self, seed: int = 0, std: float = 1.0, pages: list[int] | None = None) -> None:
        """Fill pages with random values, for shape-only sweeps: the whole pool in one kernel when
        ``pages`` is None (or covers every page in use), else only those pages."""
        if self.device.type == "meta":
            return
        gen = torch.Generator(device=self.device).manual_seed(seed)
        if pages is None or len(pages) >= self.allocator.num_used:
            self.pool.normal_(0.0, std, generator=gen)
            return
        s = self.spec
        idx = torch.tensor(pages, dtype=torch.int64, device=self.device)
        values = torch.empty((s.num_layers, 2, len(pages), self.page_size, s.num_kv_heads, s.head_dim),
                             dtype=self.dtype, device=self.device).normal_(0.0, std, generator=gen)
        self.pool.index_copy_(2, idx, values)
