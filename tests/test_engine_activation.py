"""The MLP activation the engine runs is the spec's, in both kernel modes: the input of ``down_proj`` equals
the activation of ``gate_up_proj``'s output, against a float64 formula written out here (not the
activation table's own functions), on fresh random weights and inputs."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gpuprobe.analytic import KERNEL_MODES
from gpuprobe.engine import Engine
from gpuprobe.errors import UserError
from gpuprobe.kernels.activation_table import ACTIVATIONS
from gpuprobe.specs import get_model


def _silu(x):
    return x / (1.0 + torch.exp(-x))


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


#: spec activation -> (float64 formula of the elementwise function, gated).
FORMULAS = {"swiglu": (_silu, True), "relu": (lambda x: x.clamp_min(0.0), False), "gelu": (_gelu, False),
            "gelu_tanh": (_gelu_tanh, False), "geglu": (_gelu, True), "geglu_tanh": (_gelu_tanh, True)}


def test_every_activation_of_the_table_is_checked_here():
    assert set(FORMULAS) == set(ACTIVATIONS)
    assert all(ACTIVATIONS[name].gated == gated for name, (_, gated) in FORMULAS.items())


def _spec(activation: str):
    """A small model of the layout the activation is usually found in (gated: Llama, plain: OPT)."""
    base = "llama-3.2-1b" if ACTIVATIONS[activation].gated else "opt-1.3b"
    kv = 1 if ACTIVATIONS[activation].gated else 4
    return dataclasses.replace(get_model(base).with_layers(2), hidden_size=128, num_heads=4, num_kv_heads=kv,
                               head_dim=32, intermediate_size=192, vocab_size=97, activation=activation)


def _mlp_io(eng: Engine, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(gate_up_proj output, down_proj input) of every layer in one decode step on random inputs."""
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = []
    for i, layer in enumerate(eng.model.layers):
        hooks.append(layer.gate_up_proj.register_forward_hook(
            lambda m, args, out, i=i: seen.setdefault(i, []).append(out.detach().clone())))
        hooks.append(layer.down_proj.register_forward_pre_hook(
            lambda m, args, i=i: seen.setdefault(i, []).append(args[0].detach().clone())))
    try:
        with torch.no_grad():
            eng.step(eng.prepare(3, 11, seed=seed))
    finally:
        for h in hooks:
            h.remove()
    return [(io[0], io[1]) for _, io in sorted(seen.items())]


@pytest.mark.parametrize("kernels", KERNEL_MODES)
@pytest.mark.parametrize("activation", list(FORMULAS))
def test_engine_runs_the_spec_activation(activation, kernels):
    if kernels == "fused":
        pytest.importorskip("triton")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())  # fresh inputs each run; the seed is in the message
    eng = Engine.from_spec(_spec(activation), dtype="fp32", device="cpu", attention="torch", kernels=kernels,
                           seed=seed)
    formula, gated = FORMULAS[activation]
    for gu, m in _mlp_io(eng, seed):
        x = gu.double()
        if gated:
            gate, up = x.chunk(2, dim=-1)
            want = formula(gate) * up
        else:
            want = formula(x)
        assert m.shape == want.shape
        err = (m.double() - want).abs().max().item()
        assert err < 1e-5 * max(1.0, want.abs().max().item()), f"{activation} {kernels} seed {seed}: {err}"
        if activation != "relu":  # the ReLU the unfused engine used to run instead is far off
            plain = x.chunk(2, dim=-1)[0].clamp_min(0) * x.chunk(2, dim=-1)[1] if gated else x.clamp_min(0)
            assert (m.double() - plain).abs().max().item() > 1e3 * max(err, 1e-9)


def test_an_unknown_activation_is_refused_when_the_spec_is_made():
    with pytest.raises(UserError, match="activation must be one of swiglu, relu, gelu"):
        dataclasses.replace(get_model("opt-1.3b"), activation="tanh")
