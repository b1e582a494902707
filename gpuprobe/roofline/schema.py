"""Roofline points, bound and limiter classes, and the ``roofline.json`` contract (schema_version 1).

Analytic results made with a calibration carry, per point, ``floor_s``, ``predicted_s`` and ``time_source``
(``time_s`` is then the prediction), and at the top level ``calibration`` (the calibration's provenance and
held-out error, or null) and ``steps`` (per batch: ``floor_s``, ``predicted_s``, ``tokens_per_s_floor``,
``tokens_per_s_predicted``).

Every mode (``analytic``, ``timing``, ``ncu``) produces a :class:`RooflineResult`; ``write`` stores
``roofline.json`` and ``roofline.csv``. Field names and meanings are fixed by docs/contracts.md
section 2: add fields freely, never rename. Each point is one op summed over all layers of one
decode step at one batch size; times in seconds, bytes in bytes, FLOPs in FLOPs.
"""
from __future__ import annotations

import csv
import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from gpuprobe import __version__
from gpuprobe.errors import UserError
from gpuprobe.jsonsafe import dumps, json_default
from gpuprobe.specs.gpus import normalize_dtype

SCHEMA_VERSION = 1
MODES = ("analytic", "timing", "ncu", "nsys")

#: Thresholds of the limiter class of measured points (written into roofline.json as ``limiter_rule``).
LIMITER_RULE: dict[str, Any] = {
    "memory": "dram_pct_of_measured >= 60",
    "compute": "sm_pct >= 60 or tensor_pct >= 60",
    "latency": "otherwise: neither DRAM nor the SMs are well used",
    "threshold_pct": 60.0,
}


