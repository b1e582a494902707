"""Names of the attention backends (docs/contracts.md section 4): the one list, light enough for the
command line to offer as choices without importing torch; the backends themselves are in
:mod:`gpuprobe.engine.attention`."""
from __future__ import annotations

#: ``triton`` (paged kernel), ``sdpa-dense`` (cuDNN on a dense cache), ``torch`` (gather-then-SDPA reference).
BACKENDS: tuple[str, ...] = ("triton", "sdpa-dense", "torch")
