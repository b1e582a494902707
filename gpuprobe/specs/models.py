"""Decoder architecture specs: a registry of published configs, and reading a local ``config.json``.

Every registry row is written with keywords (``hidden_size=896``, never a bare ``896``) and copied from
the model's published Hugging Face ``config.json``; the repository it comes from is the row's ``source``.
Parameter counts are computed from the spec, not stored, so a test can check them against the published
totals. A ``config.json`` is checked field by field where it is read (:func:`spec_from_config`): a bad
value gives one :class:`~gpuprobe.errors.UserError` line naming the field, what is wrong and what to do.

Families are the engine's three decoder layouts (see :mod:`gpuprobe.engine.model`): ``qwen2``, ``llama``
and ``opt``. Mistral and Phi-3 use the Llama layout (RMSNorm, SwiGLU, RoPE, no biases) and map onto
``family="llama"``; ``model_type`` keeps their Hugging Face name. Mistral's sliding window is recorded in
``sliding_window`` but the engine's attention is full (see docs/models.md).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprobe.errors import UserError
from gpuprobe.kernels.activation_table import ACTIVATIONS, HF_FUNCTIONS, find

FAMILIES = ("qwen2", "llama", "opt")

#: Hugging Face ``model_type`` -> the engine family that runs it.
MODEL_TYPE_FAMILY = {"qwen2": "qwen2", "llama": "llama", "mistral": "llama", "phi3": "llama", "opt": "opt"}

# Upper limits that no published decoder comes near; larger values are typos (or overflows) to report.
_MAX_SIZE = 1 << 20  # hidden, intermediate, head_dim
_MAX_LAYERS = 10_000
_MAX_HEADS = 1 << 14
_MAX_VOCAB = 1 << 24
_MAX_POSITIONS = 1 << 28


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Architecture of a decoder-only transformer, as far as cost and shapes go (keywords only)."""

    name: str
    family: str  # "qwen2" | "llama" | "opt": the engine layout
    hidden_size: int
    num_layers: int
    num_heads: int  # query heads
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    norm: str  # "rmsnorm" | "layernorm"
    activation: str  # a row of gpuprobe.kernels.activation_table.ACTIVATIONS: "swiglu" | "relu" | "gelu" | ...
    positional: str  # "rope" | "learned"
    qkv_bias: bool
    rope_theta: float | None
    max_position_embeddings: int
    o_bias: bool = False
    mlp_bias: bool = False
    norm_eps: float = 1e-6
    rope_scaling: dict[str, Any] | None = None
    sliding_window: int | None = None  # recorded only: the engine attends to the whole context
    model_type: str = ""  # Hugging Face model_type (llama, mistral, phi3, qwen2, opt)
    source: str = ""  # Hugging Face repository whose config.json the values come from

    def __post_init__(self) -> None:
        problem = _structure_problem(self)
        if problem:
            raise UserError(f"model '{self.name}': {problem}")

    # ---- derived shapes -------------------------------------------------------------
    @property
    def max_context(self) -> int:
        """Longest context the model was built for (``max_position_embeddings``)."""
        return self.max_position_embeddings

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def gated_mlp(self) -> bool:
        """True when the MLP input projection holds gate and up (SwiGLU): width 2 x intermediate."""
        return ACTIVATIONS[self.activation].gated

    @property
    def gate_up_size(self) -> int:
        return (2 if self.gated_mlp else 1) * self.intermediate_size

    @property
    def norm_params(self) -> int:
        """Parameters of one norm: weight, plus bias for LayerNorm."""
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    # ---- parameter counts -----------------------------------------------------------
    def layer_params(self) -> int:
        """Parameters of one decoder layer."""
        h = self.hidden_size
        p = h * self.qkv_size + (self.qkv_size if self.qkv_bias else 0)
        p += self.q_size * h + (h if self.o_bias else 0)
        p += h * self.gate_up_size + (self.gate_up_size if self.mlp_bias else 0)
        p += self.intermediate_size * h + (h if self.mlp_bias else 0)
        p += 2 * self.norm_params
        return p

    def embedding_params(self) -> int:
        """Token embeddings plus learned positions (OPT keeps 2 extra position rows)."""
        p = self.vocab_size * self.hidden_size
        if self.positional == "learned":
            p += (self.max_position_embeddings + 2) * self.hidden_size
        return p

    def lm_head_params(self) -> int:
        """Parameters of the output projection that are not shared with the embedding."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def num_params(self) -> int:
        """Total parameters, counting tied embeddings once (as published model cards do)."""
        return (
            self.embedding_params()
            + self.num_layers * self.layer_params()
            + self.norm_params  # final norm
            + self.lm_head_params()
        )

    def weight_bytes(self, dtype_bytes: int) -> int:
        return self.num_params() * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token takes across all layers (K and V)."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_layers(self, num_layers: int) -> "ModelSpec":
        """A copy with a different depth (for small test models and per-layer studies)."""
        return dataclasses.replace(self, num_layers=num_layers)


def _structure_problem(s: ModelSpec) -> str | None:
    """What makes a spec's shapes impossible, or None."""
    for field in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                  "vocab_size", "max_position_embeddings"):
        v = getattr(s, field)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            return f"{field} must be a positive integer, got {v!r}"
    if s.family not in FAMILIES:
        return f"family must be one of {', '.join(FAMILIES)}, got {s.family!r}"
    if s.activation not in ACTIVATIONS:
        return f"activation must be one of {', '.join(ACTIVATIONS)}, got {s.activation!r}"
    if s.num_heads % s.num_kv_heads:
        return (f"num_kv_heads {s.num_kv_heads} does not divide num_heads {s.num_heads}; "
                "each KV head must serve a whole group of query heads")
    return None


