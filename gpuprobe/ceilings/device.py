"""The present GPU: whether there is one (:func:`gpu_or_raise`) and what it is (name, driver),
read through :mod:`gpuprobe.system.telemetry`'s NVML sampler, else torch."""
from __future__ import annotations

from typing import Any

from gpuprobe.errors import NotAvailable
from gpuprobe.system.telemetry import Telemetry, load_nvml

NO_GPU_MESSAGE = ("no CUDA GPU on this machine: ceilings are measured on one "
                  "(the analytic roofline keeps using datasheet figures)")


def gpu_or_raise() -> None:
    """Raise :class:`NotAvailable` (one line) unless torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        raise NotAvailable(NO_GPU_MESSAGE + "; torch is not installed either") from None
    if not torch.cuda.is_available():
        raise NotAvailable(NO_GPU_MESSAGE)


def nvml_device_keys(device_index: int) -> list[int | str]:
    """How NVML may name torch's device ``device_index``: its UUID (CUDA_VISIBLE_DEVICES may renumber
    devices), then the index itself."""
    keys: list[int | str] = []
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        keys.append(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
    except Exception:
        pass
    return keys + [device_index]


def max_clocks_and_driver(device: int | str, nvml: Any = None) -> dict[str, Any]:
    """``sm_max_mhz``, ``mem_max_mhz`` and ``driver`` of an NVML device (index or UUID): the figures
    :class:`~gpuprobe.system.telemetry.Telemetry` does not read. Each one NVML does not give is left out."""
    try:
        nv = nvml if nvml is not None else load_nvml()
        if nvml is not None:
            nv.nvmlInit()
    except Exception:
        return {}
    out: dict[str, Any] = {}
    try:
        handle = (nv.nvmlDeviceGetHandleByUUID(device) if isinstance(device, str)
                  else nv.nvmlDeviceGetHandleByIndex(device))
        for key, clock in (("sm_max_mhz", nv.NVML_CLOCK_SM), ("mem_max_mhz", nv.NVML_CLOCK_MEM)):
            try:
                out[key] = nv.nvmlDeviceGetMaxClockInfo(handle, clock)
            except Exception:
                pass
    except Exception:
        pass
    try:
        drv = nv.nvmlSystemGetDriverVersion()
        out["driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
    except Exception:
        pass
    try:
        nv.nvmlShutdown()
    except Exception:
        pass
    return out


def present_gpu_identity(nvml: Any = None) -> tuple[str, str | None] | None:
    """(device name, driver version) of the first GPU, through NVML, else torch; None without one."""
    tel = Telemetry(device=0, nvml=nvml)
    if tel.available and tel.device_name:
        try:
            return tel.device_name, max_clocks_and_driver(0, nvml).get("driver")
        finally:
            tel.close()
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), None
    except Exception:
        pass
    return None
