"""The state of B sequences being decoded: static device buffers that every step reads and writes.

A decode step is a pure function of these buffers (plus the weights) that writes the new token's
K/V at ``slot_mapping`` and its result into ``next_tokens``: running it twice gives the same result,
so CUDA-graph warm-up and capture are harmless, and replaying a captured step at a fixed context
measures exactly one step at that context. :meth:`DecodeBatch.advance` moves every sequence on by
one token with a few device ops outside the step (no host synchronisation).

Buffers (all on the engine's device, same ``data_ptr`` for the batch's life):

=================  ===========================  =============================================
``tokens``         ``int64 [B]``                input token of the next step
``next_tokens``    ``int64 [B]``                greedy token the step chose
``positions``      ``int64 [B]``                position of the input token (= tokens stored)
``context_lens``   ``int32 [B]``                ``positions + 1``: tokens attended, new one included
``slot_mapping``   ``int64 [B]``                flat page slot of the new token (paged backends)
``block_table``    ``int32 [B, max_pages]``     page ids per sequence (paged backends)
``dense[i, 0/1]``  ``[B, Hkv, max_len, D]``     layer i's dense K / V (``sdpa-dense``)
``dense_mask``     ``bool [B, max_len]``        ``arange < context_lens`` (``sdpa-dense``, ragged)
``dense_slots``    ``int64 [B]``                ``b * max_len + positions``: the fused KV write's slot (dense)
=================  ===========================  =============================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gpuprobe.engine.kvcache import KVCacheFull, PagedKVCache, Sequence


@dataclass
class DecodeBatch:
    size: int
    max_len: int  # width of the dense cache / block table, in tokens
    capacity: list[int]  # tokens each sequence can hold (its reserved pages, or max_len)
    lens: list[int]  # host mirror: tokens stored per sequence before the next step
    tokens: torch.Tensor
    next_tokens: torch.Tensor
    positions: torch.Tensor
    context_lens: torch.Tensor
    arange_b: torch.Tensor
    cache: PagedKVCache | None = None
    seqs: list[Sequence] = field(default_factory=list)
    slot_mapping: torch.Tensor | None = None
    block_table: torch.Tensor | None = None
    dense: torch.Tensor | None = None  # [layers, 2, B, Hkv, max_len, D]
    dense_mask: torch.Tensor | None = None
    dense_slots: torch.Tensor | None = None  # [B] b * max_len + position (sdpa-dense, fused KV write)
    uniform_len: int | None = None  # sdpa-dense: every sequence attends exactly this many tokens
    version: int = 0  # bumped when a static shape changes (a captured graph must be re-captured)

    @property
    def paged(self) -> bool:
        return self.cache is not None

    @property
    def kv_bytes(self) -> int:
        """KV bytes this batch holds: its pages (paged) or its dense cache."""
        if self.dense is not None:
            return self.dense.numel() * self.dense.element_size()
        if self.cache is None:
            return 0
        used = sum(len(s.pages) for s in self.seqs)
        return used * self.cache.nbytes // self.cache.num_pages

    def set_positions(self, lens: list[int]) -> None:
        """Point every sequence at its next token position (host -> device copy; outside the step)."""
        self._check(lens)
        self.lens = list(lens)
        dev = self.positions.device
        pos = torch.tensor(lens, dtype=torch.int64)
        self.positions.copy_(pos.to(dev))
        self.context_lens.copy_((pos + 1).to(torch.int32).to(dev))
        self._derive()

    def _check(self, lens: list[int]) -> None:
        for b, (n, cap) in enumerate(zip(lens, self.capacity)):
            if n >= cap:
                raise KVCacheFull(f"sequence {b} would store token {n + 1} but holds {cap} tokens; "
                                  "reserve more when the batch is made")

    def _derive(self) -> None:
        """Recompute slot_mapping / dense_mask from positions (device ops, no sync)."""
        if self.block_table is not None and self.cache is not None:
            p = self.cache.page_size
            page = self.block_table.gather(1, (self.positions // p).unsqueeze(1)).squeeze(1).to(torch.int64)
            self.slot_mapping.copy_(page * p + self.positions % p)  # type: ignore[union-attr]
        if self.dense_slots is not None:
            torch.add(self.positions, self.arange_b * self.max_len, out=self.dense_slots)
        if self.dense_mask is not None:
            ar = torch.arange(self.max_len, device=self.positions.device)
            torch.lt(ar[None, :], self.context_lens[:, None], out=self.dense_mask)

    def advance(self) -> None:
        """One token on: the chosen tokens become the inputs, positions and lengths grow by one."""
        self._check([n + 1 for n in self.lens])
        self.lens = [n + 1 for n in self.lens]
        self.tokens.copy_(self.next_tokens)
        self.positions.add_(1)
        self.context_lens.add_(1)
        if self.uniform_len is not None:
            self.uniform_len += 1
            self.version += 1
        self._derive()