def _count(n: int) -> str:
    """An integer for a message: with thousands separators, or its number of digits when absurdly long."""
    return f"{n:,}" if abs(n) < 10**15 else f"a {len(str(abs(n)))}-digit number"


def check_context(spec: ModelSpec, context: int) -> str | None:
    """Why ``context`` tokens cannot be asked of ``spec`` (one line for the CLI), or None when it fits.

    The limit is the model's ``max_position_embeddings``; a caller that offers an explicit override
    decides itself whether to ignore the answer.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        return f"context must be a positive whole number of tokens, got {context!r}."
    if context > spec.max_context:
        return (f"context {_count(context)} exceeds the {spec.max_context:,} tokens {spec.name} was built for "
                f"(max_position_embeddings); ask for at most {spec.max_context:,}.")
    return None


# ---- the registry -----------------------------------------------------------------------------------
# Values shared by every model of a layout; each row below gives the rest with keywords.
_LAYOUT: dict[str, dict[str, Any]] = {
    "qwen2": dict(family="qwen2", model_type="qwen2", norm="rmsnorm", activation="swiglu", positional="rope",
                  qkv_bias=True),
    "llama": dict(family="llama", model_type="llama", norm="rmsnorm", activation="swiglu", positional="rope",
                  qkv_bias=False),
    "opt": dict(family="opt", model_type="opt", norm="layernorm", activation="relu", positional="learned",
                qkv_bias=True, o_bias=True, mlp_bias=True, rope_theta=None, tie_word_embeddings=True,
                norm_eps=1e-5),
}

_LLAMA3_ROPE = dict(rope_type="llama3", low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)

_ROWS: dict[str, dict[str, Any]] = {
    # Qwen2 / Qwen2.5: GQA, q/k/v biases.
    "qwen2-0.5b": dict(layout="qwen2", source="Qwen/Qwen2-0.5B", hidden_size=896, num_layers=24, num_heads=14,
                       num_kv_heads=2, intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=131072, norm_eps=1e-6),
    "qwen2-1.5b": dict(layout="qwen2", source="Qwen/Qwen2-1.5B", hidden_size=1536, num_layers=28, num_heads=12,
                       num_kv_heads=2, intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=131072, norm_eps=1e-6),
    "qwen2-7b": dict(layout="qwen2", source="Qwen/Qwen2-7B", hidden_size=3584, num_layers=28, num_heads=28,
                     num_kv_heads=4, intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False,
                     rope_theta=1_000_000.0, max_position_embeddings=131072, norm_eps=1e-6),
    "qwen2.5-0.5b": dict(layout="qwen2", source="Qwen/Qwen2.5-0.5B", hidden_size=896, num_layers=24,
                         num_heads=14, num_kv_heads=2, intermediate_size=4864, vocab_size=151936,
                         tie_word_embeddings=True, rope_theta=1_000_000.0, max_position_embeddings=32768,
                         norm_eps=1e-6),
    "qwen2.5-1.5b": dict(layout="qwen2", source="Qwen/Qwen2.5-1.5B", hidden_size=1536, num_layers=28,
                         num_heads=12, num_kv_heads=2, intermediate_size=8960, vocab_size=151936,
                         tie_word_embeddings=True, rope_theta=1_000_000.0, max_position_embeddings=131072,
                         norm_eps=1e-6),
    "qwen2.5-3b": dict(layout="qwen2", source="Qwen/Qwen2.5-3B", hidden_size=2048, num_layers=36, num_heads=16,
                       num_kv_heads=2, intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=32768, norm_eps=1e-6),
    # Llama 3.x: GQA, llama3 RoPE scaling.
    "llama-3.2-1b": dict(layout="llama", source="meta-llama/Llama-3.2-1B", hidden_size=2048, num_layers=16,
                         num_heads=32, num_kv_heads=8, intermediate_size=8192, vocab_size=128256,
                         tie_word_embeddings=True, rope_theta=500_000.0, max_position_embeddings=131072,
                         norm_eps=1e-5, rope_scaling=dict(_LLAMA3_ROPE, factor=32.0)),
    "llama-3.2-3b": dict(layout="llama", source="meta-llama/Llama-3.2-3B", hidden_size=3072, num_layers=28,
                         num_heads=24, num_kv_heads=8, head_dim=128, intermediate_size=8192, vocab_size=128256,
                         tie_word_embeddings=True, rope_theta=500_000.0, max_position_embeddings=131072,
                         norm_eps=1e-5, rope_scaling=dict(_LLAMA3_ROPE, factor=32.0)),
    "llama-3.1-8b": dict(layout="llama", source="meta-llama/Llama-3.1-8B", hidden_size=4096, num_layers=32,
                         num_heads=32, num_kv_heads=8, intermediate_size=14336, vocab_size=128256,
                         tie_word_embeddings=False, rope_theta=500_000.0, max_position_embeddings=131072,
                         norm_eps=1e-5, rope_scaling=dict(_LLAMA3_ROPE, factor=8.0)),
    # Llama 2 (the seed paper's models): multi-head attention, plain RoPE, 4k context.
    "llama-2-7b": dict(layout="llama", source="meta-llama/Llama-2-7b-hf", hidden_size=4096, num_layers=32,
                       num_heads=32, num_kv_heads=32, intermediate_size=11008, vocab_size=32000,
                       tie_word_embeddings=False, rope_theta=10_000.0, max_position_embeddings=4096,
                       norm_eps=1e-5),
    "llama-2-13b": dict(layout="llama", source="meta-llama/Llama-2-13b-hf", hidden_size=5120, num_layers=40,
                        num_heads=40, num_kv_heads=40, intermediate_size=13824, vocab_size=32000,
                        tie_word_embeddings=False, rope_theta=10_000.0, max_position_embeddings=4096,
                        norm_eps=1e-5),
    # Mistral 7B v0.1: the Llama layout with GQA; its 4096-token sliding window is recorded, not applied.
    "mistral-7b-v0.1": dict(layout="llama", model_type="mistral", source="mistralai/Mistral-7B-v0.1",
                            hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                            intermediate_size=14336, vocab_size=32000, tie_word_embeddings=False,
                            rope_theta=10_000.0, max_position_embeddings=32768, norm_eps=1e-5,
                            sliding_window=4096),
    # SmolLM2: the Llama layout, tied embeddings.
    "smollm2-135m": dict(layout="llama", source="HuggingFaceTB/SmolLM2-135M", hidden_size=576, num_layers=30,
                         num_heads=9, num_kv_heads=3, intermediate_size=1536, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=100_000.0, max_position_embeddings=8192,
                         norm_eps=1e-5),
    "smollm2-360m": dict(layout="llama", source="HuggingFaceTB/SmolLM2-360M", hidden_size=960, num_layers=32,
                         num_heads=15, num_kv_heads=5, intermediate_size=2560, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=100_000.0, max_position_embeddings=8192,
                         norm_eps=1e-5),
    "smollm2-1.7b": dict(layout="llama", source="HuggingFaceTB/SmolLM2-1.7B", hidden_size=2048, num_layers=24,
                         num_heads=32, num_kv_heads=32, intermediate_size=8192, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=130_000.0, max_position_embeddings=8192,
                         norm_eps=1e-5),
    # Phi-3 mini: the Llama layout; its checkpoint stores qkv_proj and gate_up_proj fused (mapped at load).
    # Its config's sliding_window (2047) is recorded, not applied.
    "phi-3-mini-4k": dict(layout="llama", model_type="phi3", source="microsoft/Phi-3-mini-4k-instruct",
                          hidden_size=3072, num_layers=32, num_heads=32, num_kv_heads=32,
                          intermediate_size=8192, vocab_size=32064, tie_word_embeddings=False,
                          rope_theta=10_000.0, max_position_embeddings=4096, norm_eps=1e-5,
                          sliding_window=2047),
    # OPT (pre-LN sizes, 1.3b and up): LayerNorm, ReLU, learned positions, biases everywhere.
    "opt-1.3b": dict(layout="opt", source="facebook/opt-1.3b", hidden_size=2048, num_layers=24, num_heads=32,
                     num_kv_heads=32, intermediate_size=8192, vocab_size=50272, max_position_embeddings=2048),
    "opt-2.7b": dict(layout="opt", source="facebook/opt-2.7b", hidden_size=2560, num_layers=32, num_heads=32,
                     num_kv_heads=32, intermediate_size=10240, vocab_size=50272, max_position_embeddings=2048),
    "opt-6.7b": dict(layout="opt", source="facebook/opt-6.7b", hidden_size=4096, num_layers=32, num_heads=32,
                     num_kv_heads=32, intermediate_size=16384, vocab_size=50272, max_position_embeddings=2048),
}


def _from_row(name: str, row: dict[str, Any]) -> ModelSpec:
    row = dict(row)
    fields = dict(_LAYOUT[row.pop("layout")], **row)
    fields.setdefault("head_dim", fields["hidden_size"] // fields["num_heads"])
    return ModelSpec(name=name, **fields)


_REGISTRY: dict[str, ModelSpec] = {name: _from_row(name, row) for name, row in _ROWS.items()}


def list_models() -> list[ModelSpec]:
    """Every registered model, in registry order."""
    return list(_REGISTRY.values())


def get_model(name: str) -> ModelSpec:
    """A registered model by name (case-insensitive); an unknown name names the closest ones."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(
        f"unknown model '{name}'.{hint} Run `gpuprobe models` for the list, "
        "or pass a folder holding a config.json."
    )


