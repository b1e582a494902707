"""The registry of GPU-side checks (``gpuprobe selftest``) and the evidence bundle."""
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, all_checks, check

__all__ = ["CheckContext", "CheckFailed", "Skip", "all_checks", "check"]
