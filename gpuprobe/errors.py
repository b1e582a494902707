"""Error types: a `UserError` becomes one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

from typing import Callable, TypeVar

_T = TypeVar("_T")


class GpuprobeError(Exception):
    """Base class of every error gpuprobe raises on purpose."""


class UserError(GpuprobeError):
    """Bad input from the user: the message says what is wrong and what to do."""

    exit_code = 2


class NotAvailable(GpuprobeError):
    """A capability this machine lacks (no GPU, no ncu, no counter permission...)."""

    exit_code = 2


def lookup_or_none(lookup: Callable[[str], _T], name: str | None) -> _T | None:
    """``lookup(name)`` (a registry look-up), or None when ``name`` is empty or ``lookup`` rejects it (UserError)."""
    if not name:
        return None
    try:
        return lookup(name)
    except UserError:
        return None


#: Optional modules and the extra that installs each (``pip install 'gpuprobe[EXTRA]'``).
OPTIONAL_EXTRAS: dict[str, str] = {
    "torch": "engine", "triton": "engine", "safetensors": "engine",
    "ncu_report": "ncu", "nvtx": "ncu", "pynvml": "telemetry", "cupy": "cuda",
    "transformers": "test", "nbclient": "notebook",
}


def missing_dependency(error: ModuleNotFoundError) -> NotAvailable | None:
    """The one-line error for an optional module that is not installed, or None for any other module."""
    root = (error.name or "").split(".")[0]
    extra = OPTIONAL_EXTRAS.get(root)
    if extra is None:
        return None
    return NotAvailable(f"this needs the Python module '{root}', which is not installed; "
                        f"install it with: pip install 'gpuprobe[{extra}]'")
