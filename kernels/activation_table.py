"""The MLP activations gpuprobe knows: one table read by the model specs, the analytic cost model, both
engine modes, the Triton activation kernel and its PyTorch reference.

A row is named as ``ModelSpec.activation`` is (``swiglu``, ``relu``, ...). ``function`` is the
elementwise function, which is also the Triton kernel's ``ACT`` selector; ``gated`` says the MLP input
projection holds gate and up (``[N, 2I]``) and the output is ``function(gate) * up``, else it is
``function(x)`` of ``[N, I]``. ``flops`` per output element count one FLOP per add, multiply and
transcendental (the analytic model's convention, docs/analytic.md).

This module imports neither torch nor Triton (the analytic roofline reads it); :func:`torch_function`
and :func:`apply_torch` import torch when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

#: Elementwise function -> (name in ``torch.nn.functional``, its keyword arguments, FLOPs per element).
FUNCTIONS: dict[str, tuple[str, dict[str, Any], int]] = {
    "silu": ("silu", {}, 4),  # x / (1 + exp(-x)): negate, exp, add, divide
    "relu": ("relu", {}, 1),
    "gelu": ("gelu", {}, 5),  # 0.5 x (1 + erf(x / sqrt 2))
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, 9),  # 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
}


@dataclass(frozen=True)
class Activation:
    """One MLP activation: its elementwise function (the kernel selector) and whether it is gated."""

    name: str
    function: str
    gated: bool

    @property
    def flops_per_element(self) -> int:
        """FLOPs per output element: the function's, plus the multiply by ``up`` when gated."""
        return FUNCTIONS[self.function][2] + (1 if self.gated else 0)


#: ``ModelSpec.activation`` -> its row.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("swiglu", "silu", gated=True),  # Qwen2, Llama, Mistral, Phi-3
    Activation("relu", "relu", gated=False),  # OPT
    Activation("gelu", "gelu", gated=False),
    Activation("gelu_tanh", "gelu_tanh", gated=False),
    Activation("geglu", "gelu", gated=True),
    Activation("geglu_tanh", "gelu_tanh", gated=True),
)}

#: Hugging Face ``hidden_act`` / ``activation_function`` values -> the elementwise function.
HF_FUNCTIONS = {"silu": "silu", "swish": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}


def activation(name: str) -> Activation:
    """The row of ``name``; KeyError naming the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def find(function: str, gated: bool) -> Activation | None:
    """The row computing ``function`` gated or not, or None."""
    return next((a for a in ACTIVATIONS.values() if a.function == function and a.gated == gated), None)


def torch_function(function: str) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """PyTorch's own implementation of an elementwise ``function`` (the reference of the kernel)."""
    import torch.nn.functional as F

    name, kwargs, _ = FUNCTIONS[function]
    fn = getattr(F, name)
    return (lambda t: fn(t, **kwargs)) if kwargs else fn


def apply(fn: Callable[["torch.Tensor"], "torch.Tensor"], gated: bool, x: "torch.Tensor") -> "torch.Tensor":
    """The MLP activation of ``x`` with the elementwise ``fn``: ``fn(x[:, :I]) * x[:, I:]`` when
    ``gated``, else ``fn(x)`` (the unfused engine, which resolves ``fn`` once per layer)."""
    if gated:
        gate, up = x.chunk(2, dim=-1)
        return fn(gate) * up
    return fn(x)


def apply_torch(function: str, gated: bool, x: "torch.Tensor") -> "torch.Tensor":
    """:func:`apply` with PyTorch's ``function`` (the kernel's reference and its unfused baseline)."""
    return apply(torch_function(function), gated, x)
