"""The batching configuration advisor: pick ``B_opt`` on a throughput curve, then size the memory it frees.

Pure functions on a :class:`~gpuprobe.advise.curves.Curve`; nothing here touches a GPU.

Two rules choose ``B_opt`` (``docs/advisor.md`` explains both):

- ``default`` (relative): the smallest batch whose measured tokens/s is within ``epsilon`` (a fraction)
  of the best throughput the curve sustains, among batches that meet the latency SLO. "Sustains":
  each point is compared with a running median of three (Tukey's; the ends stay as measured); a point
  that strays from it by more than the measurement noise allows (``outlier_fraction`` of the curve's
  best) and further than its neighbours do, is an outlier, which can neither set the bar nor be chosen. A single slow point so only
  excludes itself, a single lucky point cannot raise the bar, and a tail that falls after a peak leaves the
  peak as the bar. Curves of fewer than :data:`MIN_POINTS_FOR_OUTLIERS` points have too little to judge
  noise by: no point of them is an outlier.
- ``paper``: the rule of the published advisor script of *Mind the Memory Gap*, exactly:
  E(B) = T(B) / (B * T(B_1)) > ``min_efficiency``, latency <= ``latency_factor`` x the latency at the
  batch nearest ``reference_batch``, B_opt = the largest batch passing both. ``marginal`` is an alias.

:func:`plan_memory` then reports the KV cache at ``B_opt`` against the largest batch, the memory
freed, and how many replicas of the model fit, counting each replica's fixed cost.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from gpuprobe.advise.curves import Curve
from gpuprobe.analytic import dtype_bytes
from gpuprobe.errors import UserError
from gpuprobe.specs.gpus import normalize_dtype

RULES = ("default", "paper", "marginal")
RULE_ALIASES = {"marginal": "paper"}

DEFAULT_EPSILON = 0.05
#: A point further than this fraction of the curve's best from its running median is an outlier.
OUTLIER_FRACTION = 0.10
#: Fewer points than this give no noise estimate: every point of such a curve counts as measured.
MIN_POINTS_FOR_OUTLIERS = 5
PAPER_MIN_EFFICIENCY = 0.2
PAPER_LATENCY_FACTOR = 5.0
PAPER_REFERENCE_BATCH = 32

GiB = 1024**3
#: Per-replica memory beyond weights and KV cache when it cannot be measured: a CUDA context with
#: lazy module loading (about 0.5 GiB for a PyTorch process on Hopper), cuBLAS handles and workspace,
#: the CUDA-graph memory pool and allocator slack (about 0.5 GiB together). See docs/advisor.md.
DEFAULT_FIXED_COST_BYTES = 1 * GiB


def canonical_rule(rule: str) -> str:
    """``default`` | ``paper`` (``marginal`` is the same rule as ``paper``)."""
    r = (rule or "default").strip().lower()
    if r not in RULES:
        raise UserError(f"unknown rule '{rule}'; use one of {', '.join(RULES)}.")
    return RULE_ALIASES.get(r, r)


# --------------------------------------------------------------------------- choosing B_opt


@dataclass
class PointVerdict:
    """How one measured batch fared under the rule (a row of the advisor's table)."""

    batch: int
    tokens_per_s: float
    latency_s: float
    fraction_of_bar: float  # tokens/s over the bar the rule used
    meets_slo: bool = True
    smoothed_tokens_per_s: float | None = None  # default rule
    outlier: bool = False  # default rule
    efficiency: float | None = None  # paper rule: T(B) / (B * T(B_1))
    within_latency_limit: bool | None = None  # paper rule
    passes: bool = False
    chosen: bool = False


@dataclass
class Choice:
    """The rule's decision: ``b_opt`` (None when no batch qualifies, with ``reason``) and why."""

    rule: str
    b_opt: int | None
    tokens_per_s_at_b_opt: float | None
    best_tokens_per_s: float  # best measured (raw)
    best_batch: int
    bar_tokens_per_s: float  # what the rule compared against (default rule: the sustained best)
    verdicts: list[PointVerdict]
    latency_source: str  # measured | derived
    params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def running_median3(values: list[float]) -> list[float]:
    """Running median of three (Tukey); the two ends stay as measured, since nothing on their outer
    side can contest them. The identity on any monotone sequence, so a clean curve is left as measured."""
    n = len(values)
    if n < 3:
        return list(values)
    return [values[0]] + [sorted(values[i - 1:i + 2])[1] for i in range(1, n - 1)] + [values[-1]]


def outlier_points(deviations: list[float], tolerance: float) -> list[bool]:
    """Which points stray from their running median beyond the noise: by more than ``tolerance`` and
    further than their neighbours (whose medians they pull). None on curves shorter than
    :data:`MIN_POINTS_FOR_OUTLIERS`: three or four points cannot tell a noisy point from a real peak."""
    n = len(deviations)
    if n < MIN_POINTS_FOR_OUTLIERS:
        return [False] * n
    return [deviations[i] > tolerance and all(deviations[i] >= deviations[j] for j in (i - 1, i + 1) if 0 <= j < n)
            for i in range(n)]


def choose_default(curve: Curve, epsilon: float = DEFAULT_EPSILON, latency_slo_s: float | None = None,
                   outlier_fraction: float = OUTLIER_FRACTION) -> Choice:
    """Smallest batch within ``epsilon`` (relative) of the best sustained throughput, under the SLO."""
    if not 0 <= epsilon < 1:
        raise UserError(f"--epsilon is a fraction of the best throughput, 0 <= epsilon < 1; got {epsilon}.")
    tps = curve.tokens_per_s
    lat, lat_source = curve.latencies()
    smooth = running_median3(tps)
    scale = max(smooth)
    dev = [abs(t - s) for t, s in zip(tps, smooth)]
    outlier = outlier_points(dev, outlier_fraction * scale)
    ok_slo = [latency_slo_s is None or l <= latency_slo_s for l in lat]
    eligible = [i for i in range(len(tps)) if ok_slo[i] and not outlier[i]]
    best_i = max(range(len(tps)), key=lambda i: tps[i])
    params = {"epsilon": epsilon, "latency_slo_s": latency_slo_s, "outlier_fraction": outlier_fraction}
    notes = [f"batch {curve.batches[i]}: {tps[i]:,.0f} tokens/s strays from its neighbours' trend "
             f"({smooth[i]:,.0f}); treated as an outlier, re-measure it" for i in range(len(tps)) if outlier[i]]
    if not eligible:
        fastest = min(range(len(lat)), key=lambda i: lat[i])
        reason = (f"no measured batch meets the latency SLO of {latency_slo_s * 1e3:g} ms "
                  f"(fastest: {lat[fastest] * 1e3:.2f} ms at batch {curve.batches[fastest]})"
                  if not any(ok_slo) else "every batch that meets the SLO is an outlier; re-measure the curve")
        bar = tps[best_i]
        verdicts = _verdicts(curve, lat, bar, ok_slo, smooth, outlier, [False] * len(tps))
        return Choice("default", None, None, tps[best_i], curve.batches[best_i], bar, verdicts, lat_source,
                      params, reason, notes)
    bar = max(tps[i] for i in eligible)
    threshold = (1 - epsilon) * bar
    passes = [i in eligible and tps[i] >= threshold for i in range(len(tps))]
    chosen = min(i for i in range(len(tps)) if passes[i])
    verdicts = _verdicts(curve, lat, bar, ok_slo, smooth, outlier, passes)
    verdicts[chosen].chosen = True
    if len(tps) == 1:
        notes.append("a single measured batch: it is B_opt by default; measure more batches to learn anything")
    if latency_slo_s is not None and not all(ok_slo):
        notes.append(f"the latency SLO of {latency_slo_s * 1e3:g} ms excludes batches "
                     f"{', '.join(str(b) for b, ok in zip(curve.batches, ok_slo) if not ok)}")
    return Choice("default", curve.batches[chosen], tps[chosen], tps[best_i], curve.batches[best_i], bar,
                  verdicts, lat_source, params, None, notes)


def _verdicts(curve, lat, bar, ok_slo, smooth, outlier, passes) -> list[PointVerdict]:
    return [PointVerdict(batch=p.batch, tokens_per_s=p.tokens_per_s, latency_s=lat[i],
                         fraction_of_bar=p.tokens_per_s / bar, meets_slo=ok_slo[i],
                         smoothed_tokens_per_s=smooth[i], outlier=outlier[i], passes=passes[i])
            for i, p in enumerate(curve.points)]


def nearest_batch_index(batches: list[int], reference: int) -> int:
    """Index of the batch nearest ``reference``; a tie goes to the smaller batch (first in sorted order)."""
    return min(range(len(batches)), key=lambda i: (abs(batches[i] - reference), batches[i]))


def choose_paper(curve: Curve, min_efficiency: float = PAPER_MIN_EFFICIENCY,
                 latency_factor: float = PAPER_LATENCY_FACTOR, reference_batch: int = PAPER_REFERENCE_BATCH,
                 latency_slo_s: float | None = None) -> Choice:
    """The published advisor script's rule (CONTRACTS section 5): the largest batch with
    E(B) = T(B) / (B * T(B_1)) > ``min_efficiency`` and latency <= ``latency_factor`` x latency(batch
    nearest ``reference_batch``). An SLO, when given, is applied on top."""
    if not 0 <= min_efficiency < 1:
        raise UserError(f"--min-efficiency is a scaling efficiency E(B) = T(B) / (B * T(B_1)), a fraction "
                        f"0 <= E < 1; got {min_efficiency}.")
    if latency_factor <= 0 or reference_batch <= 0:
        raise UserError("--latency-factor and --reference-batch must be positive.")
    batches, tps = curve.batches, curve.tokens_per_s
    lat, lat_source = curve.latencies()
    t1 = tps[0]
    eff = [t / (b * t1) for b, t in zip(batches, tps)]
    ref_i = nearest_batch_index(batches, reference_batch)
    limit = latency_factor * lat[ref_i]
    within = [l <= limit for l in lat]
    ok_slo = [latency_slo_s is None or l <= latency_slo_s for l in lat]
    passes = [e > min_efficiency and w and s for e, w, s in zip(eff, within, ok_slo)]
    best_i = max(range(len(tps)), key=lambda i: tps[i])
    verdicts = [PointVerdict(batch=b, tokens_per_s=t, latency_s=lat[i], fraction_of_bar=t / tps[best_i],
                             meets_slo=ok_slo[i], efficiency=eff[i], within_latency_limit=within[i],
                             passes=passes[i]) for i, (b, t) in enumerate(zip(batches, tps))]
    params = {"min_efficiency": min_efficiency, "latency_factor": latency_factor,
              "reference_batch": reference_batch, "reference_batch_used": batches[ref_i],
              "latency_limit_s": limit, "latency_slo_s": latency_slo_s}
    notes = []
    if batches[0] != 1:
        notes.append(f"the smallest measured batch is {batches[0]}, not 1: E(B) = T(B)/(B*T({batches[0]})) "
                     f"as the script computes it, so E at that batch is 1/{batches[0]}")
    if lat_source == "derived":
        notes.append("no step latency in the input: latency is derived as batch / tokens_per_s")
    idx = [i for i in range(len(batches)) if passes[i]]
    if not idx:
        return Choice("paper", None, None, tps[best_i], batches[best_i], tps[best_i], verdicts, lat_source,
                      params, "no batch passes both the efficiency and the latency test", notes)
    chosen = max(idx)
    verdicts[chosen].chosen = True
    return Choice("paper", batches[chosen], tps[chosen], tps[best_i], batches[best_i], tps[best_i],
                  verdicts, lat_source, params, None, notes)


def choose(curve: Curve, rule: str = "default", *, epsilon: float = DEFAULT_EPSILON,
           latency_slo_s: float | None = None, min_efficiency: float = PAPER_MIN_EFFICIENCY,
           latency_factor: float = PAPER_LATENCY_FACTOR, reference_batch: int = PAPER_REFERENCE_BATCH) -> Choice:
    """B_opt on ``curve`` under ``rule`` (``default`` | ``paper`` | ``marginal``, an alias of ``paper``)."""
    r = canonical_rule(rule)
    if r == "paper":
        c = choose_paper(curve, min_efficiency, latency_factor, reference_batch, latency_slo_s)
        if rule.strip().lower() == "marginal":
            c.notes.insert(0, "--rule marginal is the paper's rule (its 'dT_dB' is a scaling efficiency)")
        return c
    return choose_default(curve, epsilon, latency_slo_s)


# --------------------------------------------------------------------------- memory and replicas


@dataclass
class MemoryPlan:
    """Memory at ``B_opt`` against the largest measured batch, and what the difference buys."""

    b_opt: int | None
    largest_batch: int
    context: int | None
    kv_bytes_at_b_opt: int | None
    kv_bytes_at_largest: int | None
    kv_source: str | None  # measured | analytic
    memory_bytes_at_b_opt: int | None  # measured peak
    memory_bytes_at_largest: int | None
    memory_freed_bytes: int | None
    memory_freed_basis: str | None  # peak_memory | kv_cache
    weights_bytes: int | None
    weights_source: str | None
    fixed_cost_bytes: int
    fixed_cost_source: str  # measured | default | given
    replica_bytes: int | None
    gpu_memory_bytes: int | None
    gpu_name: str | None
    replicas_that_fit: int | None
    replicas_at_largest: int | None
    serving: dict[str, Any] | None
    missing: list[str] = field(default_factory=list)
    kv_bytes_by_batch: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kv_bytes(curve: Curve, batch: int, spec=None, context: int | None = None, dtype: str = "bf16"
             ) -> tuple[int | None, str | None]:
    """KV-cache bytes at ``batch``: the measured figure when the curve has it, else analytic
    (``spec.kv_bytes_per_token`` x batch x context, ``dtype`` a normalised name), else None."""
    p = curve.point(batch)
    if p.kv_cache_bytes is not None:
        return int(p.kv_cache_bytes), "measured"
    if spec is not None and context:
        return int(spec.kv_bytes_per_token(dtype_bytes(dtype)) * batch * context), "analytic"
    return None, None


def plan_memory(curve: Curve, b_opt: int | None, *, spec=None, context: int | None = None,
                dtype: str | None = None, gpu_memory_bytes: int | None = None, gpu_name: str | None = None,
                fixed_cost_bytes: int | None = None, fixed_cost_source: str = "default") -> MemoryPlan:
    """KV cache and memory at ``b_opt`` against the largest batch, memory freed, replicas that fit.

    A replica needs max(its measured peak at B_opt, weights + KV at B_opt) plus a fixed cost per
    process (CUDA context, cuBLAS workspace, graph pool): measured when given, else
    :data:`DEFAULT_FIXED_COST_BYTES`. Figures the input cannot give are None and named in ``missing``.
    """
    context = context or curve.context
    if spec is not None:  # the analytic figures need the dtype, as the user or the curve's file wrote it
        dtype = normalize_dtype(dtype or curve.dtype or "bf16")
    largest = curve.batches[-1]
    fixed = int(fixed_cost_bytes) if fixed_cost_bytes is not None else DEFAULT_FIXED_COST_BYTES
    src = fixed_cost_source if fixed_cost_bytes is not None else "default"
    missing: list[str] = []
    notes: list[str] = []
    kv_all = {b: kv for b in curve.batches if (kv := kv_bytes(curve, b, spec, context, dtype)[0]) is not None}
    if b_opt is None:
        return MemoryPlan(None, largest, context, None, None, None, None, None, None, None, None, None,
                          fixed, src, None, gpu_memory_bytes, gpu_name, None, None, None, ["b_opt"], kv_all)
    kv_opt, kv_src = kv_bytes(curve, b_opt, spec, context, dtype)
    kv_big, _ = kv_bytes(curve, largest, spec, context, dtype)
    if kv_opt is None:
        missing.append("kv_cache_bytes (give --model and --context, or a kv_cache_bytes column)")
    mem_opt, mem_big = curve.point(b_opt).memory_bytes, curve.point(largest).memory_bytes
    if mem_opt is not None and mem_big is not None:
        freed, basis = int(mem_big - mem_opt), "peak_memory"
    elif kv_opt is not None and kv_big is not None:
        freed, basis = int(kv_big - kv_opt), "kv_cache"
    else:
        freed, basis = None, None
    weights, w_src = curve.point(b_opt).weights_bytes, "measured"
    if weights is None and spec is not None:
        weights, w_src = int(spec.weight_bytes(dtype_bytes(dtype))), "analytic"
    if weights is None:
        w_src = None
        missing.append("weights_bytes (give --model, or a weights_bytes column)")
    replica = replica_big = None
    if weights is not None and kv_opt is not None:
        replica = max(weights + kv_opt, mem_opt or 0) + fixed
        if kv_big is not None:
            replica_big = max(weights + kv_big, mem_big or 0) + fixed
    if gpu_memory_bytes is None:
        missing.append("GPU memory (run on the GPU, or give --gpu)")
    fit = fit_big = None
    serving = None
    if freed is not None and gpu_memory_bytes and replica_big is not None and replica_big > gpu_memory_bytes:
        # the largest batch cannot be held at all: what B_opt frees is at most what the GPU has beyond it
        cap = max(0, int(gpu_memory_bytes - (replica or 0)))
        if freed > cap:
            notes.append(f"batch {largest} needs {replica_big / GiB:.1f} GiB, more than the GPU's "
                         f"{gpu_memory_bytes / GiB:.1f} GiB; memory freed is capped at what the GPU holds "
                         f"beyond one replica at batch {b_opt}")
            freed = cap
    if replica is not None and gpu_memory_bytes:
        fit = int(gpu_memory_bytes // replica)
        fit_big = int(gpu_memory_bytes // replica_big) if replica_big else None
        if fit >= 1:
            serving = serving_settings(b_opt, replica, gpu_memory_bytes, context)
        else:
            notes.append(f"one replica at batch {b_opt} x context {context} needs {replica / GiB:.1f} GiB, "
                         f"more than the GPU's {gpu_memory_bytes / GiB:.1f} GiB: no serving settings")
    return MemoryPlan(b_opt, largest, context, kv_opt, kv_big, kv_src, mem_opt, mem_big, freed, basis,
                      weights, w_src, fixed, src, replica, gpu_memory_bytes, gpu_name, fit, fit_big,
                      serving, missing, kv_all, notes)


def serving_settings(b_opt: int, replica_bytes: int, gpu_memory_bytes: int, context: int | None) -> dict[str, Any]:
    """What B_opt means for a serving engine: at most ``b_opt`` sequences at once, and the share of
    GPU memory one replica needs (rounded up to 0.01), spelled as vLLM's flags."""
    fraction = math.ceil(100 * replica_bytes / gpu_memory_bytes) / 100
    flags = f"--max-num-seqs {b_opt} --gpu-memory-utilization {fraction:.2f}"
    if context:
        flags += f" --max-model-len {context}"
    return {"max_concurrent_sequences": b_opt, "gpu_memory_fraction": fraction, "vllm_flags": flags}


# --------------------------------------------------------------------------- the whole advice


@dataclass
class Advice:
    curve: Curve
    choice: Choice
    memory: MemoryPlan

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: the headline figures first, then the detail."""
        c, m = self.choice, self.memory
        return {
            "b_opt": c.b_opt,
            "tokens_per_s_at_b_opt": c.tokens_per_s_at_b_opt,
            "best_tokens_per_s": c.best_tokens_per_s,
            "best_batch": c.best_batch,
            "fraction_of_best": (c.tokens_per_s_at_b_opt / c.best_tokens_per_s
                                 if c.tokens_per_s_at_b_opt is not None else None),
            "kv_bytes_at_b_opt": m.kv_bytes_at_b_opt,
            "kv_bytes_at_largest": m.kv_bytes_at_largest,
            "largest_batch": m.largest_batch,
            "memory_freed_bytes": m.memory_freed_bytes,
            "memory_freed_basis": m.memory_freed_basis,
            "replicas_that_fit": m.replicas_that_fit,
            "replicas_at_largest": m.replicas_at_largest,
            "replica_bytes": m.replica_bytes,
            "fixed_cost_bytes": m.fixed_cost_bytes,
            "fixed_cost_source": m.fixed_cost_source,
            "serving": m.serving,
            "rule": c.rule,
            "params": c.params,
            "reason": c.reason,
            "latency_source": c.latency_source,
            "bar_tokens_per_s": c.bar_tokens_per_s,
            "notes": c.notes + m.notes + self.curve.notes,
            "missing": m.missing,
            "memory": m.to_dict(),
            "points": [asdict(v) for v in c.verdicts],
            "skipped": self.curve.skipped,
            "input": {k: getattr(self.curve, k) for k in ("source", "model", "context", "dtype", "mode",
                                                          "attention", "gpu")},
        }


def advise(curve: Curve, rule: str = "default", *, epsilon: float = DEFAULT_EPSILON,
           latency_slo_s: float | None = None, min_efficiency: float = PAPER_MIN_EFFICIENCY,
           latency_factor: float = PAPER_LATENCY_FACTOR, reference_batch: int = PAPER_REFERENCE_BATCH,
           spec=None, context: int | None = None, dtype: str | None = None,
           gpu_memory_bytes: int | None = None, gpu_name: str | None = None,
           fixed_cost_bytes: int | None = None, fixed_cost_source: str = "default") -> Advice:
    """Choose B_opt on ``curve`` and plan memory and replicas around it."""
    c = choose(curve, rule, epsilon=epsilon, latency_slo_s=latency_slo_s, min_efficiency=min_efficiency,
               latency_factor=latency_factor, reference_batch=reference_batch)
    m = plan_memory(curve, c.b_opt, spec=spec, context=context, dtype=dtype, gpu_memory_bytes=gpu_memory_bytes,
                    gpu_name=gpu_name, fixed_cost_bytes=fixed_cost_bytes, fixed_cost_source=fixed_cost_source)
    return Advice(curve, c, m)
