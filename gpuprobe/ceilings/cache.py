"""The per-GPU cache: one JSON :class:`CeilingsResult` per (device name, driver) in the user cache
folder (platformdirs; ``GPUPROBE_CACHE_DIR`` overrides it)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from gpuprobe.ceilings.device import present_gpu_identity
from gpuprobe.ceilings.result import CeilingsResult
from gpuprobe.errors import GpuprobeError
from gpuprobe.specs.gpus import get_gpu


def cache_dir() -> Path:
    """``$GPUPROBE_CACHE_DIR/ceilings`` if set, else the platform's user cache folder (platformdirs)."""
    if os.environ.get("GPUPROBE_CACHE_DIR"):
        return Path(os.environ["GPUPROBE_CACHE_DIR"]) / "ceilings"
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("gpuprobe", appauthor=False)) / "ceilings"
    except ImportError:
        return Path.home() / ".cache" / "gpuprobe" / "ceilings"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cache_path(device_name: str, driver: str | None) -> Path:
    """The cache file of a device and driver."""
    return cache_dir() / f"{_slug(device_name)}__driver-{_slug(driver or 'unknown')}.json"


def save_cached(result: CeilingsResult) -> Path:
    """Write ``result`` to its cache file; returns the path."""
    return result.write(cache_path(result.device_name, result.driver))


def _read_all_cached() -> list[CeilingsResult]:
    out = []
    for p in sorted(cache_dir().glob("*.json")):
        try:
            out.append(CeilingsResult.read(p))
        except (OSError, ValueError, KeyError, TypeError):  # a damaged or foreign file is not a result
            continue
    return out


def _same_gpu(result: CeilingsResult, gpu_name: str) -> bool:
    """Whether a cached result is of ``gpu_name``: a device name, registry name or display name."""
    if result.device_name.strip().lower() == gpu_name.strip().lower():
        return True

    try:
        wanted = get_gpu(gpu_name).name
    except GpuprobeError:
        return False
    return result.registry_gpu == wanted


def cached_ceilings(gpu_name: str | None = None) -> CeilingsResult | None:
    """The cached result for ``gpu_name`` (device, registry or display name), newest first; for the
    present GPU and driver when ``gpu_name`` is None. None when nothing is cached."""
    if gpu_name is None:
        ident = present_gpu_identity()
        if ident is None:
            return None
        path = cache_path(*ident)
        if path.exists():
            try:
                return CeilingsResult.read(path)
            except (OSError, ValueError, KeyError, TypeError):
                return None
        if ident[1] is not None:
            return None
        gpu_name = ident[0]  # driver unknown (no NVML): any cached run of this device
    found = [r for r in _read_all_cached() if _same_gpu(r, gpu_name)]
    return max(found, key=lambda r: r.measured_at) if found else None
