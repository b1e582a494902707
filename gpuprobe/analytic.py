"""Analytic cost model of one decode step: FLOPs and minimum DRAM bytes per op.

Pure functions of (model spec, batch B, context C, dtype). "Minimum bytes" counts every
weight, KV-cache entry and activation read or written exactly once, as a perfectly fused,
cache-less kernel would: the floor a measured kernel is compared against.

Conventions (docs/analytic.md derives every formula):
- ``context`` C is the number of cached tokens the new token attends to, itself included.
- Activations are in the model dtype; token ids and slot indices are int64 (8 bytes).
- GEMM FLOPs are 2·M·N·K (+ M·N for a bias); attention FLOPs are the two matmuls,
  4·B·Hq·C·D (softmax exponentials run on the SFU and are not counted); elementwise ops count
  one FLOP per add/mul (RMSNorm 4/element, LayerNorm 8, RoPE 3; the activation's from its row of
  :data:`gpuprobe.kernels.activation_table.ACTIVATIONS`: SwiGLU 5, ReLU 1).
- ``dtype`` is a normalised name (``bf16`` | ``fp16`` | ``fp32``: :func:`gpuprobe.specs.gpus.normalize_dtype`
  at the edge, where a user or a file gives it).
- The attention reads the K and V of all C tokens of each sequence; the block table
  (under 0.1% of those bytes) is left out.
- Each op's predicted time is ``max(flops / compute_peak, bytes / dram_bandwidth)`` with the
  tensor-core peak for GEMMs and attention and the FP32 peak for elementwise ops; the step
  time is the sum over ops (kernels run one after another).
- ``kernels`` follows the engine's kernel mode: ``unfused`` counts each PyTorch op alone (two
  ``residual_add`` per layer, ``rope`` apart from ``kv_write``); ``fused`` counts what each fused
  kernel moves (each norm reads the layer output and the residual and writes the normed rows and the
  new residual; ``kv_write`` reads q, k, v and writes rotated q and the cache rows), with no
  ``residual_add`` or ``rope`` op.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

from gpuprobe.errors import UserError
from gpuprobe.kernels.activation_table import activation
from gpuprobe.ops import GEMM_OPS, OPS, gemm_shapes
from gpuprobe.specs.gpus import DTYPE_BYTES, GPUSpec
from gpuprobe.specs.models import ModelSpec

ID_BYTES = 8
#: How the engine runs a layer's elementwise work (docs/engine.md): the project's fused Triton kernels
#: (the default) or PyTorch's one-op-per-kernel ops. The analytic model follows the same kernels.
KERNEL_MODES = ("fused", "unfused")
DEFAULT_KERNELS = "fused"
#: Ops that launch no kernel of their own in fused mode: their work runs inside a neighbour's kernel
#: (``residual_add`` in the next norm, ``rope`` in ``kv_write``).
FUSED_AWAY_OPS = frozenset({"residual_add", "rope"})
#: Ops that run on tensor cores (their compute roof is the dtype's tensor peak).
TENSOR_OPS = frozenset(GEMM_OPS | {"attention"})
#: Share of GPU memory a serving engine may use for weights + KV cache (vLLM's default is 0.9).
DEFAULT_MEMORY_FRACTION = 0.9


@dataclass(frozen=True)
class OpCost:
    """FLOPs and minimum DRAM traffic of one op, summed over the ``count`` times it runs in a step."""

    op: str
    flops: float
    dram_read_bytes: float
    dram_write_bytes: float
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    count: int  # executions per step (layers for per-layer ops, 2·layers for residual_add, 1 for step ops)
    per_layer: bool
    compute: str  # "tensor" | "vector"

    @property
    def dram_bytes(self) -> float:
        return self.dram_read_bytes + self.dram_write_bytes

    @property
    def intensity(self) -> float:
        """FLOPs per DRAM byte."""
        return self.flops / self.dram_bytes if self.dram_bytes else 0.0

    def time_s(self, dram_bytes_per_s: float, tensor_flops_per_s: float, vector_flops_per_s: float) -> float:
        """Roofline-predicted time: the slower of moving the bytes and doing the FLOPs."""
        peak = tensor_flops_per_s if self.compute == "tensor" else vector_flops_per_s
        return max(self.flops / peak, self.dram_bytes / dram_bytes_per_s)

    def plus(self, other: "OpCost") -> "OpCost":
        """The two costs of one op summed (e.g. the first layer's plain norm and the others' fused ones)."""
        return OpCost(
            self.op, self.flops + other.flops, self.dram_read_bytes + other.dram_read_bytes,
            self.dram_write_bytes + other.dram_write_bytes, self.weight_bytes + other.weight_bytes,
            self.kv_read_bytes + other.kv_read_bytes, self.kv_write_bytes + other.kv_write_bytes,
            self.count + other.count, self.per_layer, self.compute,
        )

    def scaled(self, factor: int) -> "OpCost":
        return OpCost(
            self.op, self.flops * factor, self.dram_read_bytes * factor, self.dram_write_bytes * factor,
            self.weight_bytes * factor, self.kv_read_bytes * factor, self.kv_write_bytes * factor,
            self.count * factor, self.per_layer, self.compute,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(dram_bytes=self.dram_bytes, intensity=self.intensity)
        return d


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a normalised dtype name; a UserError for any other spelling."""
    try:
        return DTYPE_BYTES[dtype]
    except (KeyError, TypeError):
        raise UserError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPE_BYTES)}.") from None


