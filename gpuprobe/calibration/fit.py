"""Fitting a :class:`~gpuprobe.calibration.model.ClassModel` to measured per-op rows, with whole shapes held out.

The input is a measurement frame (:mod:`gpuprobe.calibration.sources`): one row per measured call with
``op_class``, the class's shape columns, ``measured_s``, ``floor_s`` (on the GPU's datasheet roofs) and
``shape_key`` (what a held-out shape is: a GEMM's weight shape ``n x k`` with every ``m``, an attention's
head configuration with every batch and context, an elementwise call's size). A fraction of the shape
keys is held out, the model is fitted on the rest and its error measured on the held-out rows; the
stored model is then refitted on every row. Deterministic: the same rows give the same parameters.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gpuprobe.calibration.grid import Grid, fit_grid
from gpuprobe.calibration.model import ClassModel, features
from gpuprobe.calibration.shapes import SHAPE_COLUMNS
from gpuprobe.errors import UserError

DEFAULT_HOLDOUT = 0.2
SEED = 0
#: Grid step of each feature, log2 units.
STEPS: dict[str, tuple[float, ...]] = {"gemm": (1.0, 1.0, 1.0), "decode_attention": (1.0, 1.0, 1.0, 1.0),
                                       "elementwise": (1.0,)}
#: Regularisation, per row per node: smoothness (second differences) and the tie to the fallback.
SMOOTH, TIE = 0.05, 1e-3


def abs_errors(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(pred, float) - np.asarray(measured, float)) / np.asarray(measured, float)


def error_summary(pred: np.ndarray, measured: np.ndarray) -> dict[str, float | None]:
    """median, mean and p90 of ``|pred - measured| / measured`` (None without rows)."""
    e = abs_errors(pred, measured)
    if e.size == 0:
        return {"median_abs_err": None, "mean_abs_err": None, "p90_abs_err": None}
    return {"median_abs_err": round(float(np.median(e)), 4), "mean_abs_err": round(float(np.mean(e)), 4),
            "p90_abs_err": round(float(np.quantile(e, 0.9)), 4)}


def single_efficiency(floor: np.ndarray, t: np.ndarray) -> float:
    """One efficiency per class: the geometric mean of ``floor / t``."""
    return float(np.exp(np.mean(np.log(floor / t))))


def affine_fit(floor: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``(t0, efficiency)`` of ``t = t0 + floor / efficiency`` minimising squared log errors (a search over
    t0, then over the efficiency)."""
    lt = np.log(t)
    best = (math.inf, 0.0, 1.0)
    for t0 in np.concatenate([[0.0], np.quantile(t, 0.5) * np.geomspace(1e-3, 1.0, 48)]):
        lo, hi = -9.0, 1.5
        for _ in range(40):  # golden-section search on log(efficiency)
            a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
            fa = np.sum((np.log(t0 + floor / math.exp(a)) - lt) ** 2)
            fb = np.sum((np.log(t0 + floor / math.exp(b)) - lt) ** 2)
            lo, hi = (lo, b) if fa < fb else (a, hi)
        e = math.exp((lo + hi) / 2)
        f = float(np.sum((np.log(t0 + floor / e) - lt) ** 2))
        if f < best[0]:
            best = (f, float(t0), e)
    return best[1], best[2]


def _cols(frame: pd.DataFrame, op_class: str) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(float) for c in SHAPE_COLUMNS[op_class]}


def fit_rows(op_class: str, frame: pd.DataFrame) -> ClassModel:
    """The model of one class fitted to every row of ``frame`` (no held-out error)."""
    if frame.empty:
        raise UserError(f"no measured {op_class} rows to fit.")
    t = frame["measured_s"].to_numpy(float)
    floor = frame["floor_s"].to_numpy(float)
    x = features(op_class, _cols(frame, op_class))
    t0_aff, eff_aff = affine_fit(floor, t)
    t0 = min(t0_aff, 0.9 * float(t.min()))
    y = np.log(np.maximum(t - t0, 0.05 * t) / floor)
    design = np.hstack([np.ones((len(x), 1)), x])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    grid = Grid.covering(x, STEPS[op_class])
    prior = coef[0] + grid.nodes() @ coef[1:]
    per_node = len(x) / grid.size
    values = fit_grid(grid, x, y, prior, smooth=SMOOTH * per_node + 1e-6, tie=TIE * per_node + 1e-9)
    domain = {c: [float(frame[c].min()), float(frame[c].max())] for c in SHAPE_COLUMNS[op_class]}
    extra = {"affine": {"t0_s": t0_aff, "efficiency": round(eff_aff, 5)},
             "single_efficiency": round(single_efficiency(floor, t), 5)}
    return ClassModel(op_class, t0, grid, np.round(values, 4), np.round(coef[1:], 5), domain, len(frame), {}, extra)


def holdout_split(keys: pd.Series, fraction: float, seed: int = SEED) -> np.ndarray:
    """A boolean mask of the rows whose shape key is held out: ``fraction`` of the distinct keys, drawn
    with a fixed seed (never some rows of a shape)."""
    if not 0 <= fraction < 1:
        raise UserError(f"--holdout must be a fraction in [0, 1), got {fraction}.")
    uniq = sorted(set(keys))
    n = int(round(fraction * len(uniq)))
    if fraction > 0 and len(uniq) >= 2:
        n = min(max(n, 1), len(uniq) - 1)
    else:
        n = 0
    chosen = set(np.random.default_rng(seed).permutation(len(uniq))[:n].tolist())
    held = {uniq[i] for i in chosen}
    return keys.isin(held).to_numpy()


def heldout_report(op_class: str, frame: pd.DataFrame, fraction: float) -> tuple[dict[str, Any], pd.DataFrame]:
    """The held-out figures of a class (contracts section 11) and the held-out rows with every baseline's
    prediction (``pred_model``, ``pred_affine``, ``pred_single``, ``floor_s``)."""
    mask = holdout_split(frame["shape_key"], fraction)
    test = frame[mask].copy()
    train = frame[~mask]
    if test.empty or train.empty:
        return {"shapes": 0, "rows": 0, "median_abs_err": None, "mean_abs_err": None, "p90_abs_err": None,
                "floor_median_abs_err": None}, test
    model = fit_rows(op_class, train)
    test["pred_model"] = model.predict_many(_cols(test, op_class), test["floor_s"].to_numpy(float))
    tf, tt = train["floor_s"].to_numpy(float), train["measured_s"].to_numpy(float)
    t0, eff = affine_fit(tf, tt)
    test["pred_affine"] = np.maximum(t0 + test["floor_s"] / eff, test["floor_s"])
    test["pred_single"] = np.maximum(test["floor_s"] / single_efficiency(tf, tt), test["floor_s"])
    t = test["measured_s"].to_numpy(float)
    rep = {"shapes": int(test["shape_key"].nunique()), "rows": int(len(test)),
           **error_summary(test["pred_model"].to_numpy(), t)}
    floor = error_summary(test["floor_s"].to_numpy(), t)
    rep.update({f"floor_{k}": v for k, v in floor.items()})
    return rep, test


def fit_class(op_class: str, frame: pd.DataFrame, holdout: float = DEFAULT_HOLDOUT) -> ClassModel:
    """The stored model of one class: fitted on every row, with the error of a fit without the held-out shapes."""
    rep, _ = heldout_report(op_class, frame, holdout)
    model = fit_rows(op_class, frame)
    model.heldout = rep
    return model
