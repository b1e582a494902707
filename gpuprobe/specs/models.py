"""Decoder architecture specs: a registry of published configs, and reading a local ``config.json``.

Every registry value is copied from the model's published Hugging Face ``config.json``
(repositories named in ``ModelSpec.source``). Parameter counts are computed from the spec,
not stored, so a test can check them against the published totals.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprobe.errors import UserError

FAMILIES = ("qwen2", "llama", "opt")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer, as far as cost and shapes go."""

    name: str
    family: str  # "qwen2" | "llama" | "opt"
    hidden_size: int
    num_layers: int
    num_heads: int  # query heads
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    norm: str  # "rmsnorm" | "layernorm"
    activation: str  # "swiglu" | "relu"
    positional: str  # "rope" | "learned"
    qkv_bias: bool
    rope_theta: float | None
    max_position_embeddings: int
    o_bias: bool = False
    mlp_bias: bool = False
    norm_eps: float = 1e-6
    rope_scaling: dict[str, Any] | None = None
    source: str = ""

    # ---- derived shapes -------------------------------------------------------------
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
        return self.activation == "swiglu"

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


def _qwen2(name, h, layers, heads, kv, inter, vocab, tied, max_pos, source) -> ModelSpec:
    return ModelSpec(
        name=name, family="qwen2", hidden_size=h, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, head_dim=h // heads, intermediate_size=inter, vocab_size=vocab,
        tie_word_embeddings=tied, norm="rmsnorm", activation="swiglu", positional="rope",
        qkv_bias=True, rope_theta=1_000_000.0, max_position_embeddings=max_pos,
        norm_eps=1e-6, source=source,
    )


def _llama(name, h, layers, heads, kv, inter, tied, factor, source, head_dim=None) -> ModelSpec:
    return ModelSpec(
        name=name, family="llama", hidden_size=h, num_layers=layers, num_heads=heads,
        num_kv_heads=kv, head_dim=head_dim or h // heads, intermediate_size=inter,
        vocab_size=128256, tie_word_embeddings=tied, norm="rmsnorm", activation="swiglu",
        positional="rope", qkv_bias=False, rope_theta=500_000.0, max_position_embeddings=131072,
        norm_eps=1e-5,
        rope_scaling={"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        source=source,
    )


def _opt(name, h, layers, heads, ffn, source) -> ModelSpec:
    return ModelSpec(
        name=name, family="opt", hidden_size=h, num_layers=layers, num_heads=heads,
        num_kv_heads=heads, head_dim=h // heads, intermediate_size=ffn, vocab_size=50272,
        tie_word_embeddings=True, norm="layernorm", activation="relu", positional="learned",
        qkv_bias=True, o_bias=True, mlp_bias=True, rope_theta=None,
        max_position_embeddings=2048, norm_eps=1e-5, source=source,
    )


_REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _qwen2("qwen2-0.5b", 896, 24, 14, 2, 4864, 151936, True, 131072, "Qwen/Qwen2-0.5B"),
        _qwen2("qwen2-1.5b", 1536, 28, 12, 2, 8960, 151936, True, 131072, "Qwen/Qwen2-1.5B"),
        _qwen2("qwen2-7b", 3584, 28, 28, 4, 18944, 152064, False, 131072, "Qwen/Qwen2-7B"),
        _qwen2("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, True, 32768, "Qwen/Qwen2.5-0.5B"),
        _qwen2("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, True, 131072, "Qwen/Qwen2.5-1.5B"),
        _qwen2("qwen2.5-3b", 2048, 36, 16, 2, 11008, 151936, True, 32768, "Qwen/Qwen2.5-3B"),
        _llama("llama-3.2-1b", 2048, 16, 32, 8, 8192, True, 32.0, "meta-llama/Llama-3.2-1B"),
        _llama("llama-3.2-3b", 3072, 28, 24, 8, 8192, True, 32.0, "meta-llama/Llama-3.2-3B",
               head_dim=128),
        _llama("llama-3.1-8b", 4096, 32, 32, 8, 14336, False, 8.0, "meta-llama/Llama-3.1-8B"),
        _opt("opt-1.3b", 2048, 24, 32, 8192, "facebook/opt-1.3b"),
        _opt("opt-2.7b", 2560, 32, 32, 10240, "facebook/opt-2.7b"),
        _opt("opt-6.7b", 4096, 32, 32, 16384, "facebook/opt-6.7b"),
    )
}


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


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


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


def spec_from_config(cfg: dict[str, Any], name: str = "custom") -> ModelSpec:
    """Build a spec from a Hugging Face ``config.json`` dict (Qwen2, Llama, OPT families)."""
    mtype = str(cfg.get("model_type", "")).lower()
    try:
        if mtype in ("qwen2", "llama", "mistral"):
            h = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            family = "qwen2" if mtype == "qwen2" else "llama"
            theta, scaling = rope_from_config(cfg)
            return ModelSpec(
                name=name, family=family, hidden_size=h,
                num_layers=int(cfg["num_hidden_layers"]), num_heads=heads,
                num_kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
                head_dim=int(_get(cfg, "head_dim", default=h // heads)),
                intermediate_size=int(cfg["intermediate_size"]),
                vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                norm="rmsnorm", activation="swiglu", positional="rope",
                qkv_bias=bool(cfg.get("attention_bias", mtype == "qwen2")),
                o_bias=bool(cfg.get("attention_bias", False)) and mtype != "qwen2",
                mlp_bias=bool(cfg.get("mlp_bias", False)),
                rope_theta=theta if theta is not None else 10000.0,
                max_position_embeddings=int(_get(cfg, "max_position_embeddings", default=4096)),
                norm_eps=float(_get(cfg, "rms_norm_eps", default=1e-6)),
                rope_scaling=scaling,
                source=name,
            )
        if mtype == "opt":
            h = int(cfg["hidden_size"])
            if int(_get(cfg, "word_embed_proj_dim", default=h)) != h:
                raise UserError(
                    f"OPT config '{name}' projects embeddings ({cfg['word_embed_proj_dim']} != {h});"
                    " only OPT models without that projection (1.3b and up) are supported."
                )
            if not cfg.get("do_layer_norm_before", True):
                raise UserError(f"OPT config '{name}' uses post-layer-norm; only pre-LN OPT is supported.")
            heads = int(cfg["num_attention_heads"])
            return ModelSpec(
                name=name, family="opt", hidden_size=h, num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads, num_kv_heads=heads, head_dim=h // heads,
                intermediate_size=int(cfg["ffn_dim"]), vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                norm="layernorm", activation="relu", positional="learned",
                qkv_bias=bool(cfg.get("enable_bias", True)), o_bias=bool(cfg.get("enable_bias", True)),
                mlp_bias=bool(cfg.get("enable_bias", True)), rope_theta=None,
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                norm_eps=1e-5, source=name,
            )
    except KeyError as e:
        raise UserError(f"config '{name}' lacks the field {e.args[0]!r}; is it a decoder config.json?") from None
    raise UserError(
        f"config '{name}' has model_type '{mtype or '?'}'; supported families: qwen2, llama, opt."
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
            raise UserError(f"'{cfg_path}' is not a JSON object.")
        return spec_from_config(cfg, name=(p.name if p.is_dir() else p.parent.name) or "custom")
    return get_model(str(name_or_path))
