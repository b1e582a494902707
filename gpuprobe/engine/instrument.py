"""NVTX ranges for any ``torch.nn.Module`` (e.g. a Hugging Face model), named like the engine's.

``handle = gpuprobe.instrument(model)`` registers a forward pre-hook (push) and an always-called
forward hook (pop) on every module that :func:`classify_module` names, so one forward pass of a
Hugging Face Qwen2 gives ranges such as ``decode/layer3/attn_block/qkv_proj/``:

- the root module -> ``decode`` (``root=``; ``None`` for none);
- a block of a layer list (``layers.3``, ``h.3``, ``blocks.3``) -> ``layer3``;
- by the module's own name, then its type: ``embed_tokens``/``wte``/``embed_positions`` -> ``embed``;
  ``q_proj``/``k_proj``/``v_proj``/``c_attn``/``query_key_value`` -> ``qkv_proj`` (three ranges when
  q, k, v are separate modules); ``o_proj``/``out_proj``/``c_proj`` in attention -> ``o_proj``;
  ``gate_proj``/``up_proj``/``fc1``/``c_fc`` -> ``gate_up_proj``; ``down_proj``/``fc2``/``c_proj`` in
  the MLP -> ``down_proj``; ``act_fn`` or an activation type -> ``act``; the layer's first norm ->
  ``input_norm``, its second -> ``post_norm``, a norm outside the layers -> ``final_norm``;
  ``rotary_emb`` -> ``rope``; ``lm_head`` -> ``lm_head``; the attention module (``self_attn``) ->
  group ``attn_block``, the MLP (``mlp``) -> group ``mlp``.
- ``functions=True`` (default) also wraps ``torch.nn.functional.scaled_dot_product_attention`` in an
  ``attention`` range while instrumented, so the attention kernels get their op, not only their block.

Ranges stay balanced when a forward raises: pops run from always-called hooks, and every pop unwinds
this handle's own stack down to the module that pushed. ``handle.remove()`` (or leaving the ``with``
block) removes every hook and the wrapper. Pass ``classify=`` to name modules your own way.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpuprobe.engine.nvtx import NvtxBackend, get_backend
from gpuprobe.ops import STEP_RANGE, layer_range

_LAYER_LISTS = {"layers", "h", "blocks", "layer"}
_NAMES: dict[str, str] = {
    **dict.fromkeys(("embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings",
                     "embed_positions", "wpe", "embed"), "embed"),
    **dict.fromkeys(("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "wqkv",
                     "wq", "wk", "wv", "query", "key", "value"), "qkv_proj"),
    **dict.fromkeys(("o_proj", "out_proj", "wo"), "o_proj"),
    **dict.fromkeys(("gate_proj", "up_proj", "gate_up_proj", "fc1", "w1", "w3", "c_fc", "dense_h_to_4h",
                     "fc_in"), "gate_up_proj"),
    **dict.fromkeys(("down_proj", "fc2", "w2", "dense_4h_to_h", "fc_out"), "down_proj"),
    **dict.fromkeys(("act_fn", "activation_fn", "act", "activation"), "act"),
    **dict.fromkeys(("input_layernorm", "self_attn_layer_norm", "ln_1", "attention_norm", "input_norm"),
                    "input_norm"),
    **dict.fromkeys(("post_attention_layernorm", "ln_2", "ffn_norm", "post_norm"), "post_norm"),
    **dict.fromkeys(("ln_f", "final_norm"), "final_norm"),
    **dict.fromkeys(("lm_head", "embed_out"), "lm_head"),
    **dict.fromkeys(("rotary_emb",), "rope"),
    **dict.fromkeys(("self_attn", "attn", "attention", "self_attention"), "attn_block"),
    **dict.fromkeys(("mlp", "feed_forward", "ffn"), "mlp"),
}
_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Mish)
_NORM_TYPES = (nn.LayerNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm,)


def _is_norm(name: str, module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in name.lower() or type(module).__name__.endswith("Norm")


def classify_module(path: str, module: nn.Module) -> str | None:
    """The range name of the module at ``path`` (``""`` is the root), or None for no range."""
    if path == "":
        return STEP_RANGE
    parts = path.split(".")
    name = parts[-1]
    if name.isdigit() and len(parts) >= 2 and parts[-2] in _LAYER_LISTS:
        return layer_range(int(name))
    in_layer = any(p.isdigit() and i > 0 and parts[i - 1] in _LAYER_LISTS for i, p in enumerate(parts[:-1]))
    groups = [_NAMES.get(p.lower()) for p in parts[:-1]]
    key = name.lower()
    if key in ("c_proj", "dense"):  # GPT-2 / GPT-NeoX style names: meaning depends on the block
        if "attn_block" in groups:
            return "o_proj"
        if "mlp" in groups:
            return "down_proj" if key == "c_proj" else None
        return None
    if key == "final_layer_norm":  # OPT: the layer's second norm, and the decoder's last
        return "post_norm" if in_layer else "final_norm"
    if key == "norm" and not in_layer:
        return "final_norm"
    op = _NAMES.get(key)
    if op is not None:
        if op == "act" and isinstance(module, nn.ModuleList):
            return None
        return op
    if isinstance(module, _ACTIVATIONS) or type(module).__name__.endswith("Activation"):
        return "act"
    if _is_norm(name, module) and not in_layer:
        return "final_norm"
    if isinstance(module, nn.Embedding):
        return "embed"
    return None


class InstrumentHandle:
    """What :func:`instrument` returns: ``remove()`` it, or use it as a context manager."""

    def __init__(self, backend: NvtxBackend | None) -> None:
        self._explicit = backend
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._stack: list[int] = []  # ids of modules (or wrappers) whose range is open
        self._restore: list[Callable[[], None]] = []
        self.names: dict[str, str] = {}  # module path -> range name

    @property
    def backend(self) -> NvtxBackend:
        return self._explicit or get_backend()

    def _push(self, key: int, name: str) -> None:
        self.backend.push(name)
        self._stack.append(key)

    def _pop(self, key: int) -> None:
        if key not in self._stack:
            return
        while self._stack:
            top = self._stack.pop()
            self.backend.pop()
            if top == key:
                break

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        while self._stack:  # close anything left open (a forward interrupted from outside)
            self._stack.pop()
            self.backend.pop()

    def __enter__(self) -> "InstrumentHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _wrap_sdpa(handle: InstrumentHandle) -> None:
    original = F.scaled_dot_product_attention

    @functools.wraps(original)
    def sdpa(*args, **kwargs):
        key = id(sdpa)
        handle._push(key, "attention")
        try:
            return original(*args, **kwargs)
        finally:
            handle._pop(key)

    F.scaled_dot_product_attention = sdpa
    torch.nn.functional.scaled_dot_product_attention = sdpa

    def undo() -> None:
        if F.scaled_dot_product_attention is sdpa:
            F.scaled_dot_product_attention = original

    handle._restore.append(undo)


def instrument(model: nn.Module, *, backend: NvtxBackend | None = None, root: str | None = STEP_RANGE,
               classify: Callable[[str, nn.Module], str | None] = classify_module,
               functions: bool = True) -> InstrumentHandle:
    """Add NVTX ranges to ``model``'s modules by path; see the module docstring for the names."""
    handle = InstrumentHandle(backend)
    for path, module in model.named_modules():
        name = classify(path, module)
        if path == "":
            name = root
        if not name:
            continue
        handle.names[path] = name
        key = id(module)

        def pre(mod, args, _key=key, _name=name):
            handle._push(_key, _name)

        def post(mod, args, output, _key=key):
            handle._pop(_key)

        handle._hooks.append(module.register_forward_pre_hook(pre))
        handle._hooks.append(module.register_forward_hook(post, always_call=True))
    if functions:
        _wrap_sdpa(handle)
    return handle


__all__ = ["instrument", "classify_module", "InstrumentHandle"]
