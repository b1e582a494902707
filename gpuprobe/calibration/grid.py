"""A regular grid in log2 space of an op's shape features, its multilinear weights and the
regularised least-squares fit of its node values (numpy only: no scipy needed to fit or predict).

A grid has one axis per feature: ``(start, step, count)`` in log2 units. A point's value is the
multilinear interpolation of the ``2^d`` nodes around it; outside the grid the point is clamped
to the edge and the fitted slopes carry the value on (``value + slope * excess``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Grid:
    axes: tuple[tuple[float, float, int], ...]  # (start, step, count) per feature, log2 units

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a[2] for a in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @classmethod
    def covering(cls, x: np.ndarray, steps: Sequence[float]) -> "Grid":
        """The smallest grid with nodes at multiples of each axis's step that holds every row of ``x``."""
        axes = []
        for j, step in enumerate(steps):
            lo = math.floor(float(x[:, j].min()) / step) * step
            hi = math.ceil(float(x[:, j].max()) / step) * step
            axes.append((lo, step, max(2, int(round((hi - lo) / step)) + 1)))
        return cls(tuple(axes))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([a[0] for a in self.axes])
        hi = np.array([a[0] + a[1] * (a[2] - 1) for a in self.axes])
        return lo, hi

    def weights(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(node indices, weights), each ``[rows, 2^d]``: the multilinear stencil of each row of ``x``
        (clamped to the grid)."""
        lo, hi = self.bounds()
        xc = np.clip(x, lo, hi)
        d = len(self.axes)
        base = np.empty((len(x), d), dtype=np.int64)
        frac = np.empty((len(x), d))
        for j, (start, step, count) in enumerate(self.axes):
            u = (xc[:, j] - start) / step
            i0 = np.clip(np.floor(u).astype(np.int64), 0, count - 2)
            base[:, j], frac[:, j] = i0, u - i0
        strides = np.array([int(np.prod(self.shape[j + 1:])) for j in range(d)], dtype=np.int64)
        corners = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T  # [2^d, d]
        idx = ((base[:, None, :] + corners[None]) * strides).sum(-1)
        w = np.prod(np.where(corners[None] == 1, frac[:, None, :], 1.0 - frac[:, None, :]), axis=-1)
        return idx, w

    def excess(self, x: np.ndarray) -> np.ndarray:
        """How far each row lies outside the grid, per feature (0 inside)."""
        lo, hi = self.bounds()
        return x - np.clip(x, lo, hi)

    def nodes(self) -> np.ndarray:
        """Feature values of every node, ``[size, d]`` (row-major, as the node values are stored)."""
        mesh = np.meshgrid(*[a[0] + a[1] * np.arange(a[2]) for a in self.axes], indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def evaluate(self, values: np.ndarray, slopes: np.ndarray, x: np.ndarray) -> np.ndarray:
        idx, w = self.weights(x)
        return (values[idx] * w).sum(1) + self.excess(x) @ slopes


def _second_differences(v: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    g = v.reshape(shape)
    out = []
    for ax, n in enumerate(shape):
        if n >= 3:
            a = np.take(g, range(0, n - 2), axis=ax)
            b = np.take(g, range(1, n - 1), axis=ax)
            c = np.take(g, range(2, n), axis=ax)
            out.append(a - 2 * b + c)
    return out


def _second_differences_t(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    g = np.zeros(shape)
    k = 0
    for ax, n in enumerate(shape):
        if n >= 3:
            r = parts[k]
            k += 1
            sl = [slice(None)] * len(shape)
            for off, coef in ((0, 1.0), (1, -2.0), (2, 1.0)):
                sl[ax] = slice(off, n - 2 + off)
                g[tuple(sl)] += coef * r
    return g.ravel()


def fit_grid(grid: Grid, x: np.ndarray, y: np.ndarray, prior: np.ndarray, smooth: float, tie: float,
             iters: int = 2000, tol: float = 1e-9) -> np.ndarray:
    """Node values minimising ``|W v - y|^2 + smooth |D2 v|^2 + tie |v - prior|^2`` (conjugate gradients on
    the normal equations): W the multilinear stencils of the rows, D2 second differences along each axis,
    ``prior`` the node values of the fitted fallback (what nodes far from any row fall back to)."""
    idx, w = grid.weights(x)
    n = grid.size
    shape = grid.shape

    def apply(v: np.ndarray) -> np.ndarray:
        r = (v[idx] * w).sum(1)
        wt = np.bincount(idx.ravel(), weights=(w * r[:, None]).ravel(), minlength=n)
        return wt + smooth * _second_differences_t(_second_differences(v, shape), shape) + tie * v

    b = np.bincount(idx.ravel(), weights=(w * y[:, None]).ravel(), minlength=n) + tie * prior
    v = prior.copy()
    r = b - apply(v)
    p = r.copy()
    rs = float(r @ r)
    stop = tol * float(b @ b)
    for _ in range(iters):
        if rs <= stop:
            break
        ap = apply(p)
        alpha = rs / float(p @ ap)
        v += alpha * p
        r -= alpha * ap
        new = float(r @ r)
        p = r + (new / rs) * p
        rs = new
    return v
