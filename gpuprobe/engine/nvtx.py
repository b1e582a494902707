"""NVTX ranges of the decode step, and a per-op CUDA-event timer hooked at the same points.

Naming (docs/contracts.md section 1): ranges nest ``decode`` > ``layer{i}`` > ``{op}``, with the
whole-step ops (``embed``, ``final_norm``, ``lm_head``, ``sample``) directly under ``decode``.
So ``ncu --nvtx --nvtx-include "decode/layer3/"`` selects layer 3's kernels and
``--nvtx-include "decode/layer3/attention/"`` its attention kernel.

Ranges go through a pluggable :class:`NvtxBackend`: the ``nvtx`` package when installed, else
``torch.cuda.nvtx`` when CUDA is present, else nothing. Tests swap in a :class:`RecordingBackend`
with :func:`use_backend`.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from gpuprobe.ops import STEP_RANGE, layer_range


class NvtxBackend(Protocol):
    """Where push/pop of a named range goes."""

    def push(self, name: str) -> None: ...

    def pop(self) -> None: ...


class NullBackend:
    """Drops every range."""

    def push(self, name: str) -> None:
        pass

    def pop(self) -> None:
        pass


class _CallingBackend:
    """Sends ranges to a library's push and pop functions."""

    def __init__(self, push: Callable[[str], object], pop: Callable[[], object]) -> None:
        self._push, self._pop = push, pop

    def push(self, name: str) -> None:
        self._push(name)

    def pop(self) -> None:
        self._pop()


class NvtxPackageBackend(_CallingBackend):
    """The ``nvtx`` package (default domain: what ``ncu --nvtx-include`` matches)."""

    def __init__(self) -> None:
        import nvtx

        super().__init__(nvtx.push_range, nvtx.pop_range)


class TorchNvtxBackend(_CallingBackend):
    """``torch.cuda.nvtx`` (needs a CUDA build of torch)."""

    def __init__(self) -> None:
        import torch.cuda.nvtx as tnvtx

        super().__init__(tnvtx.range_push, tnvtx.range_pop)


class RecordingBackend:
    """Records pushes and pops, for tests: ``events`` holds ``("push", name)`` / ``("pop", name)``,
    ``paths`` the full ``a/b/c/`` path of every push."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.paths: list[str] = []
        self.stack: list[str] = []

    def push(self, name: str) -> None:
        self.stack.append(name)
        self.events.append(("push", name))
        self.paths.append("/".join(self.stack) + "/")

    def pop(self) -> None:
        if not self.stack:
            raise AssertionError("NVTX pop without a matching push")
        self.events.append(("pop", self.stack.pop()))

    @property
    def balanced(self) -> bool:
        pushes = sum(1 for kind, _ in self.events if kind == "push")
        return not self.stack and pushes == len(self.events) - pushes


def _default_backend() -> NvtxBackend:
    try:
        return NvtxPackageBackend()
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return TorchNvtxBackend()
    except ImportError:
        pass
    return NullBackend()


_backend: NvtxBackend | None = None


def get_backend() -> NvtxBackend:
    """The backend ranges go to now (chosen on first use)."""
    global _backend
    if _backend is None:
        _backend = _default_backend()
    return _backend


def set_backend(backend: NvtxBackend | None) -> NvtxBackend | None:
    """Install ``backend`` (None: back to the default choice); returns the previous one."""
    global _backend
    prev, _backend = _backend, backend
    return prev


@contextlib.contextmanager
def use_backend(backend: NvtxBackend) -> Iterator[NvtxBackend]:
    """Send ranges to ``backend`` inside the block."""
    prev = set_backend(backend)
    try:
        yield backend
    finally:
        set_backend(prev)


# ---- per-op timer ---------------------------------------------------------------------------------
@dataclass
class OpTimes:
    """Per-op times of one step: ``per_op`` sums an op over layers; ``records`` keeps each call."""

    step_s: float
    per_op: dict[str, float]
    records: list[tuple[str, int | None, float]] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        """Each op's share of the step time."""
        return {op: t / self.step_s for op, t in self.per_op.items()} if self.step_s > 0 else {}