@dataclass(frozen=True)
class Roof:
    """One ceiling of a (hierarchical) roofline: a bandwidth or a FLOP rate."""

    name: str  # "dram", "l2", "smem", "fp32", "tensor_bf16", "tensor_fp16", "cublas_bf16", ...
    kind: str  # "memory" | "compute"
    value: float  # bytes/s for memory roofs, FLOP/s for compute roofs
    source: str  # "datasheet" | "measured" | "ncu_peak"

    def to_dict(self) -> dict[str, Any]:
        key = "bytes_per_s" if self.kind == "memory" else "flops_per_s"
        return {"name": self.name, "kind": self.kind, key: self.value, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Roof":
        value = d.get("bytes_per_s", d.get("flops_per_s"))
        return cls(d["name"], d["kind"], float(value), d["source"])


@dataclass(frozen=True)
class Ceilings:
    """The two roofs ``bound`` uses: a DRAM bandwidth and the dtype's compute peak."""

    dram_bytes_per_s: float
    flops_per_s: float
    dram_roof: str = "dram"
    compute_roof: str = "tensor_bf16"
    dram_source: str = "datasheet"
    compute_source: str = "datasheet"

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the two roofs meet."""
        return self.flops_per_s / self.dram_bytes_per_s


_SOURCE_RANK = {"measured": 0, "datasheet": 1, "ncu_peak": 2}


def datasheet_roofs(gpu, dtype: str) -> list[Roof]:
    """Datasheet roofs of a :class:`~gpuprobe.specs.gpus.GPUSpec`: DRAM, FP32 and the dtype's tensor peak."""
    roofs = [Roof("dram", "memory", gpu.dram_bytes_per_s, "datasheet"),
             Roof("fp32", "compute", gpu.fp32_flops_per_s, "datasheet")]
    name = compute_roof_name(dtype)
    peak = gpu.tensor_flops_per_s(dtype)
    if name != "fp32" and peak is not None:  # None: the GPU has no tensor path for this dtype (bf16 on V100, T4)
        roofs.append(Roof(name, "compute", peak, "datasheet"))
    return roofs


def compute_roof_name(dtype: str) -> str:
    d = normalize_dtype(dtype)
    return "fp32" if d == "fp32" else f"tensor_{d}"


def select_ceilings(roofs: Iterable[Roof], dtype: str) -> Ceilings:
    """The roofs ``bound`` uses: measured DRAM when known, else datasheet; the dtype's compute roof
    (measured when known, else datasheet)."""
    roofs = list(roofs)

    def best(name: str) -> Roof:
        cands = [r for r in roofs if r.name == name]
        if not cands:
            raise ValueError(f"no '{name}' roof among {[r.name for r in roofs]}")
        return min(cands, key=lambda r: _SOURCE_RANK.get(r.source, 9))

    dram = best("dram")
    comp = best(compute_roof_name(dtype))
    return Ceilings(dram.value, comp.value, dram.name, comp.name, dram.source, comp.source)


def roofs_and_ceilings(gpu, dtype: str, *, extra_roofs: Iterable[Roof] = (),
                       measured_dram_bytes_per_s: float | None = None,
                       ncu_peaks: Mapping[str, float] | None = None) -> tuple[list[Roof], Ceilings | None, list[str]]:
    """Every roof a result knows, the two ``bound`` uses, and notes on what was missing: the one place a
    roofline result (analytic, measured, a report, a trace) chooses its ceilings.

    Roofs: the measured copy bandwidth (``measured``), ``extra_roofs`` (e.g. cached measured ceilings),
    the datasheet of ``gpu`` (a :class:`~gpuprobe.specs.gpus.GPUSpec`, or None for a GPU the registry does
    not know; a peak it lacks is no roof) and ``ncu_peaks`` (a report's own peaks by roof name,
    ``ncu_peak``). Ceilings: :func:`select_ceilings`; the compute roof of ``dtype``, else FP32 with a note
    (no tensor roof of that dtype: V100, T4, consumer cards); None when no DRAM or compute roof is known,
    with a note saying what to pass."""
    roofs: list[Roof] = []
    if measured_dram_bytes_per_s:
        roofs.append(Roof("dram", "memory", float(measured_dram_bytes_per_s), "measured"))
    roofs += [r for r in extra_roofs if not (r.name == "dram" and r.source == "measured" and measured_dram_bytes_per_s)]
    if gpu is not None:
        roofs += [r for r in datasheet_roofs(gpu, dtype) if r.value is not None and r.value > 0]
    for name, value in (ncu_peaks or {}).items():
        if value:
            roofs.append(Roof(name, "memory" if name in ("dram", "l2") else "compute", float(value), "ncu_peak"))
    notes: list[str] = []
    names = {r.name for r in roofs}
    want = compute_roof_name(dtype)
    use_dtype = dtype
    if "dram" in names and want not in names and "fp32" in names:
        notes.append(f"no {want} roof for this GPU: the compute ceiling is FP32")
        use_dtype = "fp32"
    lacking = [x for x in ("dram", compute_roof_name(use_dtype)) if x not in names]
    if lacking:
        notes.append(f"no {' or '.join(lacking)} roof known: points have no bound (pass --gpu NAME, see "
                     "`gpuprobe gpus`, or --measured-dram-tbps)")
        return roofs, None, notes
    return roofs, select_ceilings(roofs, use_dtype), notes


def intensity_and_bound(flops: float | None, dram_bytes: float | None,
                        ceilings: Ceilings | None) -> tuple[float | None, str | None]:
    """FLOP per DRAM byte and the bound it implies: None for both when FLOPs or bytes are missing or the
    bytes are 0 (an op that moves no DRAM bytes has no intensity), ``bound`` None without ceilings."""
    if flops is None or not dram_bytes:
        return None, None
    intensity = flops / dram_bytes
    return intensity, (classify_bound(intensity, ceilings) if ceilings is not None else None)


def classify_bound(intensity: float, ceilings: Ceilings) -> str:
    """``memory`` below the ridge of ``ceilings``, ``compute`` at or above it: one meaning in every mode."""
    return "compute" if intensity >= ceilings.ridge else "memory"


def classify_limiter(dram_pct_of_measured: float | None, sm_pct: float | None, tensor_pct: float | None,
                     threshold_pct: float = LIMITER_RULE["threshold_pct"]) -> str | None:
    """What limits a measured kernel: ``memory``, ``compute`` or ``latency`` (None without measurements)."""
    if dram_pct_of_measured is None and sm_pct is None and tensor_pct is None:
        return None
    if dram_pct_of_measured is not None and dram_pct_of_measured >= threshold_pct:
        return "memory"
    if max(sm_pct or 0.0, tensor_pct or 0.0) >= threshold_pct:
        return "compute"
    return "latency"


@dataclass
class RooflinePoint:
    """One op at one batch size, summed over the layers of one decode step."""

    op: str
    batch: int | None
    flops: float
    dram_bytes: float
    time_s: float | None
    intensity: float | None
    bound: str | None
    flops_useful: float | None = None
    flops_executed: float | None = None
    dram_read_bytes: float | None = None
    dram_write_bytes: float | None = None
    dram_pct_of_measured: float | None = None
    dram_pct_of_ncu_peak: float | None = None
    sm_pct: float | None = None
    tensor_pct: float | None = None
    limiter: str | None = None
    layers_profiled: int | None = None
    scaled: bool = False
    n_kernels: int | None = None
    kernels: list[dict[str, Any]] | None = None
    #: The analytic floor of the op (``max(flops / peak, bytes / bandwidth)`` on ``ceilings``), kept beside
    #: ``time_s`` when ``time_s`` is a prediction or a measurement (docs/contracts.md section 11).
    floor_s: float | None = None
    #: The calibrated prediction (docs/prediction.md); None without a calibration.
    predicted_s: float | None = None
    #: What ``time_s`` is: the floor, a calibration's prediction (named by its label), or a measurement.
    time_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_flops_per_s(self) -> float | None:
        return self.flops / self.time_s if self.time_s else None

    @property
    def achieved_bytes_per_s(self) -> float | None:
        return self.dram_bytes / self.time_s if self.time_s else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        if d["kernels"] is None:
            d.pop("kernels")
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RooflinePoint":
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})