class AttentionBytes(NamedTuple):
    """Minimum DRAM bytes of one decode-attention call over one layer (each byte once)."""

    kv_read: int  # K and V of every context token of every KV head
    q_read: int
    out_write: int

    @property
    def total(self) -> int:
        return self.kv_read + self.q_read + self.out_write


def attention_bytes(batch: int, context: int, *, num_heads: int, num_kv_heads: int, head_dim: int,
                    elt_bytes: int) -> AttentionBytes:
    """The one count of attention's bytes: the cost model, the cross-checks and the kernel benchmarks."""
    q = batch * num_heads * head_dim * elt_bytes
    return AttentionBytes(2 * batch * context * num_kv_heads * head_dim * elt_bytes, q, q)


def _check_kernels(kernels: str) -> None:
    if kernels not in KERNEL_MODES:
        raise UserError(f"unknown kernels mode '{kernels}'; choose one of {', '.join(KERNEL_MODES)}.")


def _check(batch: int, context: int) -> None:
    if not isinstance(batch, int) or batch <= 0:
        raise UserError(f"batch must be a positive integer, got {batch!r}.")
    if not isinstance(context, int) or context <= 0:
        raise UserError(f"context must be a positive number of tokens, got {context!r}.")


def _cost(op, flops, read, write, *, weight=0.0, kv_read=0.0, kv_write=0.0, count=1, per_layer=True) -> OpCost:
    return OpCost(op, float(flops), float(read), float(write), float(weight), float(kv_read), float(kv_write),
                  count, per_layer, "tensor" if op in TENSOR_OPS else "vector")


def _norm(op: str, spec: ModelSpec, b: int, s: int, per_layer: bool, add: bool = False,
          store_residual: bool = True) -> OpCost:
    """A norm of B rows; with ``add`` the fused kernel that first adds the residual stream (reads it
    too, and writes the new stream unless ``store_residual`` is False)."""
    h = spec.hidden_size
    params = spec.norm_params  # weight (+ bias for LayerNorm)
    flops_per_elem = (8 if spec.norm == "layernorm" else 4) + (1 if add else 0)
    rows = b * h * s
    read = rows * (2 if add else 1) + params * s
    write = rows * (2 if add and store_residual else 1)
    return _cost(op, flops_per_elem * b * h, read, write, weight=params * s, per_layer=per_layer)


def _linear(op: str, b: int, k: int, n: int, bias: bool, s: int, per_layer: bool = True) -> OpCost:
    w = (k * n + (n if bias else 0)) * s
    flops = 2 * b * k * n + (b * n if bias else 0)
    return _cost(op, flops, w + b * k * s, b * n * s, weight=w, per_layer=per_layer)


def op_costs_per_layer(spec: ModelSpec, batch: int, context: int, dtype: str = "bf16",
                       kernels: str = DEFAULT_KERNELS) -> list[OpCost]:
    """Costs of one decoder layer's ops, each op once (unfused: ``residual_add`` covers both adds;
    fused: a layer after the first, whose ``input_norm`` adds the residual stream)."""
    _check(batch, context)
    _check_kernels(kernels)
    fused = kernels == "fused"
    s = dtype_bytes(dtype)
    b, c, h = batch, context, spec.hidden_size
    hq, hkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
    inter = spec.intermediate_size
    gemm = gemm_shapes(spec)
    out = [_norm("input_norm", spec, b, s, True, add=fused),
           _linear("qkv_proj", b, *gemm["qkv_proj"], spec.qkv_bias, s)]
    kv_new = 2 * b * hkv * d * s
    rope = spec.positional == "rope"
    rotated = b * (hq + hkv) * d
    if fused and rope:  # one kernel: q, k, v read; q rotated out, k, v into the cache; half cos/sin rows
        q_bytes = b * hq * d * s
        out.append(_cost("kv_write", 3 * rotated, q_bytes + kv_new + b * d * s + 2 * b * ID_BYTES,
                         q_bytes + kv_new, kv_write=kv_new))
    else:
        if rope:
            out.append(_cost("rope", 3 * rotated, rotated * s + 2 * b * d * s, rotated * s))
        out.append(_cost("kv_write", 0, kv_new + b * ID_BYTES, kv_new, kv_write=kv_new))
    att = attention_bytes(b, c, num_heads=hq, num_kv_heads=hkv, head_dim=d, elt_bytes=s)
    out.append(_cost("attention", 4 * b * hq * c * d, att.kv_read + att.q_read, att.out_write, kv_read=att.kv_read))
    out.append(_linear("o_proj", b, *gemm["o_proj"], spec.o_bias, s))
    if not fused:
        out.append(_cost("residual_add", 2 * b * h, 2 * (2 * b * h * s), 2 * (b * h * s), count=2))
    out.append(_norm("post_norm", spec, b, s, True, add=fused))
    out.append(_linear("gate_up_proj", b, *gemm["gate_up_proj"], spec.mlp_bias, s))
    act = activation(spec.activation)
    out.append(_cost("act", act.flops_per_element * b * inter, (2 if act.gated else 1) * b * inter * s,
                     b * inter * s))
    out.append(_linear("down_proj", b, *gemm["down_proj"], spec.mlp_bias, s))
    return out


