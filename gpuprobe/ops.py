"""Op names, groups and their members, display order, and the NVTX naming scheme shared by every stage
(docs/contracts.md section 1).

The NVTX range name *is* the op name. Ranges nest as ``decode/`` > ``layer{i}/`` > ``{op}/``;
whole-step ops (``embed``, ``final_norm``, ``lm_head``, ``sample``) sit directly under ``decode/``.
"""
from __future__ import annotations

import re

#: Ops of one decode step, in execution order.
OPS: tuple[str, ...] = (
    "embed",
    "input_norm",
    "qkv_proj",
    "rope",
    "kv_write",
    "attention",
    "o_proj",
    "residual_add",
    "post_norm",
    "gate_up_proj",
    "act",
    "down_proj",
    "final_norm",
    "lm_head",
    "sample",
)

#: Coarser ranges that hold several ops (e.g. the ``mlp`` range of the shipped ncu fixtures).
GROUPS: tuple[str, ...] = ("attn_block", "mlp")

#: The ops each group range holds (the analytic side of a group's point sums them).
GROUP_MEMBERS: dict[str, tuple[str, ...]] = {
    "attn_block": ("qkv_proj", "rope", "kv_write", "attention", "o_proj"),
    "mlp": ("gate_up_proj", "act", "down_proj"),
}

#: Op classes of the kernel rule table (docs/kernel-rules.md) that hold several ops: a trace without
#: NVTX ranges names its GEMMs ``gemm`` and its norms ``norm``; their analytic figures are the members' sum.
CLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "gemm": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"),
    "norm": ("input_norm", "post_norm", "final_norm"),
}

#: Ops whose kernels the rule table names by a class that is neither the op's name nor a class of
#: :data:`CLASS_MEMBERS`: a residual add is a plain elementwise kernel.
_OTHER_RULE_CLASSES: dict[str, str] = {"residual_add": "elementwise"}

#: Ops that run once per step rather than once per layer.
STEP_OPS: frozenset[str] = frozenset({"embed", "final_norm", "lm_head", "sample"})

#: Ops whose work is a matrix multiply with the weights (tensor cores).
GEMM_OPS: frozenset[str] = frozenset({"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"})

#: The outermost range of one decode step.
STEP_RANGE = "decode"

KNOWN_RANGES: frozenset[str] = frozenset(OPS) | frozenset(GROUPS)

_LAYER_RE = re.compile(r"^layer(\d+)$")


def layer_range(i: int) -> str:
    """NVTX range name of decoder layer ``i``."""
    return f"layer{i}"


def parse_layer(name: str) -> int | None:
    """Layer index of a ``layer{i}`` range name, else None."""
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def nvtx_path(op: str, layer: int | None = None) -> str:
    """The push/pop path of an op, as an ncu ``--nvtx-include`` filter (trailing slash included)."""
    if layer is None:
        return f"{STEP_RANGE}/{op}/"
    return f"{STEP_RANGE}/{layer_range(layer)}/{op}/"


def gemm_shapes(spec) -> dict[str, tuple[int, int]]:
    """``(K, N)`` of each weight GEMM of a model (:class:`gpuprobe.specs.models.ModelSpec`), by op:
    ``y[M, N] = x[M, K] @ W[K, N]`` with M the batch. The one table of GEMM shapes (analytic costs,
    cross-checks, kernel benchmarks)."""
    return {
        "qkv_proj": (spec.hidden_size, spec.qkv_size),
        "o_proj": (spec.q_size, spec.hidden_size),
        "gate_up_proj": (spec.hidden_size, spec.gate_up_size),
        "down_proj": (spec.intermediate_size, spec.hidden_size),
        "lm_head": (spec.hidden_size, spec.vocab_size),
    }


def rule_class(op: str) -> str:
    """The op class (``gpuprobe.kernel_rules.OP_CLASSES``) the kernel rule table gives an op's kernels in a
    trace without NVTX ranges: ``gemm`` or ``norm`` for their members, else the op's own name
    (``attention``, ``kv_write``...), ``elementwise`` for ``residual_add``."""
    for cls, members in CLASS_MEMBERS.items():
        if op in members:
            return cls
    return _OTHER_RULE_CLASSES.get(op, op)


def op_order(op: str) -> tuple[int, str]:
    """Sort key of op names for display: step order, then groups and others by name, ``other:*`` last."""
    if op in OPS:
        return (OPS.index(op), op)
    return (len(OPS) + (1 if op.startswith("other:") else 0), op)


def is_known(name: str) -> bool:
    """True when ``name`` is an op or group name."""
    return name in KNOWN_RANGES
