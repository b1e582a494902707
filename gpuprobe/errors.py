"""Error types: a `UserError` becomes one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations


class GpuprobeError(Exception):
    """Base class of every error gpuprobe raises on purpose."""


class UserError(GpuprobeError):
    """Bad input from the user: the message says what is wrong and what to do."""

    exit_code = 2


class NotAvailable(GpuprobeError):
    """A capability this machine lacks (no GPU, no ncu, no counter permission...)."""

    exit_code = 2
