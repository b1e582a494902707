"""Weights for a :class:`~gpuprobe.engine.model.Transformer`: seeded random, or a local Hugging Face folder.

Random (the default; nothing is ever downloaded): every matrix ``N(0, 1/fan_in)`` so a projection
keeps the scale of its input; the output projections (``o_proj``, ``down_proj``) are further scaled
by ``1/sqrt(2 * layers)`` so the residual stream stays O(1) over depth; embeddings ``N(0, 1/hidden)``
(the tied lm_head then gives logits of O(1)); norm weights 1, biases ``N(0, 0.02)``. Activations stay
finite in bf16 over any number of steps (pre-norm layers see a normalised input every time).

Loading: ``config.json`` plus ``*.safetensors`` in one folder, with HF tensor names (``model.layers.0.
self_attn.q_proj.weight``, OPT's ``model.decoder.layers.0.fc1.weight``...), sharded checkpoints through
``model.safetensors.index.json``. q/k/v and gate/up are concatenated into the fused weights; a checkpoint
that already stores them fused (Phi-3's ``self_attn.qkv_proj`` ``[q; k; v]`` and ``mlp.gate_up_proj``
``[gate; up]``, the engine's own row order) is copied as it is (:func:`hf_fused_sources`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import torch

from gpuprobe.engine.model import Transformer
from gpuprobe.errors import UserError


def init_random(model: Transformer, seed: int = 0) -> None:
    """Fill every parameter in place (see the module docstring for the scales)."""
    spec = model.spec
    dev = model.embed.weight.device
    if dev.type == "meta":
        return
    gen = torch.Generator(device=dev).manual_seed(seed)
    out_scale = 1.0 / math.sqrt(2 * spec.num_layers)

    def normal(t: torch.Tensor, std: float) -> None:
        t.normal_(0.0, std, generator=gen)

    with torch.no_grad():
        normal(model.embed.weight, 1.0 / math.sqrt(spec.hidden_size))
        if model.pos_embed is not None:
            normal(model.pos_embed.weight, 1.0 / math.sqrt(spec.hidden_size))
        if model.lm_head is not None:
            normal(model.lm_head.weight, 1.0 / math.sqrt(spec.hidden_size))
        for name, p in model.named_parameters():
            if name.startswith(("embed.", "pos_embed.", "lm_head.")):
                continue
            leaf = name.rsplit(".", 2)
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                if "norm" in name:
                    p.zero_()
                else:
                    normal(p, 0.02)
            else:  # a projection [out, in]
                std = 1.0 / math.sqrt(p.shape[1])
                if leaf[-2] in ("o_proj", "down_proj"):
                    std *= out_scale
                normal(p, std)


# ---- Hugging Face names ---------------------------------------------------------------------------
def hf_sources(model: Transformer) -> dict[str, list[str]]:
    """Each engine parameter -> the HF names (without the model prefix) concatenated into it (dim 0)."""
    spec = model.spec
    out: dict[str, list[str]] = {}
    if spec.family == "opt":
        out["embed.weight"] = ["embed_tokens.weight"]
        out["pos_embed.weight"] = ["embed_positions.weight"]
        for suffix in ("weight", "bias"):
            out[f"final_norm.{suffix}"] = [f"final_layer_norm.{suffix}"]
        for i in range(spec.num_layers):
            p, a = f"layers.{i}.", f"layers.{i}.self_attn."
            for suffix in ("weight", "bias"):
                out[f"{p}input_norm.{suffix}"] = [f"{p}self_attn_layer_norm.{suffix}"]
                out[f"{p}post_norm.{suffix}"] = [f"{p}final_layer_norm.{suffix}"]
                out[f"{p}qkv_proj.{suffix}"] = [f"{a}q_proj.{suffix}", f"{a}k_proj.{suffix}", f"{a}v_proj.{suffix}"]
                out[f"{p}o_proj.{suffix}"] = [f"{a}out_proj.{suffix}"]
                out[f"{p}gate_up_proj.{suffix}"] = [f"{p}fc1.{suffix}"]
                out[f"{p}down_proj.{suffix}"] = [f"{p}fc2.{suffix}"]
    else:
        out["embed.weight"] = ["embed_tokens.weight"]
        out["final_norm.weight"] = ["norm.weight"]
        for i in range(spec.num_layers):
            p, a, m = f"layers.{i}.", f"layers.{i}.self_attn.", f"layers.{i}.mlp."
            out[f"{p}input_norm.weight"] = [f"{p}input_layernorm.weight"]
            out[f"{p}post_norm.weight"] = [f"{p}post_attention_layernorm.weight"]
            for suffix in ("weight", "bias"):
                out[f"{p}qkv_proj.{suffix}"] = [f"{a}q_proj.{suffix}", f"{a}k_proj.{suffix}", f"{a}v_proj.{suffix}"]
                out[f"{p}o_proj.{suffix}"] = [f"{a}o_proj.{suffix}"]
                out[f"{p}gate_up_proj.{suffix}"] = [f"{m}gate_proj.{suffix}", f"{m}up_proj.{suffix}"]
                out[f"{p}down_proj.{suffix}"] = [f"{m}down_proj.{suffix}"]
    if model.lm_head is not None:
        out["lm_head.weight"] = ["lm_head.weight"]
    params = dict(model.named_parameters())
    return {k: v for k, v in out.items() if k in params}


def hf_fused_sources(model: Transformer) -> dict[str, list[str]]:
    """The engine's fused parameters -> the one HF name a fused checkpoint stores them under (Phi-3:
    ``self_attn.qkv_proj`` rows ``[q; k; v]``, ``mlp.gate_up_proj`` rows ``[gate; up]``, as the engine keeps
    them); used where the split q/k/v or gate/up names are absent. OPT checkpoints are never fused."""
    if model.spec.family == "opt":
        return {}
    out: dict[str, list[str]] = {}
    for i in range(model.spec.num_layers):
        p = f"layers.{i}."
        for suffix in ("weight", "bias"):
            out[f"{p}qkv_proj.{suffix}"] = [f"{p}self_attn.qkv_proj.{suffix}"]
            out[f"{p}gate_up_proj.{suffix}"] = [f"{p}mlp.gate_up_proj.{suffix}"]
    params = dict(model.named_parameters())
    return {k: v for k, v in out.items() if k in params}


_PREFIXES = ("model.decoder.", "decoder.", "model.", "")


def _checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read '{index}': {e}") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"'{index}' names shards that are missing: {', '.join(missing[:4])}.")
        return files
    return sorted(folder.glob("*.safetensors"))


def has_checkpoint(folder: str | Path) -> bool:
    p = Path(folder)
    return p.is_dir() and bool(_checkpoint_files(p))


def load_hf(model: Transformer, folder: str | Path) -> None:
    """Copy a local HF checkpoint into ``model`` (already on its device, in its dtype)."""
    from safetensors import safe_open

    folder = Path(folder)
    files = _checkpoint_files(folder)
    if not files:
        raise UserError(f"no *.safetensors in '{folder}'; convert the checkpoint to safetensors first.")
    device = model.embed.weight.device
    handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]
    where: dict[str, object] = {}
    for h in handles:
        for key in h.keys():
            where[key] = h

    def find(name: str) -> str | None:
        for pre in _PREFIXES:
            if pre + name in where:
                return pre + name
        return None

    params = dict(model.named_parameters())
    fused = hf_fused_sources(model)
    missing: list[str] = []
    with torch.no_grad():
        for ours, sources in hf_sources(model).items():
            keys = [find(s) for s in sources]
            if any(k is None for k in keys) and ours in fused:  # a fused checkpoint (Phi-3)?
                fused_keys = [find(s) for s in fused[ours]]
                if all(k is not None for k in fused_keys):
                    keys = fused_keys
            if any(k is None for k in keys):
                missing += [s for s, k in zip(sources, keys) if k is None]
                continue
            parts = [where[k].get_tensor(k) for k in keys]  # type: ignore[attr-defined]
            value = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            dst = params[ours]
            if tuple(value.shape) != tuple(dst.shape):
                raise UserError(f"checkpoint tensor for '{ours}' has shape {tuple(value.shape)}, the config "
                                f"implies {tuple(dst.shape)}; does config.json match the weights?")
            dst.copy_(value.to(device=device, dtype=dst.dtype))
    if missing:
        raise UserError(f"checkpoint in '{folder}' lacks {len(missing)} tensors, e.g. {', '.join(missing[:3])}.")


def unique_param_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.data_ptr(), t.numel()) if t.device.type != "meta" else id(t)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total

