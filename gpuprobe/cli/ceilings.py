"""`gpuprobe ceilings`: measure (or show cached) empirical ceilings of the present GPU."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gpuprobe.ceilings import MEASUREMENTS, datasheet_value, fp32_scaled_datasheet, gpu_or_raise, run_ceilings
from gpuprobe.specs.gpus import match_device_name

NAME = "ceilings"
HELP = "measure the GPU's empirical ceilings (DRAM, L2, shared memory, FP32, tensor) and cache them"
DESCRIPTION = """\
Runs the CUDA microbenchmarks shipped in gpuprobe/csrc (compiled at run time through NVRTC) for a
few seconds: DRAM read/write/copy bandwidth, L2 and shared-memory bandwidth, the FP32 FMA peak and
the FP16/BF16 tensor-core peak of an mma.sync kernel, plus cuBLAS and a torch device-to-device copy
measured in the same run. Prints measured / datasheet / ratio and caches the result per GPU and
driver in the user cache folder; the roofline commands then draw the measured roofs.
Without a GPU: one line saying so, exit 2."""
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refresh", action="store_true", help="measure again even when a cached result exists")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value / 1e12:.{digits}f}"


def ceilings_table(result, spec) -> Any:
    """A rich table of a :class:`~gpuprobe.ceilings.CeilingsResult`: measured, datasheet, ratio, check."""
    from rich.table import Table


    t = Table(title=f"gpuprobe ceilings: {result.device_name}")
    for col, just in (("ceiling", "left"), ("unit", "left"), ("measured", "right"), ("datasheet", "right"),
                      ("ratio", "right"), ("result check", "left")):
        t.add_column(col, justify=just)
    for name, info in MEASUREMENTS.items():
        m = result.measurements.get(name)
        if m is None:
            continue
        unit = "TB/s" if info.kind == "memory" else "TFLOP/s"
        sheet = datasheet_value(name, spec)
        ratio = f"{m.value / sheet:.1%}" if sheet else "—"
        check = "[green]ok[/green]" if m.verified else f"[red]FAILED[/red] ({m.check})"
        t.add_row(info.label, unit, _fmt(m.value), _fmt(sheet), ratio, check)
    scaled = fp32_scaled_datasheet(spec, result.clocks)
    fp32 = result.measurements.get("fp32_fma")
    if scaled and fp32:
        t.add_row("FP32 FMA vs datasheet at the SM clock seen", "TFLOP/s", _fmt(fp32.value), _fmt(scaled),
                  f"{fp32.value / scaled:.1%}", "")
    return t


def _footer(result, path, from_cache: bool) -> list[str]:
    c = result.clocks
    clock = (f"SM {c.get('sm_mhz')} MHz under load (max {c.get('sm_max_mhz')})" if c.get("sm_mhz")
             else "SM clock not read (no NVML)")
    copy = result.copy_bytes_per_s
    lines = [f"driver {result.driver or 'unknown'}; {clock}; compiled with {result.backend}; "
             f"measured {result.measured_at} in {result.seconds:.1f} s",
             f"copy bandwidth (every '% of bandwidth' divides by this): "
             f"{'—' if copy is None else f'{copy / 1e12:.3f} TB/s'}"]
    if from_cache:
        lines.append(f"from the cache {path}; pass --refresh to measure again")
    elif path is not None:
        lines.append(f"cached in {path}")
    else:
        lines.append("not cached: a result did not check out")
    return lines


def run(args: argparse.Namespace) -> int:
    gpu_or_raise()  # NotAvailable: one line, exit 2
    quiet = args.json

    def log(msg: str) -> None:
        if not quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    result, path, from_cache = run_ceilings(refresh=args.refresh, log=log)
    if args.json:
        d = result.to_dict()
        d["cache_file"] = str(path) if path else None
        d["from_cache"] = from_cache
        d["copy_bytes_per_s"] = result.copy_bytes_per_s
        print(json.dumps(d, indent=2))
    else:
        from rich.console import Console

        con = Console()
        con.print(ceilings_table(result, match_device_name(result.device_name)))
        for line in _footer(result, path, from_cache):
            con.print(line, highlight=False)
    return 0 if result.all_verified else 1