class OpTimer:
    """Times ops with CUDA events (or ``perf_counter`` on a CPU) at the points where ranges go.

    Events only record timestamps on the stream; :meth:`result` synchronises once. In eager mode the
    GPU idles between kernels while Python launches the next one, and an event pair around a small
    op measures that gap too. ``Engine.time_step`` avoids it by queueing a GPU sleep before the step
    (``torch.cuda._sleep``) so that every launch is queued before the GPU reaches it.
    """

    def __init__(self, device: "str | object" = "cuda") -> None:
        import torch

        self._torch = torch
        self.cuda = torch.device(device).type == "cuda"
        self._open: dict[tuple[str, int | None], object] = {}
        self._pairs: list[tuple[str, int | None, object, object]] = []

    def _mark(self) -> object:
        if self.cuda:
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self, op: str, layer: int | None = None) -> None:
        self._open[(op, layer)] = self._mark()

    def stop(self, op: str, layer: int | None = None) -> None:
        start = self._open.pop((op, layer))
        self._pairs.append((op, layer, start, self._mark()))

    def _elapsed(self, a: object, b: object) -> float:
        if self.cuda:
            return a.elapsed_time(b) / 1e3  # type: ignore[attr-defined]
        return float(b) - float(a)  # type: ignore[arg-type]

    def result(self) -> OpTimes:
        """Synchronise and sum: the ``decode`` pair is the step, every other pair an op."""
        if self.cuda:
            self._torch.cuda.synchronize()
        per_op: dict[str, float] = defaultdict(float)
        records, step_s = [], 0.0
        for op, layer, a, b in self._pairs:
            t = self._elapsed(a, b)
            if op == STEP_RANGE:
                step_s += t
                continue
            per_op[op] += t
            records.append((op, layer, t))
        return OpTimes(step_s=step_s, per_op=dict(per_op), records=records)


# ---- the annotator the model calls ----------------------------------------------------------------
_NULL = contextlib.nullcontext()


class _Range:
    __slots__ = ("ann", "name", "layer", "nvtx", "time")

    def __init__(self, ann: "Ranges", name: str, layer: int | None, nvtx: bool, timed: bool) -> None:
        self.ann, self.name, self.layer, self.nvtx, self.time = ann, name, layer, nvtx, timed

    def __enter__(self) -> None:
        if self.nvtx:
            self.ann.backend.push(self.name)
        if self.time:
            self.ann.timer.start(self.name, self.layer)  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        if self.time:
            self.ann.timer.stop(self.name, self.layer)  # type: ignore[union-attr]
        if self.nvtx:
            self.ann.backend.pop()


class Ranges:
    """What the model calls at each op: NVTX ranges and/or the op timer, or nothing.

    ``nvtx``: push ranges; ``layers``: annotate only these layers (None: all) — whole-step ops
    and the ``decode`` range are always annotated; ``timer``: an :class:`OpTimer` that times every op
    of every layer (the layer filter is for the profiler, not the timer).
    """

    def __init__(self, nvtx: bool = False, layers: Iterable[int] | None = None,
                 timer: OpTimer | None = None, backend: NvtxBackend | None = None) -> None:
        self.nvtx = nvtx
        self.layers = None if layers is None else frozenset(int(i) for i in layers)
        self.timer = timer
        self.backend = backend or (get_backend() if nvtx else NullBackend())
        self.active = nvtx or timer is not None

    def _layer_on(self, layer: int | None) -> bool:
        return self.nvtx and (layer is None or self.layers is None or layer in self.layers)

    def step(self):
        """The ``decode`` range around one step."""
        if not self.active:
            return _NULL
        return _Range(self, STEP_RANGE, None, self.nvtx, self.timer is not None)

    def layer(self, i: int):
        """The ``layer{i}`` range (not timed: its ops are)."""
        if not self._layer_on(i):
            return _NULL
        return _Range(self, layer_range(i), i, True, False)

    def op(self, name: str, layer: int | None = None):
        """The range of op ``name`` (in layer ``layer``, or a whole-step op when None)."""
        if not self.active:
            return _NULL
        return _Range(self, name, layer, self._layer_on(layer), self.timer is not None)


#: Ranges that do nothing: what graph capture and plain generation use.
NO_RANGES = Ranges()
