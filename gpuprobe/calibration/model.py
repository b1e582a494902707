"""The calibrated per-op time model and the :class:`Calibration` that holds one per op class
(docs/contracts.md section 11; docs/prediction.md).

One call's predicted time is ``t0 + floor / efficiency(shape)``, never below the floor. ``t0`` is the
class's fixed cost (launch and tail of a kernel that moves almost nothing); ``1 / efficiency`` is
stored as ``log`` values on a grid over log2 shape features (:mod:`gpuprobe.calibration.grid`),
interpolated between measured shapes; outside the measured range the fitted slopes of a linear model
in the same features carry it on (the fitted fallback).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from gpuprobe.calibration.grid import Grid
from gpuprobe.calibration.shapes import OP_CLASSES, SHAPE_COLUMNS, clean_shape
from gpuprobe.errors import UserError

SCHEMA_VERSION = 1
FORM = "t0 + floor / efficiency(shape), log-grid"

#: The log2 shape features the efficiency of each class depends on.
FEATURES: dict[str, tuple[str, ...]] = {
    "gemm": ("log2_m", "log2_n", "log2_k"),
    "decode_attention": ("log2_batch_x_kv_heads", "log2_context", "log2_group", "log2_head_dim"),
    "elementwise": ("log2_bytes",),
}


def features(op_class: str, cols: Mapping[str, Any]) -> np.ndarray:
    """``[rows, d]`` log2 features of shape columns (arrays or scalars)."""
    def lg(v):
        return np.log2(np.asarray(v, dtype=float))

    if op_class == "gemm":
        f = [lg(cols["m"]), lg(cols["n"]), lg(cols["k"])]
    elif op_class == "decode_attention":
        b, c, hq, hkv, d = (np.asarray(cols[x], dtype=float) for x in SHAPE_COLUMNS["decode_attention"])
        f = [lg(b * hkv), lg(c), lg(hq / hkv), lg(d)]
    elif op_class == "elementwise":
        f = [lg(cols["bytes"])]
    else:
        raise UserError(f"unknown op class '{op_class}'; use one of {', '.join(OP_CLASSES)}.")
    return np.atleast_2d(np.stack([np.atleast_1d(x) for x in f], axis=1))


@dataclass
class ClassModel:
    """The calibrated model of one op class."""

    op_class: str
    t0_s: float
    grid: Grid
    log_inv_eff: np.ndarray  # node values: log(floor / (t - t0))
    slopes: np.ndarray  # fallback slopes per feature (log units per log2 unit)
    domain: dict[str, list[float]]
    rows: int
    heldout: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # affine and single-efficiency fits, per-class source

    def predict_many(self, cols: Mapping[str, Any], floor_s: np.ndarray) -> np.ndarray:
        g = self.grid.evaluate(self.log_inv_eff, self.slopes, features(self.op_class, cols))
        floor = np.asarray(floor_s, dtype=float)
        return np.maximum(self.t0_s + floor * np.exp(g), floor)

    def to_dict(self) -> dict[str, Any]:
        return {"form": FORM, "t0_s": self.t0_s, "features": list(FEATURES[self.op_class]),
                "grid": {"axes": [list(a) for a in self.grid.axes],
                         "log_inv_efficiency": [round(float(v), 4) for v in self.log_inv_eff]},
                "fallback_slopes": [round(float(s), 5) for s in self.slopes],
                "domain": self.domain, "rows": self.rows, "heldout": self.heldout, **self.extra}

    @classmethod
    def from_dict(cls, op_class: str, d: Mapping[str, Any]) -> "ClassModel":
        try:
            axes = tuple((float(a[0]), float(a[1]), int(a[2])) for a in d["grid"]["axes"])
            grid = Grid(axes)
            values = np.asarray(d["grid"]["log_inv_efficiency"], dtype=float)
            slopes = np.asarray(d["fallback_slopes"], dtype=float)
            t0 = float(d["t0_s"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"calibration class '{op_class}': missing or bad field {e}") from None
        if len(axes) != len(FEATURES[op_class]) or values.size != grid.size or slopes.size != len(axes):
            raise UserError(f"calibration class '{op_class}': grid of {values.size} values does not match its axes "
                            f"{[list(a) for a in axes]} and {len(FEATURES[op_class])} features.")
        if not (np.isfinite(values).all() and np.isfinite(slopes).all() and math.isfinite(t0) and t0 >= 0):
            raise UserError(f"calibration class '{op_class}': non-finite or negative parameters.")
        known = {"form", "t0_s", "features", "grid", "fallback_slopes", "domain", "rows", "heldout"}
        return cls(op_class, t0, grid, values, slopes, dict(d.get("domain", {})), int(d.get("rows", 0)),
                   dict(d.get("heldout", {})), {k: v for k, v in d.items() if k not in known})


@dataclass
class Calibration:
    """Per GPU, dtype and kernel source: the model of each op class, with its provenance."""

    gpu: str
    dtype: str
    kernel_source: str
    source: dict[str, Any]
    created: str
    classes: dict[str, ClassModel]
    note: str | None = None  # e.g. "fp16 served by the bf16 calibration: the tables have no fp16 rows"
    served_as: str | None = None  # the dtype this calibration serves when that is not its own (fp16 by bf16)

    def predict(self, op_class: str, shape: Mapping[str, float], floor_s: float) -> float:
        """Predicted seconds of one call of shape ``shape`` whose floor is ``floor_s``; the floor itself
        for a class this calibration lacks. Never below ``floor_s``."""
        model = self.classes.get(op_class)
        if model is None or not floor_s > 0:
            return float(floor_s)
        return float(model.predict_many(clean_shape(op_class, shape), np.array([floor_s]))[0])

    def predict_op_time(self, spec, cost, gpu, batch: int, context: int, dtype: str, kernels: str) -> float | None:
        """Predicted seconds of an analytic op cost's calls in one step (:func:`gpuprobe.calibration.step.predict_op`);
        None where this calibration lacks the op's class. Lets the analytic roofline use a calibration it
        does not import."""
        from gpuprobe.calibration.step import predict_op

        return predict_op(self, spec, cost, gpu, batch, context, dtype, kernels)[1]

    def heldout_median_abs_err(self, op_class: str) -> float | None:
        model = self.classes.get(op_class)
        v = model.heldout.get("median_abs_err") if model is not None else None
        return None if v is None else float(v)

    @property
    def label(self) -> str:
        """Short provenance, e.g. ``vllm 0.24.0 tables (aiconfigurator-core 0.12.0), H200, bf16``."""
        s = self.source
        if s.get("kind") == "aiconfigurator":
            what = f"{s.get('framework', self.kernel_source)} {s.get('framework_version', '')} tables " \
                   f"({s.get('name', 'aiconfigurator-core')} {s.get('version', '')})"
        else:
            what = f"{s.get('name') or s.get('kind', 'measured')}"
        dtype = f"{self.dtype} serving {self.served_as}" if self.served_as else self.dtype
        gpu = self.gpu.upper() + (f" (from {s['transferred_from'].upper()})" if s.get("transferred_from") else "")
        return " ".join(f"{what}, {gpu}, {dtype}".split())

    def provenance(self) -> dict[str, Any]:
        """What roofline.json records of the calibration a prediction used."""
        return {"label": self.label, "gpu": self.gpu, "dtype": self.dtype, "kernel_source": self.kernel_source,
                "source": self.source, "created": self.created, "note": self.note,
                "served_as": self.served_as,
                "heldout_median_abs_err": {c: self.heldout_median_abs_err(c) for c in self.classes}}

    def to_dict(self) -> dict[str, Any]:
        d = {"schema_version": SCHEMA_VERSION, "gpu": self.gpu, "dtype": self.dtype,
             "kernel_source": self.kernel_source, "source": self.source, "created": self.created,
             "classes": {c: m.to_dict() for c, m in self.classes.items()}}
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibration":
        if not isinstance(d, Mapping):
            raise UserError("not a gpuprobe calibration: expected a JSON object.")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"calibration schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION}; "
                            "rewrite it with `gpuprobe calibrate`.")
        missing = [k for k in ("gpu", "dtype", "kernel_source", "source", "created", "classes") if k not in d]
        if missing:
            raise UserError(f"not a gpuprobe calibration: missing {', '.join(missing)}.")
        unknown = [c for c in d["classes"] if c not in OP_CLASSES]
        if unknown:
            raise UserError(f"calibration has unknown op classes {unknown}; known: {', '.join(OP_CLASSES)}.")
        classes = {c: ClassModel.from_dict(c, m) for c, m in d["classes"].items()}
        return cls(str(d["gpu"]), str(d["dtype"]), str(d["kernel_source"]), dict(d["source"]), str(d["created"]),
                   classes, d.get("note"))
