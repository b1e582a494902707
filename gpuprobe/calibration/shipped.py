"""The calibrations gpuprobe ships (``gpuprobe/data/calibrations/<gpu>_bf16.json``) and how they are made.

GEMM and decode attention are fitted to the vLLM tables of aiconfigurator-core for each GPU it covers;
the elementwise class, which those tables do not measure, takes that package's own per-GPU constants of
memory-bound ops (``mem_empirical_constant_latency`` as the fixed cost, ``mem_bw_empirical_scaling_factor``
as the efficiency against the datasheet bandwidth, from ``systems/<system>.yaml``): a stated model, not a
fit, so its held-out error is null. Regenerate (reads the installed package; writes KB-sized files):

    python -m gpuprobe.calibration.shipped [GPU ...]
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np

from gpuprobe.calibration.build import calibration_from_frame
from gpuprobe.calibration.grid import Grid
from gpuprobe.calibration.model import Calibration, ClassModel
from gpuprobe.calibration.sources import AICONFIGURATOR_SYSTEMS, aiconfigurator_root, read_aiconfigurator
from gpuprobe.calibration.store import save_calibration, shipped_path
from gpuprobe.errors import UserError
from gpuprobe.specs.gpus import GPUSpec, get_gpu

SHIPPED_GPUS = tuple(AICONFIGURATOR_SYSTEMS)
SHIPPED_KERNEL_SOURCE = "vllm"
SHIPPED_DTYPE = "bf16"
#: The date the shipped files were made (kept fixed so that a refit reproduces them byte for byte).
SHIPPED_CREATED = "2026-12-03"


def _yaml_number(text: str, key: str) -> float | None:
    m = re.search(rf"^\s*{key}:\s*([0-9.eE+-]+)", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def elementwise_from_system(gpu: GPUSpec, root: Path | None = None) -> ClassModel | None:
    """The elementwise class from aiconfigurator-core's per-GPU memory-op constants (None without them)."""
    system = AICONFIGURATOR_SYSTEMS.get(gpu.name)
    if system is None:
        return None
    path = (root or aiconfigurator_root()).parent / f"{system}.yaml"
    if not path.exists():
        return None
    text = path.read_text()
    bw, scale, latency = (_yaml_number(text, k) for k in
                          ("mem_bw", "mem_bw_empirical_scaling_factor", "mem_empirical_constant_latency"))
    if not (bw and scale and latency is not None):
        return None
    eff = scale * bw / gpu.dram_bytes_per_s  # their bandwidth, scaled, against gpuprobe's datasheet roof
    grid = Grid(((0.0, 40.0, 2),))  # log2 bytes 0 .. 40: 1 B .. 1 TB, one constant efficiency
    return ClassModel("elementwise", float(latency), grid, np.full(2, round(math.log(1.0 / eff), 4)),
                      np.zeros(1), {"bytes": [1.0, 2.0 ** 40]}, 0,
                      {"shapes": 0, "rows": 0, "median_abs_err": None, "mean_abs_err": None, "p90_abs_err": None,
                       "floor_median_abs_err": None},
                      {"source": {"kind": "aiconfigurator", "name": f"aiconfigurator-core systems/{system}.yaml",
                                  "what": "mem_empirical_constant_latency (t0) and mem_bw_empirical_scaling_factor "
                                          "(efficiency against mem_bw): that package's stated constants for "
                                          "memory-bound ops, not a fit; no held-out error"}})


def fit_shipped(gpu: str | GPUSpec, classes: tuple[str, ...] | None = None) -> Calibration:
    """The shipped calibration of ``gpu`` refitted from the installed tables (``classes``: only these)."""
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    frame, meta = read_aiconfigurator(spec, SHIPPED_DTYPE, SHIPPED_KERNEL_SOURCE)
    if classes is not None:
        frame = frame[frame["op_class"].isin(classes)].reset_index(drop=True)
    cal = calibration_from_frame(frame, gpu=spec, dtype=SHIPPED_DTYPE, kernel_source=SHIPPED_KERNEL_SOURCE,
                                 source=meta["source"], note=meta.get("note"), created=SHIPPED_CREATED)
    if classes is None or "elementwise" in classes:
        ew = elementwise_from_system(spec)
        if ew is not None:
            cal.classes["elementwise"] = ew
    return cal


def main(argv: list[str]) -> int:
    for name in argv or SHIPPED_GPUS:
        try:
            cal = fit_shipped(name)
        except UserError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        out = save_calibration(cal, shipped_path(cal.gpu, cal.dtype))
        errs = {c: m.heldout.get("median_abs_err") for c, m in cal.classes.items()}
        print(f"{out} ({out.stat().st_size / 1024:.0f} KiB): {cal.label}; held-out median |error| {errs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
