"""Decoder-only transformers in plain PyTorch: Qwen2, Llama 3.x and OPT, from a ``ModelSpec``.

One ``DecoderLayer`` serves the three families (the spec says which pieces it has):

=========  ============  ========  ================  ==========  ==================
family     norm          MLP       positions         biases      tied lm_head
=========  ============  ========  ================  ==========  ==================
qwen2      RMSNorm       SwiGLU    RoPE              q, k, v     small models
llama      RMSNorm       SwiGLU    RoPE (llama3)     none        3.2 models
opt        LayerNorm     ReLU      learned (+2)      all         yes
=========  ============  ========  ================  ==========  ==================

Weights are fused as an engine keeps them: ``qkv_proj`` is q, k, v stacked ``[q + 2 kv, hidden]``;
``gate_up_proj`` is gate and up stacked ``[2 x intermediate, hidden]`` (OPT: ``fc1``); ``down_proj``
is OPT's ``fc2``. Every GEMM is ``F.linear`` (cuBLAS). Each op runs inside ``ranges.op(name)``
(NVTX range and/or timer, see :mod:`gpuprobe.engine.nvtx`), named as in :mod:`gpuprobe.ops`.

Two kernel modes (:mod:`gpuprobe.engine.fused`): ``unfused`` runs every elementwise op as PyTorch
ops and carries one hidden state ``x`` through the layers (``x = x + o`` in ``residual_add``);
``fused`` carries the layer output and the residual stream separately, as serving engines do:
each norm adds the two in one Triton kernel (and updates the residual in place), RoPE and the KV
write are one kernel (``kv_write``) in decode, the activation is one kernel.

Shapes below: B batch, T prompt length, N tokens in flight (B in decode, B*T in prefill), H hidden,
Hq / Hkv query / KV heads, D head_dim, I intermediate, V vocab.
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpuprobe.engine import fused as fk
from gpuprobe.engine.attention import AttentionBackend, prefill_attention
from gpuprobe.engine.nvtx import NO_RANGES, Ranges
from gpuprobe.errors import UserError
from gpuprobe.kernels.activation_table import activation, apply, torch_function
from gpuprobe.specs.models import ModelSpec

if TYPE_CHECKING:
    from gpuprobe.engine.batch import DecodeBatch

#: OPT's learned position table keeps two extra leading rows: position p uses row p + 2.
OPT_POSITION_OFFSET = 2


class RMSNorm(nn.Module):
    """``w * x / rms(x)``, the statistics in float32."""

    def __init__(self, dim: int, eps: float, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Embedding(nn.Module):
    """A lookup table ``[rows, dim]`` (like ``nn.Embedding``, without its init: weights come later)."""

    def __init__(self, rows: int, dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, dim, device=device, dtype=dtype), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


def make_norm(spec: ModelSpec, device, dtype) -> nn.Module:
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden_size, eps=spec.norm_eps, device=device, dtype=dtype)
    return RMSNorm(spec.hidden_size, spec.norm_eps, device=device, dtype=dtype)


# ---- rotary position embedding -------------------------------------------------------------------
def rope_inv_freq(spec: ModelSpec) -> torch.Tensor:
    """Inverse frequencies ``[D/2]`` (float32), with llama3 or linear scaling when the spec asks."""
    d = spec.head_dim
    base = float(spec.rope_theta or 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    sc = spec.rope_scaling or {}
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind in (None, "default"):
        return inv
    if kind == "linear":
        return inv / float(sc["factor"])
    if kind == "llama3":
        # Llama 3.1 scaling: long wavelengths divided by `factor`, short kept, a smooth blend between.
        factor, lo, hi = float(sc["factor"]), float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
        old_len = float(sc["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        return torch.where(medium, blended, scaled)
    raise UserError(f"RoPE type '{kind}' of model '{spec.name}' is not supported (default, linear, llama3).")


class RopeTable:
    """cos/sin of every position up to ``length``, ``[length, D]`` in the model dtype (rotate-half layout).

    Built outside the step (``ensure``); the step only gathers rows by position, which is graph-safe.
    """

    def __init__(self, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.inv_freq = rope_inv_freq(spec)
        self.device, self.dtype = device, dtype
        self.cos = self.sin = torch.empty((0, spec.head_dim), device=device, dtype=dtype)
        self._retired: list[torch.Tensor] = []  # earlier tables stay alive: captured graphs read them

    def ensure(self, length: int) -> None:
        if self.cos.shape[0] >= length:
            return
        n = max(length, 2 * self.cos.shape[0])
        self._retired += [self.cos, self.sin]
        if self.device.type == "meta":
            self.cos = self.sin = torch.empty((n, 2 * self.inv_freq.numel()), device="meta", dtype=self.dtype)
            return
        freqs = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq[None, :]  # [n, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [n, D]
        self.cos = emb.cos().to(device=self.device, dtype=self.dtype)
        self.sin = emb.sin().to(device=self.device, dtype=self.dtype)

    def lookup(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions [N]`` -> cos, sin ``[N, 1, D]`` (broadcast over heads)."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [N, heads, D]`` rotated: ``x * cos + rotate_half(x) * sin``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# ---- how a layer reads and writes K/V: decode (one token, cache) or prefill (a prompt) -------------
class DecodeIO:
    """One query token per sequence; K/V go to the batch's cache through the attention backend."""

    def __init__(self, batch: "DecodeBatch", backend: AttentionBackend) -> None:
        self.batch, self.backend = batch, backend

    def write(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.backend.write(i, k, v, self.batch)

    def attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return self.backend.decode(i, q, self.batch, scale)  # [B, Hq, D]

    def rope_write(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope) -> torch.Tensor:
        """Fused mode: q, k rotated and k, v written into the cache by one kernel; returns q ``[B, Hq, D]``."""
        k_cache, v_cache, slots = self.backend.cache_views(i, self.batch)
        return fk.rope_kv_write(q, k, v, k_cache, v_cache, slots, rope)


class PrefillIO:
    """A right-padded prompt batch ``[B, T]``: causal attention over itself; valid tokens' K/V go to
    the cache (paged: ``slots`` of the valid tokens ``valid``; dense: the first T positions)."""

    def __init__(self, batch: "DecodeBatch", b: int, t: int, lens: torch.Tensor,
                 valid: torch.Tensor, slots: torch.Tensor | None) -> None:
        self.batch, self.b, self.t, self.lens, self.valid, self.slots = batch, b, t, lens, valid, slots

    def write(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:  # k, v [B*T, Hkv, D]
        bt = self.batch
        if bt.cache is not None:
            hkv, d = k.shape[1], k.shape[2]
            bt.cache.k(i).view(-1, hkv, d).index_copy_(0, self.slots, k.index_select(0, self.valid))
            bt.cache.v(i).view(-1, hkv, d).index_copy_(0, self.slots, v.index_select(0, self.valid))
        else:
            b, t = self.b, self.t
            bt.dense[i, 0, :, :, :t] = k.view(b, t, *k.shape[1:]).transpose(1, 2)  # type: ignore[index]
            bt.dense[i, 1, :, :, :t] = v.view(b, t, *v.shape[1:]).transpose(1, 2)  # type: ignore[index]

    def attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        b, t = self.b, self.t
        def heads(x: torch.Tensor) -> torch.Tensor:  # [B*T, h, D] -> [B, h, T, D]
            return x.view(b, t, *x.shape[1:]).transpose(1, 2)
        out = prefill_attention(heads(q), heads(k), heads(v), self.lens, scale)  # [B, Hq, T, D]
        return out.transpose(1, 2).reshape(b * t, *q.shape[1:])


# ---- the model ------------------------------------------------------------------------------------
class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, device=None, dtype=None) -> None:
        super().__init__()
        h, kw = spec.hidden_size, {"device": device, "dtype": dtype}
        self.spec = spec
        self.input_norm = make_norm(spec, **kw)
        self.qkv_proj = nn.Linear(h, spec.qkv_size, bias=spec.qkv_bias, **kw)
        self.o_proj = nn.Linear(spec.q_size, h, bias=spec.o_bias, **kw)
        self.post_norm = make_norm(spec, **kw)
        self.gate_up_proj = nn.Linear(h, spec.gate_up_size, bias=spec.mlp_bias, **kw)
        self.down_proj = nn.Linear(spec.intermediate_size, h, bias=spec.mlp_bias, **kw)
        self.scale = 1.0 / math.sqrt(spec.head_dim)
        self.act = activation(spec.activation)  # the spec's row of the activation table
        self.act_fn = torch_function(self.act.function)  # its PyTorch function (unfused mode)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, i: int,
                io: DecodeIO | PrefillIO, r: Ranges) -> torch.Tensor:
        """Unfused mode: ``x [N, H]`` -> ``[N, H]``."""
        with r.op("input_norm", i):
            h = self.input_norm(x)  # [N, H]
        with r.op("qkv_proj", i):
            qkv = self.qkv_proj(h)  # [N, (Hq + 2 Hkv) D]
        q, k, v = self._heads(qkv)
        q, k = self._rope_then_write(q, k, v, rope, i, io, r)
        o = self._attend(q, k, v, i, io, r)  # [N, H]
        with r.op("residual_add", i):
            x = x + o
        with r.op("post_norm", i):
            h = self.post_norm(x)
        with r.op("gate_up_proj", i):
            gu = self.gate_up_proj(h)  # [N, 2I] (gated: gate | up) or [N, I]
        with r.op("act", i):
            m = apply(self.act_fn, self.act.gated, gu)  # [N, I]
        with r.op("down_proj", i):
            d = self.down_proj(m)  # [N, H]
        with r.op("residual_add", i):
            x = x + d
        return x

    def forward_fused(self, x: torch.Tensor, residual: torch.Tensor | None, rope, i: int,
                      io: DecodeIO | PrefillIO, r: Ranges) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused mode: the previous layer's output ``x [N, H]`` and the residual stream (None before
        the first layer, whose input is the embedding) -> this layer's output and the stream.

        ``rope``: ``(cos_table, sin_table, positions)`` in decode (the fused kernel gathers the rows),
        ``(cos_rows, sin_rows)`` in prefill, None without RoPE.
        """
        with r.op("input_norm", i):  # residual += x (in place); h = norm(residual)
            h = fk.add_norm(self.input_norm, x, residual)  # [N, H]
        if residual is None:
            residual = x  # the embedding starts the stream (a fresh tensor of this step)
        with r.op("qkv_proj", i):
            qkv = self.qkv_proj(h)  # [N, (Hq + 2 Hkv) D]
        q, k, v = self._heads(qkv)
        if isinstance(io, DecodeIO):
            with r.op("kv_write", i):  # RoPE of q and k + the KV write: one kernel
                q = io.rope_write(i, q, k, v, rope)  # [N, Hq, D]
        else:  # prefill attends the rotated k of the prompt itself: PyTorch RoPE, then the cache write
            q, k = self._rope_then_write(q, k, v, rope, i, io, r)
        o = self._attend(q, k, v, i, io, r)  # [N, H]
        with r.op("post_norm", i):  # residual += o; h = norm(residual)
            h = fk.add_norm(self.post_norm, o, residual)
        with r.op("gate_up_proj", i):
            gu = self.gate_up_proj(h)  # [N, 2I] (gated: gate | up) or [N, I]
        with r.op("act", i):
            m = fk.mlp_activation(self.act, gu)  # [N, I]
        with r.op("down_proj", i):
            d = self.down_proj(m)  # [N, H]
        return d, residual

    def _rope_then_write(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope, i: int,
                         io: DecodeIO | PrefillIO, r: Ranges) -> tuple[torch.Tensor, torch.Tensor]:
        """PyTorch RoPE of q and k (``rope = (cos_rows, sin_rows)``, or None: no rotation), then the cache
        write of k and v: the unfused ops (and fused prefill). Returns the rotated q and k."""
        if rope is not None:
            with r.op("rope", i):
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        with r.op("kv_write", i):
            io.write(i, k, v)
        return q, k

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: int, io: DecodeIO | PrefillIO,
                r: Ranges) -> torch.Tensor:
        """Attention of q over the cache (and the new k, v), then ``o_proj``: ``[N, H]``."""
        with r.op("attention", i):
            a = io.attend(i, q, k, v, self.scale)  # [N, Hq, D]
        with r.op("o_proj", i):
            return self.o_proj(a.reshape(q.shape[0], self.spec.q_size))  # [N, H]

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the fused projection: q ``[N, Hq, D]``, k and v ``[N, Hkv, D]``."""
        s, n = self.spec, qkv.shape[0]
        q, k, v = qkv.split((s.q_size, s.kv_size, s.kv_size), dim=-1)
        return (q.view(n, s.num_heads, s.head_dim), k.view(n, s.num_kv_heads, s.head_dim),
                v.view(n, s.num_kv_heads, s.head_dim))