# ---- reading a config.json ----------------------------------------------------------------------------
class _Fields:
    """Typed reads of one config.json dict; each bad value is one UserError naming the field and the file."""

    def __init__(self, cfg: dict[str, Any], where: str) -> None:
        self.cfg, self.where = cfg, where

    def fail(self, what: str) -> UserError:
        return UserError(f"{self.where}: {what}; fix config.json (compare with the model's published one).")

    def has(self, key: str) -> bool:
        return self.cfg.get(key) is not None

    def positive_int(self, key: str, *, limit: int, default: int | None = None) -> int:
        """A positive integer (an integral float like 24.0 is accepted) no larger than ``limit``;
        ``default`` when the field is absent or null (required when no default is given)."""
        v = self.cfg.get(key)
        if v is None:
            if default is None:
                raise self.fail(f"lacks the field '{key}' (or it is null): a positive integer is required")
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise self.fail(f"'{key}' must be a positive integer, got {json.dumps(v)}")
        v = int(v)
        if v <= 0:
            raise self.fail(f"'{key}' must be a positive integer, got {v}")
        if v > limit:
            raise self.fail(f"'{key}' is {_count(v)}, above any real model (at most {limit:,})")
        return v

    def positive_number(self, key: str, *, default: float, below: float | None = None) -> float:
        """A positive finite number (below ``below`` when given); ``default`` when absent or null."""
        v = self.cfg.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise self.fail(f"'{key}' must be a positive number, got {json.dumps(v)}")
        if below is not None and v >= below:
            raise self.fail(f"'{key}' must be below {below}, got {v}")
        return float(v)

    def flag(self, key: str, *, default: bool) -> bool:
        """A JSON boolean; ``default`` when absent or null."""
        v = self.cfg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(f"'{key}' must be true or false, got {json.dumps(v)}")
        return v


