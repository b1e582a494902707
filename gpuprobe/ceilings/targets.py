"""Device targets (pure): a run's figures against the datasheet and against each other."""
from __future__ import annotations

from typing import Any

from gpuprobe.ceilings.result import MEASUREMENTS, CeilingsResult


def within(value: float, reference: float, rel: float) -> bool:
    """``value`` within ``rel`` (a fraction) of ``reference``."""
    return reference > 0 and abs(value / reference - 1.0) <= rel


def datasheet_value(name: str, spec) -> float | None:
    """The datasheet figure a measurement compares with (None where NVIDIA publishes none)."""
    info = MEASUREMENTS.get(name)
    if spec is None or info is None or info.datasheet is None:
        return None
    return float(getattr(spec, info.datasheet))


def fma_sm_mhz(result: CeilingsResult) -> tuple[float | None, str]:
    """The SM clock the FP32 FMA figure was measured at: the FMA run's own mean
    (``Measurement.detail["sm_mhz"]``), else the run-wide mean; and which of the two it is.

    The run-wide mean mixes the memory benchmarks' clocks (often lower, under a power or memory
    bound) into a compute figure, so the FMA run's own clock is the one to scale by."""
    m = result.measurements.get("fp32_fma")
    own = (m.detail or {}).get("sm_mhz") if m is not None else None
    if own:
        return float(own), "the FMA run's own"
    mean = result.clocks.get("sm_mhz")
    return (float(mean), "the run-wide mean") if mean else (None, "none read")


def fp32_scaled_datasheet(spec, clocks: dict[str, Any], sm_mhz: float | None = None) -> float | None:
    """The FP32 datasheet peak scaled to an SM clock seen under load (datasheet x seen / max clock):
    ``sm_mhz`` when given (the FMA run's own, :func:`fma_sm_mhz`), else ``clocks["sm_mhz"]``."""
    seen = sm_mhz or clocks.get("sm_mhz")
    if spec is None or not seen or not clocks.get("sm_max_mhz"):
        return None
    return spec.fp32_flops_per_s * float(seen) / float(clocks["sm_max_mhz"])


#: Device targets, checked by the ``ceilings`` selftest check (docs/ceilings.md states them).
TARGETS = {
    "copy_vs_torch_min": 0.95,  # DRAM copy kernel >= 95% of torch's copy (faster than torch passes)
    "fp32_vs_scaled_within": 0.10,  # FP32 FMA within 10% of the datasheet scaled to its run's SM clock
}
# The hand-written mma.sync kernel against cuBLAS is a figure, never a target: no published figure supports a
# share of cuBLAS for mma.sync on Hopper, where cuBLAS issues wgmma, which mma.sync cannot.


def evaluate_targets(result: CeilingsResult, spec) -> tuple[dict[str, Any], list[str]]:
    """Figures and ratios of a run, and the list of failed claims (empty when every target holds)."""
    figures: dict[str, Any] = {"device": result.device_name, "backend": result.backend,
                               "sm_mhz": result.clocks.get("sm_mhz"), "sm_max_mhz": result.clocks.get("sm_max_mhz")}
    failures: list[str] = []
    for name in MEASUREMENTS:
        m = result.measurements.get(name)
        if m is None:
            failures.append(f"{name}: not measured")
            continue
        unit = 1e12
        figures[f"{name}_tera"] = round(m.value / unit, 4)
        sheet = datasheet_value(name, spec)
        if sheet:
            figures[f"{name}_vs_datasheet"] = round(m.value / sheet, 4)
        if not m.value > 0:
            failures.append(f"{name}: figure {m.value} is not positive")
        if not m.verified:
            failures.append(f"{name}: its result did not check out ({m.check})")
    copy, torch_copy = result.value("dram_copy", False), result.value("torch_copy", False)
    if copy and torch_copy:
        r = copy / torch_copy
        figures["copy_vs_torch"] = round(r, 4)
        if r < TARGETS["copy_vs_torch_min"]:
            failures.append(f"DRAM copy kernel at {r:.1%} of torch's copy (target: at least 95%)")
    fp32 = result.value("fp32_fma", False)
    fma_mhz, fma_mhz_source = fma_sm_mhz(result)
    figures["fp32_sm_mhz"], figures["fp32_sm_mhz_source"] = fma_mhz, fma_mhz_source
    scaled = fp32_scaled_datasheet(spec, result.clocks, fma_mhz)
    if fp32 and scaled:
        r = fp32 / scaled
        figures["fp32_vs_scaled_datasheet"] = round(r, 4)
        if not within(fp32, scaled, TARGETS["fp32_vs_scaled_within"]):
            failures.append(f"FP32 FMA at {r:.1%} of the datasheet scaled to {fma_mhz:.0f} MHz ({fma_mhz_source} "
                            "SM clock; target: within 10%)")
    elif fp32:
        figures["fp32_vs_scaled_datasheet"] = None  # unknown GPU or no clock reading: nothing to compare
    for dt in ("bf16", "fp16"):
        mma, cublas = result.value(f"mma_{dt}", False), result.value(f"cublas_{dt}", False)
        if mma and cublas:
            r = mma / cublas
            figures[f"mma_{dt}_vs_cublas"] = round(r, 4)
    return figures, failures
