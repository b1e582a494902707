"""The one NVML sampler: clocks, temperature, power, utilization, memory, throttle reasons, energy.

Use it around a measurement::

    with Telemetry() as tel:
        run_decode_loop()
    tel.summary.joules_per_token(tokens)

or take instantaneous readings before and after a point with :meth:`Telemetry.snapshot`.

Energy comes from the GPU's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``,
millijoules since the driver loaded; Volta and newer) read at the start and end of the window.
Hopper's power reading is an average over about one second, so energy integrated from power
samples is a fallback only, and an energy figure is marked reliable only over windows of at least
:data:`MIN_ENERGY_WINDOW_S` seconds. On a machine without NVML (no driver, no ``nvidia-ml-py``) the
sampler reports ``available=False`` with the reason, and every figure is None.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

MIN_ENERGY_WINDOW_S = 5.0

#: NVML clock-event (throttle) reason bits, as in nvml.h.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: Reasons that do not mean the GPU ran slower than it could for the work given.
BENIGN_REASONS = frozenset({"gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"})


def throttle_reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"other_0x{unknown:x}")
    return names


def is_throttled(mask: int | None) -> bool:
    """True when a reason other than idle or a clock setting held the clocks down."""
    return any(n not in BENIGN_REASONS for n in throttle_reason_names(mask))


def load_nvml():
    """The ``pynvml`` module (from ``nvidia-ml-py``), initialised; raises with the reason when absent."""
    import pynvml  # noqa: PLC0415  (optional dependency: the `telemetry` extra)

    pynvml.nvmlInit()
    return pynvml


@dataclass
class Sample:
    t: float
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    energy_j: float | None = None  # the total-energy counter, in joules
    throttle_mask: int | None = None
    gpu_util_pct: float | None = None
    memory_util_pct: float | None = None
    memory_used_bytes: int | None = None


@dataclass
class TelemetrySummary:
    """What the sampler saw over one window. Figures NVML did not give are None."""

    available: bool
    reason: str | None = None
    device: str | None = None
    duration_s: float | None = None
    samples: int = 0
    energy_j: float | None = None
    energy_source: str | None = None  # counter | power_integral
    energy_window_ok: bool = False  # window >= MIN_ENERGY_WINDOW_S
    avg_power_w: float | None = None
    max_power_w: float | None = None
    sm_clock_mhz_min: float | None = None
    sm_clock_mhz_mean: float | None = None
    mem_clock_mhz_mean: float | None = None
    temperature_c_max: float | None = None
    gpu_util_pct_mean: float | None = None
    memory_used_bytes_max: int | None = None
    throttled: bool = False
    throttle_reasons: list[str] = field(default_factory=list)

    def joules_per_token(self, tokens: float) -> float | None:
        """Energy over the window divided by the tokens made in it; None without an energy figure."""
        if self.energy_j is None or not tokens:
            return None
        return self.energy_j / tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def integrate_power(samples: list[Sample]) -> float | None:
    """Energy in joules by the trapezoidal rule over the power readings (a cross-check of the counter:
    Hopper's power reading is a one-second average, so short windows are off)."""
    pts = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if len(pts) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))


def summarize(samples: list[Sample], device: str | None = None) -> TelemetrySummary:
    """Summary of a window from its samples (the first and last bound it)."""
    if not samples:
        return TelemetrySummary(True, "no samples", device)
    duration = samples[-1].t - samples[0].t
    e0, e1 = samples[0].energy_j, samples[-1].energy_j
    powers = [s.power_w for s in samples if s.power_w is not None]
    if e0 is not None and e1 is not None and e1 >= e0 and len(samples) >= 2:
        energy, source = e1 - e0, "counter"
    elif len(powers) >= 2:
        energy, source = integrate_power(samples), "power_integral"
    else:
        energy, source = None, None
    avg_power = energy / duration if energy is not None and duration > 0 else _mean(powers)
    mask = 0
    for s in samples:
        mask |= s.throttle_mask or 0
    reasons = throttle_reason_names(mask)
    sm = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
    mem = [s.memory_used_bytes for s in samples if s.memory_used_bytes is not None]
    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    return TelemetrySummary(
        available=True, device=device, duration_s=duration, samples=len(samples), energy_j=energy,
        energy_source=source, energy_window_ok=energy is not None and duration >= MIN_ENERGY_WINDOW_S,
        avg_power_w=avg_power, max_power_w=max(powers) if powers else None,
        sm_clock_mhz_min=min(sm) if sm else None, sm_clock_mhz_mean=_mean(sm),
        mem_clock_mhz_mean=_mean([s.mem_clock_mhz for s in samples if s.mem_clock_mhz is not None]),
        temperature_c_max=max(temps) if temps else None,
        gpu_util_pct_mean=_mean([s.gpu_util_pct for s in samples if s.gpu_util_pct is not None]),
        memory_used_bytes_max=max(mem) if mem else None,
        throttled=is_throttled(mask), throttle_reasons=reasons)