class Transformer(nn.Module):
    """Embedding, ``num_layers`` decoder layers, final norm, lm_head (tied to the embedding or not)."""

    def __init__(self, spec: ModelSpec, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.spec = spec
        self.embed = Embedding(spec.vocab_size, spec.hidden_size, **kw)
        self.pos_embed = (Embedding(spec.max_position_embeddings + OPT_POSITION_OFFSET, spec.hidden_size, **kw)
                          if spec.positional == "learned" else None)
        self.layers = nn.ModuleList(DecoderLayer(spec, **kw) for _ in range(spec.num_layers))
        self.final_norm = make_norm(spec, **kw)
        self.lm_head = None if spec.tie_word_embeddings else nn.Linear(spec.hidden_size, spec.vocab_size,
                                                                     bias=False, **kw)
        self.rope: RopeTable | None = None
        self.kernels = "unfused"  # or "fused": see gpuprobe.engine.fused (the engine sets it)

    @property
    def fused(self) -> bool:
        return self.kernels == "fused"

    def setup_rope(self, device: torch.device, dtype: torch.dtype) -> None:
        if self.spec.positional == "rope":
            self.rope = RopeTable(self.spec, device, dtype)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor, tables: bool = False):
        """Token (+ learned position) embedding; for RoPE models the positions' cos/sin rows, or with
        ``tables`` (fused decode: the kernel gathers the rows itself) ``(cos, sin, positions)``."""
        x = self.embed(tokens)  # [N, H]
        rope = None
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions + OPT_POSITION_OFFSET)
        elif self.rope is not None:
            rope = (self.rope.cos, self.rope.sin, positions) if tables else self.rope.lookup(positions)  # [N, 1, D] x 2
        return x, rope

    def _layers(self, x: torch.Tensor, rope, io: DecodeIO | PrefillIO, r: Ranges, step: bool) -> torch.Tensor:
        """Every decoder layer, then the final norm: ``[N, H]`` normed hidden states."""
        if not self.fused:
            for i, layer in enumerate(self.layers):
                with r.layer(i) if step else _NO_LAYER:
                    x = layer(x, rope, i, io, r)
            with r.op("final_norm"):
                return self.final_norm(x)
        residual = None
        for i, layer in enumerate(self.layers):
            with r.layer(i) if step else _NO_LAYER:
                x, residual = layer.forward_fused(x, residual, rope, i, io, r)
        with r.op("final_norm"):  # the last residual add + the norm; nothing reads the stream after it
            return fk.add_norm(self.final_norm, x, residual, store_residual=False)

    def _lm_head(self, x: torch.Tensor, r: Ranges) -> torch.Tensor:
        with r.op("lm_head"):
            return F.linear(x, self.lm_head_weight)  # [N, V]

    def decode(self, batch: "DecodeBatch", backend: AttentionBackend, r: Ranges = NO_RANGES) -> torch.Tensor:
        """One decode step for every sequence of ``batch``: logits ``[B, V]``; writes ``batch.next_tokens``."""
        io = DecodeIO(batch, backend)
        with r.step():
            with r.op("embed"):
                x, rope = self._embed(batch.tokens, batch.positions, tables=self.fused)  # [B, H]
            logits = self._lm_head(self._layers(x, rope, io, r, step=True), r)  # [B, V]
            with r.op("sample"):
                torch.argmax(logits, dim=-1, out=batch.next_tokens)  # greedy
        return logits

    def prefill(self, batch: "DecodeBatch", tokens: torch.Tensor, lens: torch.Tensor, valid: torch.Tensor,
                slots: torch.Tensor | None, all_logits: bool = False, r: Ranges = NO_RANGES) -> torch.Tensor:
        """A right-padded prompt batch ``tokens [B, T]`` from an empty cache.

        Returns logits ``[B, T, V]`` (``all_logits``) or of each prompt's last token ``[B, V]``.
        """
        b, t = tokens.shape
        io = PrefillIO(batch, b, t, lens, valid, slots)
        positions = torch.arange(t, device=tokens.device).repeat(b)  # [B*T]
        x, rope = self._embed(tokens.reshape(-1), positions)  # [B*T, H]
        x = self._layers(x, rope, io, r, step=False)
        if not all_logits:
            last = torch.arange(b, device=tokens.device) * t + (lens - 1)
            return self._lm_head(x.index_select(0, last), r)  # [B, V]
        return self._lm_head(x, r).view(b, t, -1)


_NO_LAYER = contextlib.nullcontext()  # prefill: no layer ranges
