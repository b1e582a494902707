"""Every op of the op vocabulary (``gpuprobe.ops``) has a cost in the analytic model, an NVTX range the engine
pushes, a colour of its own that is the same in every process, and a kernel rule naming its kernels."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from gpuprobe.analytic import KERNEL_MODES, decode_costs
from gpuprobe.kernel_rules import OP_CLASSES, classify, load_rules
from gpuprobe.ops import GROUPS, OPS, STEP_OPS, nvtx_path, rule_class
from gpuprobe.render.plots.style import OP_COLORS, op_color
from gpuprobe.specs import get_model
from gpuprobe.specs.models import FAMILIES

#: One registry model per family.
FAMILY_MODEL = {"qwen2": "qwen2-0.5b", "llama": "llama-3.2-1b", "opt": "opt-1.3b"}
#: Ops a family's layout lacks (OPT has learned positions: no RoPE).
ABSENT = {"qwen2": set(), "llama": set(), "opt": {"rope"}}
#: Ops whose work runs inside a neighbour's kernel in fused mode (docs/engine.md, "Kernel modes").
FUSED_AWAY = {"rope", "residual_add"}


def _cost_ops(family: str, kernels: str) -> list[str]:
    return [c.op for c in decode_costs(get_model(FAMILY_MODEL[family]), 4, 256, "bf16", kernels)]


def test_families_cover_the_registry():
    assert set(FAMILY_MODEL) == set(FAMILIES)


@pytest.mark.parametrize("kernels", KERNEL_MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_op_that_applies_has_a_cost(family, kernels):
    expected = set(OPS) - ABSENT[family] - (FUSED_AWAY if kernels == "fused" else set())
    ops = _cost_ops(family, kernels)
    assert set(ops) == expected and len(ops) == len(expected)
    assert ops == [op for op in OPS if op in expected]  # in execution order
    for c in decode_costs(get_model(FAMILY_MODEL[family]), 4, 256, "bf16", kernels):
        assert c.dram_bytes > 0 and c.flops >= 0, c
        assert c.per_layer == (c.op not in STEP_OPS)


def test_the_families_together_cost_every_op():
    assert {op for f in FAMILIES for k in KERNEL_MODES for op in _cost_ops(f, k)} == set(OPS)


# ---- NVTX ranges: the engine pushes exactly the ops the cost model counts ------------------------------
def _tiny(family: str):
    """The family's registry model, narrowed so a step runs in a second on a CPU (Triton interpreted)."""
    kv = {"qwen2": 2, "llama": 1, "opt": 4}[family]
    return dataclasses.replace(get_model(FAMILY_MODEL[family]).with_layers(2), hidden_size=128, num_heads=4,
                               num_kv_heads=kv, head_dim=32, intermediate_size=96, vocab_size=97)


@pytest.mark.parametrize("kernels", KERNEL_MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_ranges_are_the_costed_ops(family, kernels):
    torch = pytest.importorskip("torch")
    if kernels == "fused":
        pytest.importorskip("triton")
    from gpuprobe.engine import Engine
    from gpuprobe.engine.nvtx import RecordingBackend, use_backend

    eng = Engine.from_spec(_tiny(family), dtype="fp32", device="cpu", attention="torch", kernels=kernels)
    rec = RecordingBackend()
    with torch.no_grad(), use_backend(rec):
        eng.step(eng.prepare(2, 9), nvtx=True)
    pushed = {name for kind, name in rec.events if kind == "push"} - {"decode", "layer0", "layer1"}
    assert pushed == set(_cost_ops(family, kernels))
    # each op's range sits where nvtx_path says (whole-step ops under decode/, the others in each layer)
    for op in pushed:
        where = [nvtx_path(op)] if op in STEP_OPS else [nvtx_path(op, i) for i in range(2)]
        assert all(p in rec.paths for p in where), (op, where)


# ---- colours ------------------------------------------------------------------------------------------
def test_every_op_and_group_has_its_own_colour():
    assert set(OPS) | set(GROUPS) <= set(OP_COLORS)
    colours = [op_color(op) for op in OPS]
    assert len(set(colours)) == len(OPS)  # no two ops of a step share a colour


_COLOURS_OF_OTHER_NAMES = """
import json
from gpuprobe.render.plots.style import op_color
names = ["gemm", "norm", "elementwise", "reduce", "memcpy", "other:triton_poi_fused_add_0", "other:x", "mystery"]
print(json.dumps([op_color(n) for n in names]))
"""


def _colours_with_hash_seed(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", _COLOURS_OF_OTHER_NAMES], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_colour_of_a_name_outside_the_vocabulary_is_the_same_in_every_process():
    """``hash(str)`` changes with PYTHONHASHSEED; the colour of a kernel class or ``other:*`` row must not."""
    first, second = _colours_with_hash_seed("1"), _colours_with_hash_seed("2")
    assert first == second
    assert first == [op_color(n) for n in ("gemm", "norm", "elementwise", "reduce", "memcpy",
                                           "other:triton_poi_fused_add_0", "other:x", "mystery")]
    assert len(set(first)) > 1  # a palette, not one colour for everything


# ---- kernel rules -------------------------------------------------------------------------------------
def test_every_op_has_a_rule_class_with_rules():
    named = {rule.op for rule in load_rules()}
    for op in OPS:
        assert rule_class(op) in OP_CLASSES, op
        assert rule_class(op) in named, f"no rule of data/kernel_rules.csv names the kernels of {op}"


def test_rule_class_follows_the_class_members():
    assert {rule_class(op) for op in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")} == {"gemm"}
    assert {rule_class(op) for op in ("input_norm", "post_norm", "final_norm")} == {"norm"}
    assert rule_class("attention") == "attention" and rule_class("residual_add") == "elementwise"


def test_the_engines_own_kernels_are_named_by_the_rules_of_their_ops():
    """A trace of the fused engine without NVTX ranges still names each Triton kernel's op class."""
    pytest.importorskip("triton")
    from gpuprobe.kernels import activation, gemm, norm, paged_attention, rotary

    def name(kernel) -> str:
        return getattr(kernel, "fn", kernel).__name__

    launched = {
        "input_norm": [norm.fused_add_norm_kernel], "post_norm": [norm.fused_add_norm_kernel],
        "final_norm": [norm.fused_add_norm_kernel], "kv_write": [rotary.rotary_kv_write_kernel],
        "act": [activation.activation_kernel],
        "attention": [paged_attention.paged_decode_attention_v1_kernel,
                      paged_attention.paged_decode_attention_splitk_kernel,
                      paged_attention.paged_decode_attention_reduce_kernel],
        "qkv_proj": [gemm.decode_gemm_kernel, gemm.decode_gemm_splitk_reduce_kernel],
    }
    for op, kernels in launched.items():
        for k in kernels:
            assert classify(name(k)) == rule_class(op), (op, name(k))
