"""SM and memory clocks of the GPU under test, sampled through :class:`gpuprobe.system.telemetry.Telemetry`
while each timed trial runs (the host is idle then)."""
from __future__ import annotations

import statistics
from typing import Any

from gpuprobe.ceilings.device import max_clocks_and_driver, nvml_device_keys
from gpuprobe.system.telemetry import Telemetry


class ClockSampler:
    """Clock readings of torch's device ``device_index``; without NVML it records nothing."""

    def __init__(self, device_index: int, nvml: Any = None) -> None:
        self.sm: list[float] = []
        self.mem: list[float] = []
        self.info: dict[str, Any] = {}  # sm_max_mhz, mem_max_mhz, driver
        self.telemetry: Telemetry | None = None
        for device in nvml_device_keys(device_index):
            tel = Telemetry(device=device, nvml=nvml)
            if tel.available:
                self.telemetry = tel
                self.info.update(max_clocks_and_driver(device, nvml))
                break

    def sample(self) -> None:
        if self.telemetry is None:
            return
        s = self.telemetry.read()
        if s.sm_clock_mhz is not None:
            self.sm.append(float(s.sm_clock_mhz))
        if s.mem_clock_mhz is not None:
            self.mem.append(float(s.mem_clock_mhz))

    def window(self) -> int:
        return len(self.sm)

    def mean_since(self, start: int) -> float | None:
        xs = self.sm[start:]
        return round(statistics.fmean(xs), 1) if xs else None

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.info.items() if k != "driver"}
        if self.sm:
            out.update(sm_mhz=round(statistics.fmean(self.sm), 1), sm_mhz_min=min(self.sm), sm_mhz_max=max(self.sm))
        if self.mem:
            out["mem_mhz"] = round(statistics.fmean(self.mem), 1)
        return out

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()