def rope_from_config(cfg: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` of a config.json: old style, or transformers 5's ``rope_parameters``."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta", cfg.get("rope_theta"))
        kind = params.get("rope_type", params.get("type", "default"))
        scaling = None if kind in (None, "default") else dict(params)
        return (float(theta) if theta is not None else None), scaling
    theta = cfg.get("rope_theta")
    return (float(theta) if theta is not None else None), cfg.get("rope_scaling")


def _heads(f: _Fields, hidden: int) -> tuple[int, int, int]:
    """``(query heads, KV heads, head_dim)``, checked against each other and the hidden size."""
    heads = f.positive_int("num_attention_heads", limit=_MAX_HEADS)
    kv = f.positive_int("num_key_value_heads", limit=_MAX_HEADS, default=heads)
    if heads % kv:
        raise f.fail(f"num_key_value_heads {kv} does not divide num_attention_heads {heads} "
                      "(each KV head serves a whole group of query heads)")
    if f.has("head_dim"):
        head_dim = f.positive_int("head_dim", limit=_MAX_SIZE)
    elif hidden % heads:
        raise f.fail(f"hidden_size {hidden} is not divisible by num_attention_heads {heads} "
                      "(or give head_dim explicitly)")
    else:
        head_dim = hidden // heads
    return heads, kv, head_dim


_ROPE_SCALING_KEYS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def _rope_fields(f: _Fields, cfg: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    try:
        theta, scaling = rope_from_config(cfg)
    except (TypeError, ValueError):
        raise f.fail(f"'rope_theta' must be a positive number, got {json.dumps(cfg.get('rope_theta'))}") from None
    if theta is not None and (not math.isfinite(theta) or theta <= 0):
        raise f.fail(f"'rope_theta' must be a positive number, got {theta}")
    if scaling is not None and not isinstance(scaling, dict):
        raise f.fail(f"'rope_scaling' must be an object or null, got {json.dumps(scaling)}")
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type"))
    for key in _ROPE_SCALING_KEYS.get(kind, ()):  # the numbers the engine's RoPE needs for that kind
        v = scaling.get(key)  # type: ignore[union-attr]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise f.fail(f"rope scaling '{kind}' needs a positive number '{key}', got {json.dumps(v)}")
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise f.fail(f"'partial_rotary_factor' is {partial}; the engine rotates whole heads only (1.0)")
    return (theta if theta is not None else 10000.0), scaling


def _activation_field(f: _Fields, key: str, default: str, gated: bool) -> str:
    """The spec's activation from a config's ``hidden_act`` / ``activation_function`` (``default`` when
    absent): the row of the activation table computing that function, gated as the family's MLP is."""
    value = f.cfg.get(key)
    value = default if value is None else value
    function = HF_FUNCTIONS.get(value.lower()) if isinstance(value, str) else None
    row = find(function, gated) if function else None
    if row is None:
        known = ", ".join(k for k, fn in HF_FUNCTIONS.items() if find(fn, gated))
        raise f.fail(f"'{key}' is {json.dumps(value)}; the engine runs a {'gated' if gated else 'plain'} MLP "
                     f"with one of {known}")
    return row.name


def spec_from_config(cfg: dict[str, Any], name: str = "custom", where: str | None = None) -> ModelSpec:
    """A spec from a Hugging Face ``config.json`` dict (Qwen2, Llama, Mistral, Phi-3 and OPT).

    Every field is checked as it is read; ``where`` (default: the name) labels the messages.
    """
    f = _Fields(cfg, where or f"config '{name}'")
    mtype = str(cfg.get("model_type") or "").lower()
    family = MODEL_TYPE_FAMILY.get(mtype)
    if family is None:
        raise UserError(f"{f.where}: model_type '{mtype or '?'}' is not supported; supported families: "
                        f"{', '.join(MODEL_TYPE_FAMILY)} (model_type in config.json).")
    h = f.positive_int("hidden_size", limit=_MAX_SIZE)
    layers = f.positive_int("num_hidden_layers", limit=_MAX_LAYERS)
    vocab = f.positive_int("vocab_size", limit=_MAX_VOCAB)
    if family == "opt":
        proj = f.positive_int("word_embed_proj_dim", limit=_MAX_SIZE, default=h)
        if proj != h:
            raise UserError(f"{f.where}: OPT projects its embeddings ({proj} != {h}); only OPT models without "
                            "that projection (1.3b and up) are supported.")
        if not f.flag("do_layer_norm_before", default=True):
            raise UserError(f"{f.where}: OPT with post-layer-norm is not supported; only pre-LN OPT (1.3b and up).")
        heads = f.positive_int("num_attention_heads", limit=_MAX_HEADS)
        if h % heads:
            raise f.fail(f"hidden_size {h} is not divisible by num_attention_heads {heads}")
        bias = f.flag("enable_bias", default=True)
        return ModelSpec(
            name=name, **dict(_LAYOUT["opt"], qkv_bias=bias, o_bias=bias, mlp_bias=bias,
                              tie_word_embeddings=f.flag("tie_word_embeddings", default=True),
                              activation=_activation_field(f, "activation_function", "relu", gated=False)),
            hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
            intermediate_size=f.positive_int("ffn_dim", limit=_MAX_SIZE), vocab_size=vocab,
            max_position_embeddings=f.positive_int("max_position_embeddings", limit=_MAX_POSITIONS, default=2048),
            source=name,
        )
    heads, kv, head_dim = _heads(f, h)
    theta, scaling = _rope_fields(f, cfg)
    attention_bias = f.flag("attention_bias", default=mtype == "qwen2")  # Qwen2 always has q/k/v biases
    window = f.positive_int("sliding_window", limit=_MAX_POSITIONS) if f.has("sliding_window") else None
    fields = dict(
        _LAYOUT[family], model_type=mtype, qkv_bias=attention_bias, o_bias=attention_bias and mtype != "qwen2",
        activation=_activation_field(f, "hidden_act", "silu", gated=True),
        mlp_bias=f.flag("mlp_bias", default=False), tie_word_embeddings=f.flag("tie_word_embeddings", default=False),
        rope_theta=theta, rope_scaling=scaling,
        sliding_window=window if f.flag("use_sliding_window", default=True) else None,
    )
    return ModelSpec(
        name=name, **fields, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
        intermediate_size=f.positive_int("intermediate_size", limit=_MAX_SIZE), vocab_size=vocab,
        max_position_embeddings=f.positive_int("max_position_embeddings", limit=_MAX_POSITIONS, default=4096),
        norm_eps=f.positive_number("rms_norm_eps", default=1e-6, below=1.0), source=name,
    )


def load_model_spec(name_or_path: str | Path) -> ModelSpec:
    """A registry name, or a folder (or file) holding a Hugging Face ``config.json``."""
    p = Path(name_or_path)
    if p.is_dir() or p.suffix == ".json" or (isinstance(name_or_path, str) and "/" in name_or_path):
        cfg_path = p / "config.json" if p.is_dir() else p
        if not cfg_path.is_file():
            raise UserError(f"no config.json at '{cfg_path}'; pass a registry name or a model folder.")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read '{cfg_path}': {e}") from None
        if not isinstance(cfg, dict):
            raise UserError(f"'{cfg_path}' is not a JSON object; pass a model's config.json.")
        return spec_from_config(cfg, name=(p.name if p.is_dir() else p.parent.name) or "custom",
                                where=str(cfg_path))
    return get_model(str(name_or_path))
