"""Cross-checks of counter figures against the analytic cost model (docs/contracts.md section 3).

Two checks, each a ratio ``measured / expected`` over one whole decode step (per-layer counters
already scaled to the step):

* **attention DRAM bytes**: counter *read* bytes of the attention kernels against the analytic KV
  bytes (every K and V entry of the context read once), and counter *write* bytes against the
  analytic output bytes. Reads against reads, writes against writes: writes also carry L2
  write-backs of earlier kernels' data, charged to whichever kernel evicts them, so they vary
  (0 to 1.7 MB against 0.1 MB of output in the shipped H100 fixtures) while reads came out at
  1.004 (B=64, C=1024) and 1.009 (B=32, C=512).
* **GEMM FLOPs**: tensor-pipe FLOPs counted in the GEMM kernels against ``2·M·N·K`` (biases left
  out). Counters count padded tiles, so the ratio is the GEMM's *padding*: exactly 1.00 for
  tile-aligned shapes, 1.03 and 1.17 for Qwen2-0.5B's MLP GEMMs at B=64, several times more at
  batch 1 where one token fills a tile of 8 or 64 rows.

A ratio more than :data:`TOLERANCE` away from 1 is *flagged* with a note that says what the
usual cause is; nothing is dropped or hidden. :func:`failures` picks the disagreements that mean a
measurement is wrong (attention reads off, or counters that saw less GEMM work than the model does; a
GEMM that ran on CUDA cores is compared by all its counted FLOPs, not by the tensor pipe alone).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from gpuprobe.analytic import attention_bytes, dtype_bytes
from gpuprobe.ops import GROUP_MEMBERS, STEP_OPS, gemm_shapes
from gpuprobe.specs.models import ModelSpec

#: A ratio further than this from 1 is flagged.
TOLERANCE = 0.10

#: Groups whose counted FLOPs are those of their weight GEMMs (``attn_block`` also counts attention's
#: matmuls, so it is not checked against GEMM shapes).
_GEMM_GROUPS = ("mlp",)


@dataclass(frozen=True)
class CrossCheck:
    """One comparison of a counter figure with its analytic value (both whole-step totals)."""

    name: str  # attention_dram_read | attention_dram_write | gemm_flops
    op: str
    batch: int | None
    measured: float | None
    expected: float
    ratio: float | None
    flagged: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CrossCheck":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def summary(self) -> str:
        r = "n/a" if self.ratio is None else f"{self.ratio:.3f}"
        flag = " FLAGGED" if self.flagged else ""
        return f"{self.name} {self.op} B={self.batch}: {r}{flag}"


def gemm_flops(spec: ModelSpec, op: str, batch: int) -> float | None:
    """``2·M·N·K`` summed over the GEMMs of ``op`` (an op or the ``mlp`` group) in one step; None if
    ``op`` holds no weight GEMM."""
    shapes = gemm_shapes(spec)
    members = GROUP_MEMBERS[op] if op in _GEMM_GROUPS else (op,)
    gemms = [shapes[m] for m in members if m in shapes]
    if not gemms:
        return None
    layers = 1 if op in STEP_OPS else spec.num_layers
    return float(sum(2 * batch * k * n for k, n in gemms) * layers)


def step_attention_bytes(spec: ModelSpec, batch: int, context: int, dtype: str) -> tuple[float, float]:
    """Analytic (KV bytes read, output bytes written) of attention over one whole step
    (:func:`gpuprobe.analytic.attention_bytes` times the layers; ``dtype`` normalised)."""
    a = attention_bytes(batch, context, num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads,
                        head_dim=spec.head_dim, elt_bytes=dtype_bytes(dtype))
    return float(a.kv_read * spec.num_layers), float(a.out_write * spec.num_layers)


def _ratio(measured: float | None, expected: float) -> float | None:
    if measured is None or expected <= 0:
        return None
    return measured / expected


def _off(ratio: float | None, tol: float) -> bool:
    return ratio is None or abs(ratio - 1.0) > tol


def _compared(name: str, op: str, batch: int, measured: float | None, expected: float, tol: float, *,
              match: str, differ: str, missing: str) -> CrossCheck:
    """``measured`` against ``expected``, noted ``match``, ``differ`` (off by more than ``tol``) or ``missing``."""
    r = _ratio(measured, expected)
    note = missing if r is None else differ if _off(r, tol) else match
    return CrossCheck(name, op, batch, measured, expected, r, _off(r, tol), note)


def check_point(op: str, batch: int, *, spec: ModelSpec, context: int, dtype: str,
                dram_read_bytes: float | None = None, dram_write_bytes: float | None = None,
                flops_tensor: float | None = None, flops_total: float | None = None,
                tol: float = TOLERANCE) -> list[CrossCheck]:
    """The cross-checks that apply to one measured op at one batch size (step totals).

    ``flops_total``: every FLOP the counters saw (tensor pipe + FP32/FP16/FP64 instructions). A GEMM
    whose tensor-pipe FLOPs fall short of 2MNK while all its counted FLOPs reach it ran on CUDA cores
    (cuBLAS picks GEMV-style kernels at batch 1): its check compares all counted FLOPs and says so."""
    out: list[CrossCheck] = []
    if op == "attention":
        kv, written = step_attention_bytes(spec, batch, context, dtype)
        out.append(_compared("attention_dram_read", op, batch, dram_read_bytes, kv, tol,
                             match="counter reads match the KV bytes",
                             differ="reads differ from the KV bytes: a backend that gathers or copies the cache "
                                    "(the `torch` reference) or a partial profile moves more; a cache hit moves less",
                             missing="no DRAM read counter in the report"))
        out.append(_compared("attention_dram_write", op, batch, dram_write_bytes, written, tol,
                             match="writes match the output bytes",
                             differ="writes include L2 write-backs of earlier kernels' data, charged to the kernel "
                                    "that evicts them (docs/contracts.md section 3): compare reads for the claim",
                             missing="no DRAM write counter in the report"))
    expected = gemm_flops(spec, op, batch)
    if expected is not None:
        r = _ratio(flops_tensor, expected)
        r_all = _ratio(flops_total, expected)
        measured = flops_tensor
        if r is not None and r < 1.0 - tol and r_all is not None and r_all >= 1.0 - tol:
            note = (f"ran on CUDA cores: tensor-pipe FLOPs are {r:.2f}x 2MNK, all counted FLOPs {r_all:.2f}x "
                    f"(a GEMV-style kernel, usual at batch {batch})")
            out.append(CrossCheck("gemm_flops", op, batch, flops_total, expected, r_all, _off(r_all, tol), note))
            return out
        if r is None:
            note = "no tensor FLOP counters (sm__ops_path_tensor_src_*) in the report"
        elif r < 1.0 - tol:
            note = "counters saw less tensor work than 2MNK: kernels missing from the profile or not on tensor cores"
        elif r > 1.0 + tol:
            note = f"padding: the GEMM's tiles execute {r:.2f}x the useful FLOPs (tile rows beyond batch {batch})"
        else:
            note = "padding within 10%"
        out.append(CrossCheck("gemm_flops", op, batch, measured, expected, r, _off(r, tol), note))
    return out


def check_points(points: Iterable[Any], spec: ModelSpec, context: int, dtype: str,
                 tol: float = TOLERANCE) -> list[CrossCheck]:
    """Cross-checks of counter points (``RooflinePoint`` or dict, ncu mode): a point's own ``context``
    (an extra field) wins over ``context``; a counter the report lacks gives a flagged check, not none."""
    out: list[CrossCheck] = []
    for p in points:
        d = p.to_dict() if hasattr(p, "to_dict") else dict(p)
        ctx = d.get("context") or context
        out += check_point(d["op"], int(d["batch"]), spec=spec, context=int(ctx), dtype=dtype,
                           dram_read_bytes=d.get("dram_read_bytes"), dram_write_bytes=d.get("dram_write_bytes"),
                           flops_tensor=d.get("flops_tensor"), flops_total=d.get("flops_executed"), tol=tol)
    return out


def failures(checks: Iterable[CrossCheck], tol: float = TOLERANCE) -> list[CrossCheck]:
    """Flags that mean a measurement is wrong: attention reads off by more than ``tol``, or GEMM counters
    below ``1 - tol`` of 2MNK. Padding and write-backs are flagged but are not failures."""
    bad = []
    for c in checks:
        if c.name == "attention_dram_read" and _off(c.ratio, tol):
            bad.append(c)
        elif c.name == "gemm_flops" and (c.ratio is None or c.ratio < 1.0 - tol):
            bad.append(c)
    return bad
