"""``calibration.json``: load, validate and save (docs/contracts.md section 11), and the shipped calibrations."""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from gpuprobe.calibration.model import Calibration
from gpuprobe.errors import UserError
from gpuprobe.jsonsafe import dumps
from gpuprobe.specs.gpus import GPUSpec, get_gpu, normalize_dtype

#: Shipped calibrations live in the package data, one file per GPU and dtype: ``<gpu>_<dtype>.json``.
SHIPPED_PACKAGE = "gpuprobe.data"
SHIPPED_FOLDER = "calibrations"


def load_calibration(path: str | Path) -> Calibration:
    """A calibration file; one UserError line when it is unreadable, not JSON or not schema_version 1."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"no such calibration file: {p}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read calibration '{p}': {str(e).splitlines()[0]}") from None
    try:
        return Calibration.from_dict(data)
    except UserError as e:
        raise UserError(f"{p}: {e}") from None


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write ``cal`` as strict JSON (atomically: a temporary file renamed into place)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    text = dumps(cal.to_dict(), indent=1)
    # Lists of numbers on one line each: the node values stay a few KB, not one line per number.
    text = re.sub(r"\[\s*([-0-9.eE+,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)
    tmp.write_text(text + "\n")
    tmp.replace(p)
    return p


def shipped_path(gpu: str, dtype: str) -> Path:
    return Path(str(resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_FOLDER, f"{gpu}_{dtype}.json")))


def _spec(gpu: str | GPUSpec) -> GPUSpec:
    return gpu if isinstance(gpu, GPUSpec) else get_gpu(gpu)


#: GPUs without published tables of their own, served by the calibration of a part of the same chip (the
#: efficiency model is relative to the floor, so it moves with the roofs: fitted on the H100 SXM tables, it
#: predicts the H200 tables within 8% (GEMM) and 9% (decode attention) median, docs/prediction.md).
TRANSFERS: dict[str, str] = {
    "h100-pcie": "h100-sxm", "h800": "h100-sxm", "gh200": "h200",
    "a100-40gb": "a100-80gb", "a100-pcie-40gb": "a100-80gb", "a100-pcie-80gb": "a100-80gb",
}


def shipped_calibration(gpu: str | GPUSpec, dtype: str) -> Calibration | None:
    """The calibration gpuprobe ships for ``gpu`` and ``dtype``, or None. fp16 without a file of its own is
    served by the bf16 one where the GPU runs both at the same tensor rate (its ``served_as`` and ``note``
    say so). A GPU of :data:`TRANSFERS` is served by its sibling's calibration, applied to its own roofs
    (``transferred_from`` in its source, and a note)."""
    spec, d = _spec(gpu), normalize_dtype(dtype)
    sibling = TRANSFERS.get(spec.name)
    if sibling is not None and not shipped_path(spec.name, d).exists() and not shipped_path(spec.name, "bf16").exists():
        cal = shipped_calibration(sibling, d)
        if cal is None:
            return None
        cal.gpu = spec.name
        cal.source = dict(cal.source, transferred_from=sibling)
        cal.note = (f"the {sibling} calibration applied to the datasheet roofs of {spec.name} (no published tables "
                    f"of its own; a transfer adds error: H100 SXM -> H200 8-9% median)"
                    + (f"; {cal.note}" if cal.note else ""))
        return cal
    p = shipped_path(spec.name, d)
    if p.exists():
        return load_calibration(p)
    if d == "fp16" and spec.fp16_flops_per_s and spec.fp16_flops_per_s == spec.bf16_flops_per_s:
        p = shipped_path(spec.name, "bf16")
        if p.exists():
            cal = load_calibration(p)
            cal.served_as = "fp16"
            cal.note = ((cal.note + "; ") if cal.note else "") + \
                "fp16 served by the bf16 calibration: the tables have no fp16 rows, and this GPU runs both at the " \
                "same tensor rate"
            return cal
    return None


def shipped_gpus() -> list[str]:
    """``<gpu>_<dtype>`` names of the shipped calibration files."""
    folder = resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_FOLDER)
    return sorted(Path(str(f)).stem for f in folder.iterdir() if str(f).endswith(".json"))


def resolve_calibration(value: str | None, gpu: str | GPUSpec, dtype: str) -> Calibration | None:
    """What ``--calibration FILE|none|auto`` means: ``auto`` or None the shipped one (None when there is none),
    ``none`` no calibration, else the file, which must be of ``gpu`` and ``dtype``."""
    spec, d = _spec(gpu), normalize_dtype(dtype)
    if value is None or value.strip().lower() == "auto":
        return shipped_calibration(spec, d)
    if value.strip().lower() == "none":
        return None
    cal = load_calibration(value)
    if cal.gpu != spec.name:
        raise UserError(f"{value} is a calibration of {cal.gpu}, not {spec.name}; calibrate this GPU "
                        f"(`gpuprobe calibrate`) or pass --calibration none.")
    if normalize_dtype(cal.dtype) != d:
        raise UserError(f"{value} is a {cal.dtype} calibration, not {d}; calibrate {d} or pass --calibration none.")
    return cal
