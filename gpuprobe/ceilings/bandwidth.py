"""THE measured copy bandwidth every "% of bandwidth" divides by (:func:`copy_bandwidth`)."""
from __future__ import annotations

from gpuprobe.ceilings.cache import cached_ceilings
from gpuprobe.ceilings.device import gpu_or_raise
from gpuprobe.ceilings.plan import GiB, MiB
from gpuprobe.ceilings.timing import Timer, rate

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
    gpu_or_raise()
    if not refresh:
        cached = cached_ceilings()
        if cached is not None and cached.copy_bytes_per_s:
            return cached.copy_bytes_per_s
    import torch

    key = torch.cuda.get_device_name(torch.cuda.current_device())
    if refresh or key not in _QUICK_COPY:
        _QUICK_COPY[key] = quick_copy_bandwidth()
    return _QUICK_COPY[key]
