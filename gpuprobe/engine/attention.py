"""Decode attention backends behind the one switch ``attention=`` / ``--attention``.

- ``torch``: the project's one reference, :func:`gpuprobe.kernels.reference.paged_attention_reference`
  (gather every page into a padded dense tensor, then SDPA). For correctness only: it moves several
  times the KV bytes of a paged kernel.
- ``triton``: :func:`gpuprobe.kernels.paged_decode_attention`, the project's paged Triton kernel.
- ``sdpa-dense``: no pages; a dense cache ``[batch, kv_heads, max_len, head_dim]`` per layer and
  ``torch.nn.functional.scaled_dot_product_attention(enable_gqa=True)`` (cuDNN / flash on a GPU):
  the baseline a paged kernel must match.

Each backend writes the new token's K/V (op ``kv_write``) and computes attention of one query token
per sequence (op ``attention``) from the state of a :class:`~gpuprobe.engine.batch.DecodeBatch`.
Both are graph-safe: static shapes, in-place writes through index tensors, no host synchronisation.
Inside ``torch.compile`` (the fused step, :mod:`gpuprobe.engine.compiled`) the K/V writes and the
Triton launcher go through opaque custom ops, so the compiled step writes the cache in place and
keeps the project's attention kernel; eager steps call the same code directly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from gpuprobe.engine import compiled
from gpuprobe.engine.backends import BACKENDS
from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.kernels.reference import paged_attention_reference

if TYPE_CHECKING:
    from gpuprobe.engine.batch import DecodeBatch

class AttentionBackend:
    name: str = ""
    paged: bool = True

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, batch: "DecodeBatch") -> None:
        """Store ``k``, ``v`` (``[B, Hkv, D]``) of the token at ``batch.positions``."""
        raise NotImplementedError

    def decode(self, layer: int, q: torch.Tensor, batch: "DecodeBatch", scale: float) -> torch.Tensor:
        """``q [B, Hq, D]`` attends over each sequence's context -> ``[B, Hq, D]``."""
        raise NotImplementedError

    def cache_views(self, layer: int, batch: "DecodeBatch") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(k_cache, v_cache, slots)`` for the fused RoPE + KV-write kernel: caches addressed as
        ``[pages, page_size, Hkv, D]`` and the flat slot ``int64 [B]`` of each sequence's new token."""
        raise NotImplementedError


class _Paged(AttentionBackend):
    paged = True

    def write(self, layer, k, v, batch):
        kv = batch.cache
        if compiled.compiling():  # one in-place op: see gpuprobe.engine.compiled
            torch.ops.gpuprobe.paged_kv_write(kv.pool, layer, batch.slot_mapping, k, v)
            return
        hkv, d = k.shape[1], k.shape[2]
        # Flat slot view [num_pages * page_size, Hkv, D] of the layer's pages: a view, written in place.
        kv.k(layer).view(-1, hkv, d).index_copy_(0, batch.slot_mapping, k)
        kv.v(layer).view(-1, hkv, d).index_copy_(0, batch.slot_mapping, v)

    def cache_views(self, layer, batch):
        return batch.cache.k(layer), batch.cache.v(layer), batch.slot_mapping


class TorchPagedAttention(_Paged):
    name = "torch"

    def __init__(self) -> None:
        self._fn = paged_attention_reference

    def decode(self, layer, q, batch, scale):
        kv = batch.cache
        return self._fn(q, kv.k(layer), kv.v(layer), batch.block_table, batch.context_lens, scale=scale)


class TritonPagedAttention(_Paged):
    name = "triton"

    def __init__(self, num_splits: int | None = None) -> None:
        try:
            from gpuprobe.kernels import paged_decode_attention
        except (ImportError, AttributeError) as e:
            raise NotAvailable(f"the triton attention backend needs Triton and gpuprobe.kernels "
                               f"({e}); use --attention sdpa-dense or torch.") from None
        self._fn: Callable[..., torch.Tensor] = paged_decode_attention
        self.num_splits = num_splits

    def decode(self, layer, q, batch, scale):
        kv = batch.cache
        fn = torch.ops.gpuprobe.paged_decode_attention if compiled.compiling() else self._fn
        return fn(q, kv.k(layer), kv.v(layer), batch.block_table, batch.context_lens,
                  scale=scale, num_splits=self.num_splits)


class DenseSdpaAttention(AttentionBackend):
    """Dense cache per batch; without a mask when every sequence has the same static length."""

    name = "sdpa-dense"
    paged = False

    def write(self, layer, k, v, batch):
        if compiled.compiling():  # one in-place op: see gpuprobe.engine.compiled
            torch.ops.gpuprobe.dense_kv_write(batch.dense, layer, batch.arange_b, batch.positions, k, v)
            return
        dk, dv = batch.dense[layer, 0], batch.dense[layer, 1]  # [B, Hkv, L, D]
        dk[batch.arange_b, :, batch.positions] = k
        dv[batch.arange_b, :, batch.positions] = v

    def cache_views(self, layer, batch):
        # [B, Hkv, max_len, D] seen as [B, max_len, Hkv, D]: "page" b of max_len slots, slot b * max_len + pos
        return batch.dense[layer, 0].transpose(1, 2), batch.dense[layer, 1].transpose(1, 2), batch.dense_slots

    def decode(self, layer, q, batch, scale):
        dk, dv = batch.dense[layer, 0], batch.dense[layer, 1]
        if batch.uniform_len is not None:  # all sequences share one static length: no mask
            n = batch.uniform_len
            dk, dv, mask = dk[:, :, :n], dv[:, :, :n], None
        else:
            mask = batch.dense_mask[:, None, None, :]  # [B, 1, 1, L]
        out = F.scaled_dot_product_attention(q.unsqueeze(2), dk, dv, attn_mask=mask, scale=scale,
                                             enable_gqa=dk.shape[1] != q.shape[1])
        return out.squeeze(2)


def default_attention(device: torch.device) -> str:
    """``triton`` on a GPU when the kernel imports, else ``sdpa-dense``; ``torch`` on a CPU."""
    if device.type != "cuda":
        return "torch"
    try:
        from gpuprobe.kernels import paged_decode_attention  # noqa: F401

        return "triton"
    except Exception:
        return "sdpa-dense"


def make_backend(name: str) -> AttentionBackend:
    if name == "torch":
        return TorchPagedAttention()
    if name == "triton":
        return TritonPagedAttention()
    if name == "sdpa-dense":
        return DenseSdpaAttention()
    raise UserError(f"unknown attention backend '{name}'; choose one of {', '.join(BACKENDS)}.")


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Causal attention of a right-padded prompt batch over itself (the cache starts empty).

    ``q [B, Hq, T, D]``, ``k``/``v [B, Hkv, T, D]``, ``lens [B]``; padded query rows come out finite
    and are never used.
    """
    t = q.shape[2]
    idx = torch.arange(t, device=q.device)
    causal = idx[None, :] <= idx[:, None]  # [T, T]  key <= query
    valid = idx[None, :] < lens[:, None]  # [B, T]
    mask = causal[None, None] & valid[:, None, None, :]  # [B, 1, T, T]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])
