"""The NVML sampler against a test double of ``pynvml`` (a monotone energy counter), and without NVML."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from gpuprobe.system import telemetry
from gpuprobe.system.telemetry import (
    MIN_ENERGY_WINDOW_S, Sample, Telemetry, energy_between, integrate_power, is_throttled, summarize,
    throttle_reason_names,
)


class FakeClock:
    """Each reading advances time by ``step`` seconds: windows of any length without waiting."""

    def __init__(self, step: float = 0.5):
        self.t, self.step = 1000.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class FakeNVML:
    """A stand-in for the ``pynvml`` module: constant power, an energy counter that grows with it."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self, clock, watts=350.0, reasons=0, energy=True, fail_init=False):
        self.clock, self.watts, self.reasons, self.energy, self.fail_init = clock, watts, reasons, energy, fail_init
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h, kind):
        return 41

    def nvmlDeviceGetPowerUsage(self, h):
        return int(self.watts * 1000)  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy:
            raise self.NVMLError("Not Supported")
        return int(self.clock.t * self.watts * 1000)  # mJ, monotone in time

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=97, memory=60)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=12 * 2**30, total=80 * 2**30)


def test_energy_comes_from_the_counter_over_the_window():
    clock = FakeClock(0.5)
    nv = FakeNVML(clock, watts=350.0)
    with Telemetry(nvml=nv, interval_s=0.001, clock=clock) as tel:
        time.sleep(0.02)
    s = tel.summary
    assert s.available and s.device == "NVIDIA H100 80GB HBM3" and s.samples >= 2
    assert s.energy_source == "counter"
    assert s.energy_j == pytest.approx(350.0 * s.duration_s, rel=1e-6)
    assert s.avg_power_w == pytest.approx(350.0, rel=1e-6)
    assert s.joules_per_token(1000) == pytest.approx(s.energy_j / 1000)
    assert s.sm_clock_mhz_min == 1980 and s.temperature_c_max == 41 and s.gpu_util_pct_mean == 97
    assert s.memory_used_bytes_max == 12 * 2**30
    assert not s.throttled and s.throttle_reasons == []
    assert nv.calls[0] == "init" and nv.calls[-1] == "shutdown"


def test_short_windows_are_marked_and_long_ones_are_ok():
    clock = FakeClock(0.5)
    tel = Telemetry(nvml=FakeNVML(clock), interval_s=10, clock=clock)
    tel.start()
    short = tel.stop()  # two readings, 0.5 s apart
    assert short.duration_s == pytest.approx(0.5) and not short.energy_window_ok
    clock.step = MIN_ENERGY_WINDOW_S
    tel.start()
    assert tel.stop().energy_window_ok


def test_power_integral_when_the_counter_is_not_supported():
    clock = FakeClock(1.0)
    tel = Telemetry(nvml=FakeNVML(clock, watts=200.0, energy=False), interval_s=0.001, clock=clock)
    tel.start()
    time.sleep(0.01)
    s = tel.stop()
    assert s.energy_source == "power_integral" and s.energy_j == pytest.approx(200.0 * s.duration_s)


def test_throttle_flag():
    hw_slowdown, idle = 0x8, 0x1
    clock = FakeClock()
    with Telemetry(nvml=FakeNVML(clock, reasons=hw_slowdown | idle), interval_s=1, clock=clock) as tel:
        pass
    assert tel.summary.throttled and tel.summary.throttle_reasons == ["gpu_idle", "hw_slowdown"]
    assert not is_throttled(idle) and is_throttled(0x4) and throttle_reason_names(0x1000) == ["other_0x1000"]


def test_snapshot_is_a_flat_reading():
    clock = FakeClock()
    tel = Telemetry(nvml=FakeNVML(clock, reasons=0x20), clock=clock)
    snap = tel.snapshot()
    assert snap["available"] and snap["power_w"] == 350.0 and snap["sm_clock_mhz"] == 1980
    assert snap["throttled"] and snap["throttle_reasons"] == ["sw_thermal_slowdown"]
    assert snap["energy_j"] == pytest.approx(clock.t * 350.0)


def test_unavailable_nvml_reports_cleanly():
    clock = FakeClock()
    tel = Telemetry(nvml=FakeNVML(clock, fail_init=True), clock=clock)
    assert not tel.available and "Driver Not Loaded" in tel.reason
    assert tel.snapshot() == {"available": False, "reason": tel.reason}
    with tel:
        pass
    assert tel.summary.available is False and tel.summary.energy_j is None
    assert tel.summary.joules_per_token(100) is None


def test_this_machine_without_a_driver_is_unavailable_not_an_error(monkeypatch):
    def no_nvml():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setattr(telemetry, "load_nvml", no_nvml)
    tel = Telemetry()
    assert not tel.available and "NVML" in tel.reason


def test_energy_between_interpolates_the_counter():
    samples = [Sample(t=0.0, energy_j=0.0), Sample(t=1.0, energy_j=100.0), Sample(t=3.0, energy_j=500.0)]
    assert energy_between(samples, 0.5, 2.0) == pytest.approx(300.0 - 50.0)
    assert energy_between(samples, -1.0, 2.0) is None  # not covered
    assert integrate_power([Sample(0, power_w=100), Sample(2, power_w=300)]) == pytest.approx(400.0)
    assert summarize([]).reason == "no samples"
