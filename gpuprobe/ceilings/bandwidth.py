"""THE measured copy bandwidth every "% of bandwidth" divides by (:func:`copy_bandwidth`), and the
read-only figure beside it for kernels that only read (:func:`read_bandwidth`). docs/contracts.md,
"Roof names", says who divides by which."""
from __future__ import annotations

from gpuprobe.ceilings.cache import cached_ceilings
from gpuprobe.ceilings.device import gpu_or_raise
from gpuprobe.ceilings.plan import GiB, MiB
from gpuprobe.ceilings.timing import Timer, rate
from gpuprobe.errors import GpuprobeError

_QUICK_COPY: dict[str, float] = {}


def quick_copy_bandwidth(nbytes: int | None = None) -> float:
    """A torch device-to-device copy's bandwidth (bytes read + written per second), about 0.3 s."""
    gpu_or_raise()
    import torch

    idx = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    l2 = int(getattr(props, "L2_cache_size", 0) or 50 * MiB)
    free, _ = torch.cuda.mem_get_info(idx)
    nbytes = nbytes or min(max(1 * GiB, 16 * l2), int(free) // 4 // MiB * MiB)
    src = torch.empty(nbytes // 4, dtype=torch.int32, device=f"cuda:{idx}").random_()
    dst = torch.empty_like(src)
    per, _ = Timer(trial_s=0.03, trials=5).run(lambda: dst.copy_(src))
    value, _ = rate(2 * src.numel() * 4, per)
    return value


def copy_bandwidth(refresh: bool = False) -> float:
    """THE measured copy bandwidth (bytes/s, read + written) that every "% of bandwidth" divides by.

    The cached figure of the present GPU (``gpuprobe ceilings``) when there is one and ``refresh``
    is false; else a quick torch copy measured now (remembered for this process). Raises
    :class:`NotAvailable` without a GPU.
    """
    return copy_bandwidth_and_source(refresh)[0]


def copy_bandwidth_and_source(refresh: bool = False) -> tuple[float, str]:
    """:func:`copy_bandwidth` and where the figure came from (for provenance and reports)."""
    gpu_or_raise()
    if not refresh:
        cached = cached_ceilings()
        if cached is not None and cached.copy_bytes_per_s:
            return cached.copy_bytes_per_s, "gpuprobe ceilings (cached run)"
    import torch

    key = torch.cuda.get_device_name(torch.cuda.current_device())
    if refresh or key not in _QUICK_COPY:
        _QUICK_COPY[key] = quick_copy_bandwidth()
    return _QUICK_COPY[key], "torch device-to-device copy measured now (gpuprobe.ceilings.quick_copy_bandwidth)"


def copy_bandwidth_or_none() -> tuple[float | None, str]:
    """``(bytes/s, source)``, or ``(None, why)`` when there is no figure: for runs whose other results
    must survive a missing or failing copy measurement (the measured roofline's assembly)."""
    try:
        return copy_bandwidth_and_source()
    except GpuprobeError as e:
        return None, f"no measured copy bandwidth ({e})"
    except Exception as e:  # noqa: BLE001 - a failed measurement must not lose a finished sweep
        return None, f"copy bandwidth measurement failed ({type(e).__name__}: {e})"


def read_bandwidth() -> float | None:
    """The read-only DRAM figure (bytes/s) of the present GPU's cached ``gpuprobe ceilings`` run, beside
    :func:`copy_bandwidth` for kernels that only read (a read-only stream runs a little faster than a
    copy); None when no verified read figure is cached."""
    cached = cached_ceilings()
    return cached.value("dram_read") if cached is not None else None
