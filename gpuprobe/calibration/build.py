"""A :class:`Calibration` from a measurement source: read, add floors, fit each class with held-out shapes."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from gpuprobe.calibration.fit import DEFAULT_HOLDOUT, fit_class
from gpuprobe.calibration.model import Calibration
from gpuprobe.calibration.shapes import OP_CLASSES
from gpuprobe.calibration.sources import read_gpuprobe, read_source, load_result, with_floors
from gpuprobe.errors import UserError
from gpuprobe.specs.gpus import GPUSpec, get_gpu, normalize_dtype


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")


def calibration_from_frame(frame: pd.DataFrame, *, gpu: GPUSpec, dtype: str, kernel_source: str,
                           source: dict[str, Any], note: str | None = None, holdout: float = DEFAULT_HOLDOUT,
                           created: str | None = None) -> Calibration:
    """Fit every class present in ``frame`` (a measurement frame without floors)."""
    frame = with_floors(frame, gpu, dtype)
    classes = {}
    for op_class in OP_CLASSES:
        sub = frame[frame["op_class"] == op_class].reset_index(drop=True)
        if len(sub):
            classes[op_class] = fit_class(op_class, sub, holdout)
    if not classes:
        raise UserError("the source has no measured rows of any op class.")
    return Calibration(gpu.name, normalize_dtype(dtype), kernel_source, dict(source, rows=int(len(frame))),
                       created or today(), classes, note)


def calibrate_source(src: str, *, gpu: str | GPUSpec | None = None, dtype: str | None = None,
                     kernel_source: str = "vllm", holdout: float = DEFAULT_HOLDOUT) -> tuple[Calibration, pd.DataFrame]:
    """``gpuprobe calibrate --from SRC``: the calibration and the measurement frame (with floors) it was fitted to."""
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    frame, meta = read_source(src, gpu=spec, dtype=dtype, kernel_source=kernel_source)
    cal = calibration_from_frame(frame, gpu=meta["gpu"], dtype=meta["dtype"], kernel_source=meta["kernel_source"],
                                 source=meta["source"], note=meta.get("note"), holdout=holdout)
    return cal, with_floors(frame, meta["gpu"], meta["dtype"])


def calibration_from_results(path: str | Path, gpu: str | GPUSpec | None = None, dtype: str | None = None,
                             holdout: float = DEFAULT_HOLDOUT) -> Calibration:
    """A calibration of a measured run (``roofline --write-calibration``): ``path`` a results folder or a
    roofline.json of ``--mode timing|ncu|nsys``."""
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    result = load_result(path, spec)
    rgpu = get_gpu(result.gpu)
    if spec is not None and spec.name != rgpu.name:
        raise UserError(f"{path} was measured on {rgpu.name}, not {spec.name}.")
    d = normalize_dtype(result.dtype or dtype or "bf16")
    if dtype is not None and normalize_dtype(dtype) != d:
        raise UserError(f"{path} was measured in {d}, not {normalize_dtype(dtype)}.")
    frame = read_gpuprobe(result, (result.extra or {}).get("kernels"))
    source = {"kind": "gpuprobe", "name": f"gpuprobe {result.mode} measurement of {result.model}",
              "version": (result.provenance or {}).get("gpuprobe_version"), "license": None,
              "path": str(path), "mode": result.mode}
    return calibration_from_frame(frame, gpu=rgpu, dtype=d, kernel_source=f"gpuprobe {result.mode}",
                                  source=source, holdout=holdout)
