"""The table of ``gpuprobe ceilings``: each measured ceiling against its datasheet value, and the footer
that says how and when it was measured."""
from __future__ import annotations

from pathlib import Path

from gpuprobe.ceilings import MEASUREMENTS, datasheet_value, fp32_scaled_datasheet
from gpuprobe.render.tables import Column, emit, fmt_num, fmt_text


def _tera(x) -> str:
    return fmt_num(x, 1e12)


CEILING_COLUMNS = (
    Column("ceiling", "ceiling", fmt=fmt_text, numeric=False, name=True),
    Column("unit", "unit", fmt=fmt_text, numeric=False),
    Column("measured", "measured", fmt=_tera, field="measured_per_s"),
    Column("datasheet", "datasheet", fmt=_tera, field="datasheet_per_s"),
    Column("ratio_pct", "% of datasheet", "%ds", "measured as % of datasheet", fmt=fmt_num),
    Column("check", "result check", fmt=fmt_text, numeric=False),
)


def ceilings_rows(result, spec) -> list[dict]:
    """One row per ceiling measured (bytes/s or FLOP/s); ``measured_per_s`` in the unit of ``unit`` x 1e12."""
    rows = []
    for name, info in MEASUREMENTS.items():
        m = result.measurements.get(name)
        if m is None:
            continue
        sheet = datasheet_value(name, spec)
        rows.append({"ceiling": info.label, "name": name, "unit": "bytes/s" if info.kind == "memory" else "FLOP/s",
                     "measured": m.value, "datasheet": sheet,
                     "ratio_pct": 100.0 * m.value / sheet if sheet else None,
                     "check": "ok" if m.verified else f"FAILED ({m.check})"})
    scaled = fp32_scaled_datasheet(spec, result.clocks)
    fp32 = result.measurements.get("fp32_fma")
    if scaled and fp32:
        rows.append({"ceiling": "FP32 FMA vs datasheet at the SM clock seen", "name": "fp32_fma_at_clock",
                     "unit": "FLOP/s", "measured": fp32.value, "datasheet": scaled,
                     "ratio_pct": 100.0 * fp32.value / scaled, "check": None})
    return rows


def ceilings_notes(result, path: Path | None, from_cache: bool) -> list[str]:
    """Driver, clock and compiler of the run, the copy bandwidth, and where the result is cached."""
    c = result.clocks
    clock = (f"SM {c.get('sm_mhz')} MHz under load (max {c.get('sm_max_mhz')})" if c.get("sm_mhz")
             else "SM clock not read (no NVML)")
    copy = result.copy_bytes_per_s
    lines = ["measured and datasheet in TB/s (memory) or TFLOP/s (compute)",
             f"driver {result.driver or 'unknown'}; {clock}; compiled with {result.backend}; "
             f"measured {result.measured_at} in {result.seconds:.1f} s",
             f"copy bandwidth (every '% of bandwidth' divides by this): "
             f"{'-' if copy is None else f'{copy / 1e12:.3f} TB/s'}"]
    if from_cache:
        lines.append(f"from the cache {path}; pass --refresh to measure again")
    elif path is not None:
        lines.append(f"cached in {path}")
    else:
        lines.append("not cached: a result did not check out")
    return lines


def print_ceilings(result, spec, path: Path | None, from_cache: bool, fmt: str | None = None, stream=None) -> None:
    emit(CEILING_COLUMNS, ceilings_rows(result, spec), fmt, title=f"gpuprobe ceilings: {result.device_name}",
         notes=ceilings_notes(result, path, from_cache), stream=stream)