def op_costs_per_step_only(spec: ModelSpec, batch: int, dtype: str = "bf16",
                           kernels: str = DEFAULT_KERNELS) -> list[OpCost]:
    """Costs of the ops that run once per step: embed, final_norm (fused: with the last residual
    add), lm_head, sample."""
    _check_kernels(kernels)
    s = dtype_bytes(dtype)
    b, h, v = batch, spec.hidden_size, spec.vocab_size
    if spec.positional == "learned":  # token row + position row, added
        embed = _cost("embed", b * h, 2 * (b * h * s + b * ID_BYTES), b * h * s, per_layer=False)
    else:
        embed = _cost("embed", 0, b * h * s + b * ID_BYTES, b * h * s, per_layer=False)
    return [
        embed,
        _norm("final_norm", spec, b, s, False, add=kernels == "fused", store_residual=False),
        _linear("lm_head", b, *gemm_shapes(spec)["lm_head"], False, s, per_layer=False),
        _cost("sample", b * v, b * v * s, b * ID_BYTES, per_layer=False),
    ]


def decode_costs(spec: ModelSpec, batch: int, context: int, dtype: str = "bf16",
                 kernels: str = DEFAULT_KERNELS) -> list[OpCost]:
    """Every op of one decode step, summed over all layers, in execution order (``kernels``: the
    engine's kernel mode; fused: the first layer's ``input_norm`` has no residual to add)."""
    layers = spec.num_layers
    per_layer = op_costs_per_layer(spec, batch, context, dtype, kernels)
    layer = {c.op: c.scaled(layers) for c in per_layer}
    if kernels == "fused":
        s = dtype_bytes(dtype)
        fused_norm = next(c for c in per_layer if c.op == "input_norm")
        first = _norm("input_norm", spec, batch, s, True)
        layer["input_norm"] = first.plus(fused_norm.scaled(layers - 1)) if layers > 1 else first
    step = {c.op: c for c in op_costs_per_step_only(spec, batch, dtype, kernels)}
    merged = {**layer, **step}
    return [merged[op] for op in OPS if op in merged]


@dataclass(frozen=True)
class StepPrediction:
    batch: int
    context: int
    step_time_s: float
    tokens_per_s: float
    flops: float
    dram_bytes: float
    op_times_s: dict[str, float]


def predict_step(spec: ModelSpec, gpu: GPUSpec, batch: int, context: int, dtype: str = "bf16",
                 dram_bytes_per_s: float | None = None, tensor_flops_per_s: float | None = None,
                 kernels: str = DEFAULT_KERNELS) -> StepPrediction:
    """Roofline-predicted time and tokens/s of one decode step (datasheet peaks unless given)."""
    bw = dram_bytes_per_s or gpu.dram_bytes_per_s
    tensor = tensor_flops_per_s or gpu.require_tensor_flops(dtype)
    costs = decode_costs(spec, batch, context, dtype, kernels)
    times = {c.op: c.time_s(bw, tensor, gpu.fp32_flops_per_s) for c in costs}
    step = sum(times.values())
    return StepPrediction(batch, context, step, batch / step, sum(c.flops for c in costs),
                          sum(c.dram_bytes for c in costs), times)


@dataclass(frozen=True)
class MemoryFootprint:
    weight_bytes: int
    kv_cache_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes


def memory_footprint(spec: ModelSpec, batch: int, context: int, dtype: str = "bf16") -> MemoryFootprint:
    """Weights plus the KV cache of ``batch`` sequences of ``context`` tokens (activations excluded)."""
    _check(batch, context)
    s = dtype_bytes(dtype)
    return MemoryFootprint(spec.weight_bytes(s), batch * context * spec.kv_bytes_per_token(s))


def max_batch_that_fits(spec: ModelSpec, gpu: GPUSpec, context: int, dtype: str = "bf16",
                        memory_fraction: float = DEFAULT_MEMORY_FRACTION, memory_bytes: int | None = None) -> int:
    """Largest batch whose weights + KV cache fit in ``memory_fraction`` of the GPU's memory (0 if none)."""
    _check(1, context)
    s = dtype_bytes(dtype)
    budget = (memory_bytes or gpu.memory_bytes) * memory_fraction - spec.weight_bytes(s)
    per_seq = context * spec.kv_bytes_per_token(s)
    return max(0, int(budget // per_seq))