def energy_between(samples: list[Sample], t0: float, t1: float) -> float | None:
    """Energy in joules between times ``t0`` and ``t1`` (the samples' clock), from the energy counter
    interpolated linearly between readings; None when the samples do not cover the span or lack it."""
    pts = [(s.t, s.energy_j) for s in samples if s.energy_j is not None]
    if len(pts) < 2 or t1 < t0 or pts[0][0] > t0 or pts[-1][0] < t1:
        return None

    def at(t: float) -> float:
        for (ta, ea), (tb, eb) in zip(pts, pts[1:]):
            if ta <= t <= tb:
                return ea if tb == ta else ea + (eb - ea) * (t - ta) / (tb - ta)
        return pts[-1][1]

    return at(t1) - at(t0)


def visible_device() -> int | str:
    """The NVML device the first visible CUDA device is: an index or a UUID from CUDA_VISIBLE_DEVICES
    (the one choice of NVML device in gpuprobe; ``doctor`` and :class:`Telemetry` use it)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.isdigit():
        return int(first)
    return first if first.startswith(("GPU-", "MIG-")) else 0


def device_handle(nvml: Any, device: int | str | None = None) -> Any:
    """NVML's handle of ``device`` (default :func:`visible_device`); raises LookupError when NVML sees
    fewer devices than the index asks for, NVML's own error otherwise."""
    dev = visible_device() if device is None else device
    if isinstance(dev, str):
        return nvml.nvmlDeviceGetHandleByUUID(dev)
    if hasattr(nvml, "nvmlDeviceGetCount") and nvml.nvmlDeviceGetCount() <= dev:
        raise LookupError("NVML sees no GPU")
    return nvml.nvmlDeviceGetHandleByIndex(dev)


class Telemetry:
    """Background NVML sampler for one GPU; a context manager. ``summary`` is set on exit."""

    def __init__(self, device: int | str | None = None, interval_s: float = 0.1, nvml: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self.available = False
        self.reason: str | None = None
        self.device_name: str | None = None
        self.summary: TelemetrySummary | None = None
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = None
        self._handle = None
        try:
            self._nvml = nvml if nvml is not None else load_nvml()
            if nvml is not None:
                nvml.nvmlInit()
            self._handle = device_handle(self._nvml, device)
            name = self._nvml.nvmlDeviceGetName(self._handle)
            self.device_name = name.decode() if isinstance(name, bytes) else str(name)
            self.available = True
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install 'gpuprobe[telemetry]')"
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, no device...
            self.reason = f"NVML unavailable: {e}"

    # -- readings
    def _get(self, fn: str, *args, scale: float = 1.0):
        try:
            value = getattr(self._nvml, fn)(*args)
        except Exception:  # NotSupported on this GPU, or a missing binding in an old nvidia-ml-py
            return None
        return value * scale if scale != 1.0 else value

    def read(self) -> Sample:
        """One reading now (the sampler thread calls this every ``interval_s``)."""
        nv, h = self._nvml, self._handle
        s = Sample(t=self.clock())
        if not self.available:
            return s
        s.sm_clock_mhz = self._get("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_SM", 1))
        s.mem_clock_mhz = self._get("nvmlDeviceGetClockInfo", h, getattr(nv, "NVML_CLOCK_MEM", 2))
        s.temperature_c = self._get("nvmlDeviceGetTemperature", h, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        s.power_w = self._get("nvmlDeviceGetPowerUsage", h, scale=1e-3)
        s.energy_j = self._get("nvmlDeviceGetTotalEnergyConsumption", h, scale=1e-3)
        mask = self._get("nvmlDeviceGetCurrentClocksEventReasons", h)
        if mask is None:
            mask = self._get("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        s.throttle_mask = mask
        util = self._get("nvmlDeviceGetUtilizationRates", h)
        if util is not None:
            s.gpu_util_pct, s.memory_util_pct = float(util.gpu), float(util.memory)
        mem = self._get("nvmlDeviceGetMemoryInfo", h)
        if mem is not None:
            s.memory_used_bytes = int(mem.used)
        return s

    def snapshot(self) -> dict[str, Any]:
        """An instantaneous reading as a flat dict (for before/after readings around a point)."""
        if not self.available:
            return {"available": False, "reason": self.reason}
        s = self.read()
        d = asdict(s)
        d.pop("t")
        d.update(available=True, device=self.device_name, throttle_reasons=throttle_reason_names(s.throttle_mask),
                 throttled=is_throttled(s.throttle_mask), time=time.time())
        return d

    # -- the background window
    def start(self) -> "Telemetry":
        self._samples = []
        self._stop.clear()
        if not self.available:
            return self
        self._samples.append(self.read())
        self._thread = threading.Thread(target=self._loop, name="gpuprobe-telemetry", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            s = self.read()
            with self._lock:
                self._samples.append(s)

    def stop(self) -> TelemetrySummary:
        """End the window: a last reading bounds it; returns (and keeps) the summary."""
        if not self.available:
            self.summary = TelemetrySummary(False, self.reason)
            return self.summary
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._samples.append(self.read())
            samples = list(self._samples)
        self.summary = summarize(samples, self.device_name)
        return self.summary

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def close(self) -> None:
        if self.available and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def __enter__(self) -> "Telemetry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()
