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


def fp32_scaled_datasheet(spec, clocks: dict[str, Any]) -> float | None:
    """The FP32 datasheet peak scaled to the SM clock seen under load (datasheet x seen / max clock)."""
    if spec is None or not clocks.get("sm_mhz") or not clocks.get("sm_max_mhz"):
        return None
    return spec.fp32_flops_per_s * float(clocks["sm_mhz"]) / float(clocks["sm_max_mhz"])


#: Device targets, checked by the ``ceilings`` selftest check (docs/ceilings.md states them).
TARGETS = {
    "copy_vs_torch_min": 0.95,  # DRAM copy kernel >= 95% of torch's copy
    "copy_vs_torch_within": 0.05,  # ... and within 5% of it
    "fp32_vs_scaled_within": 0.10,  # FP32 FMA within 10% of the datasheet scaled to the SM clock
    "mma_vs_cublas_min": 0.60,  # mma.sync kernel >= 60% of cuBLAS, per dtype
}


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
        if r < TARGETS["copy_vs_torch_min"] or not within(copy, torch_copy, TARGETS["copy_vs_torch_within"]):
            failures.append(f"DRAM copy kernel at {r:.1%} of torch's copy (target: at least 95%, within 5%)")
    fp32 = result.value("fp32_fma", False)
    scaled = fp32_scaled_datasheet(spec, result.clocks)
    if fp32 and scaled:
        r = fp32 / scaled
        figures["fp32_vs_scaled_datasheet"] = round(r, 4)
        if not within(fp32, scaled, TARGETS["fp32_vs_scaled_within"]):
            failures.append(f"FP32 FMA at {r:.1%} of the datasheet scaled to {result.clocks.get('sm_mhz')} MHz "
                            "(target: within 10%)")
    elif fp32:
        figures["fp32_vs_scaled_datasheet"] = None  # unknown GPU or no clock reading: nothing to compare
    for dt in ("bf16", "fp16"):
        mma, cublas = result.value(f"mma_{dt}", False), result.value(f"cublas_{dt}", False)
        if mma and cublas:
            r = mma / cublas
            figures[f"mma_{dt}_vs_cublas"] = round(r, 4)
            if r < TARGETS["mma_vs_cublas_min"]:
                failures.append(f"mma.sync {dt} kernel at {r:.1%} of cuBLAS (target: at least 60%)")
    return figures, failures
