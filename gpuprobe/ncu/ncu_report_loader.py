"""Find NVIDIA's ``ncu_report`` Python module, which reads binary ``.ncu-rep`` files.

Search order (docs/contracts.md section 7): the installed module (PyPI ``ncu-report``, no GPU and no
Nsight Compute install needed), else ``extras/python/ncu_report.py`` beside the ``ncu`` that
:func:`gpuprobe.ncu.runner.find_ncu` finds, else a :class:`~gpuprobe.errors.UserError` that says how
to export a CSV instead.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from gpuprobe.errors import UserError

CSV_HINT = "ncu --import R.ncu-rep --csv --page raw --print-units base"

_cached: ModuleType | None = None


def _extras_candidates() -> list[Path]:
    from gpuprobe.ncu.runner import find_ncu, install_roots

    roots: list[Path] = []
    inst = find_ncu()
    if inst is not None:
        roots.append(inst.root)
        # a CUDA toolkit's bin/ncu is a small script that runs <cuda>/nsight-compute-<version>/ncu
        cuda = inst.path.resolve().parent.parent
        roots += sorted((p for p in cuda.glob("nsight-compute*") if p.is_dir()), reverse=True)
    roots += install_roots()
    seen, out = set(), []
    for r in roots:
        p = r / "extras" / "python" / "ncu_report.py"
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _load_from(path: Path) -> ModuleType:
    """Import ``ncu_report.py`` from an Nsight Compute install (its folder also holds the native library)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # ncu_report.py imports its compiled helper from the same folder
    spec = importlib.util.spec_from_file_location("ncu_report", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["ncu_report"] = mod
    return mod


def _import_installed() -> ModuleType:
    return importlib.import_module("ncu_report")


def origin() -> str | None:
    """Where the loaded ``ncu_report`` comes from (its file), or None when none loads."""
    mod = find_ncu_report()
    return None if mod is None else str(getattr(mod, "__file__", None) or mod.__name__)


def find_ncu_report() -> ModuleType | None:
    """The ``ncu_report`` module, or None when neither the package nor an Nsight install has it."""
    global _cached
    if _cached is not None:
        return _cached
    try:
        _cached = _import_installed()
        return _cached
    except Exception:  # not installed (ImportError), or a wheel whose native part does not load here
        pass
    for cand in _extras_candidates():
        if cand.is_file():
            try:
                _cached = _load_from(cand)
                return _cached
            except Exception:  # a broken install: try the next one
                continue
    return None


def require_ncu_report(report: str | Path = "R.ncu-rep") -> ModuleType:
    """``ncu_report``, or a UserError with the CSV export command for ``report``."""
    mod = find_ncu_report()
    if mod is None:
        raise UserError(
            f"cannot read '{report}': the ncu_report module is missing (pip install 'gpuprobe[ncu]', or install "
            f"Nsight Compute, which ships extras/python/ncu_report.py); or export the raw page as CSV with "
            f"`{CSV_HINT} > R.csv` (R = the report) and pass the CSV instead"
        )
    return mod