def make_point(op: str, batch: int | None, flops: float, dram_bytes: float, time_s: float | None,
               ceilings: Ceilings | None, **kw: Any) -> RooflinePoint:
    """A point with ``intensity`` and ``bound`` derived from its FLOPs, bytes and the ceilings
    (:func:`intensity_and_bound`, as for every point of every mode)."""
    intensity, bound = intensity_and_bound(flops, dram_bytes, ceilings)
    return RooflinePoint(op, batch, float(flops), float(dram_bytes), time_s, intensity, bound, **kw)


@dataclass
class RooflineResult:
    """A whole roofline: ceilings, roofs and points of one model (or report) on one GPU."""

    model: str | None
    gpu: str
    mode: str
    context: int | None
    dtype: str | None
    layers: int | None
    ceilings: Ceilings | None  # None: no roof is known for this GPU (a report from an unknown GPU with no peaks)
    roofs: list[Roof]
    points: list[RooflinePoint]
    batch: list[int] | int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    limiter_rule: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        c = self.ceilings
        d = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model, "gpu": self.gpu, "mode": self.mode, "context": self.context,
            "dtype": self.dtype, "layers": self.layers, "batch": self.batch,
            "ceilings": None if c is None else {
                "dram_bytes_per_s": c.dram_bytes_per_s, "flops_per_s": c.flops_per_s,
                "dram_roof": c.dram_roof, "compute_roof": c.compute_roof,
                "dram_source": c.dram_source, "compute_source": c.compute_source,
                "ridge_flops_per_byte": c.ridge},
            "roofs": [r.to_dict() for r in self.roofs],
            "points": [p.to_dict() for p in self.points],
            "provenance": self.provenance,
        }
        if self.limiter_rule is not None:
            d["limiter_rule"] = self.limiter_rule
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RooflineResult":
        try:
            c = d["ceilings"]
            ceilings = None if c is None else Ceilings(
                float(c["dram_bytes_per_s"]), float(c["flops_per_s"]),
                c.get("dram_roof", "dram"), c.get("compute_roof", "tensor_bf16"),
                c.get("dram_source", "datasheet"), c.get("compute_source", "datasheet"))
            known = {"schema_version", "model", "gpu", "mode", "context", "dtype", "layers", "batch",
                     "ceilings", "roofs", "points", "provenance", "limiter_rule"}
            return cls(
                model=d.get("model"), gpu=d["gpu"], mode=d["mode"], context=d.get("context"),
                dtype=d.get("dtype"), layers=d.get("layers"), ceilings=ceilings,
                roofs=[Roof.from_dict(r) for r in d.get("roofs", [])],
                points=[RooflinePoint.from_dict(p) for p in d["points"]], batch=d.get("batch"),
                provenance=d.get("provenance", {}), limiter_rule=d.get("limiter_rule"),
                extra={k: v for k, v in d.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"not a gpuprobe roofline.json: missing or bad field {e}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "RooflineResult":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read roofline file '{p}': {e}") from None
        return cls.from_dict(data)

    def to_json(self) -> str:
        """``roofline.json``'s text: strict JSON (a missing or non-finite value is ``null``, never NaN)."""
        return dumps(self.to_dict(), indent=2)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``roofline.json`` and ``roofline.csv`` into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        jpath, cpath = out / "roofline.json", out / "roofline.csv"
        tmp = jpath.with_suffix(".json.tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(jpath)
        rows = [{k: v for k, v in p.to_dict().items() if not isinstance(v, (list, dict))} for p in self.points]
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        with open(cpath, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        return jpath, cpath

    def points_by_op(self) -> dict[str, list[RooflinePoint]]:
        out: dict[str, list[RooflinePoint]] = {}
        for p in self.points:
            out.setdefault(p.op, []).append(p)
        for pts in out.values():
            pts.sort(key=lambda p: (p.batch is None, p.batch or 0))
        return out


#: ``json.dumps(default=...)`` of roofline results (the one in :mod:`gpuprobe.jsonsafe`).
_json_default = json_default


def git_sha() -> str | None:
    """The git commit of the gpuprobe checkout, when it runs from one."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(**extra: Any) -> dict[str, Any]:
    """Who made a result and with what: gpuprobe version and SHA, command line, library versions."""
    p: dict[str, Any] = {
        "gpuprobe_version": __version__,
        "git_sha": git_sha(),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    for mod in ("torch", "triton"):
        m = sys.modules.get(mod)
        p[f"{mod}_version"] = getattr(m, "__version__", None) if m else None
    p.update(extra)
    return p
