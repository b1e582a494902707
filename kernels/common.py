"""Helpers every kernel of this package shares: input checks, the dtype map, launch-size helpers and the
GPU timer. This package imports nothing of gpuprobe outside itself (the app measures the kernels from
:mod:`gpuprobe.ceilings.kernel_bench`)."""
from __future__ import annotations

from typing import Any, Callable

import torch

#: The dtypes the kernels take (fp32 math inside for every one).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: Normalised dtype name (``gpuprobe.specs.gpus.normalize_dtype``) -> torch dtype: the one such map.
TORCH_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: SMs assumed where no GPU is at hand (an H100 SXM).
DEFAULT_SM_COUNT = 132


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a normalised name (``bf16`` | ``fp16`` | ``fp32``)."""
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)} (normalised), got {name!r}") from None


def check_rows(x: torch.Tensor, cols: str) -> None:
    """``x`` is ``[rows, cols]``, contiguous in its last dimension (a row stride is free), fp16/bf16/fp32."""
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be [rows, {cols}], contiguous in its last dimension; got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be fp16, bf16 or fp32, got {x.dtype}")


def next_pow2(n: int) -> int:
    """The smallest power of two at least ``n`` (1 for ``n <= 1``): a block size for ``tl.arange``."""
    return 1 << max(0, int(n) - 1).bit_length()


def device_sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; :data:`DEFAULT_SM_COUNT` elsewhere."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SM_COUNT


def is_interpreted(kernel) -> bool:
    """True when Triton runs ``kernel`` in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return type(kernel).__name__ == "InterpretedFunction"


def time_s(fn: Callable[[], Any], *, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median seconds of ``fn`` on the GPU (``triton.testing.do_bench``: CUDA events, L2 flushed before
    each repetition)."""
    from triton.testing import do_bench  # Triton's benchmarking helper; the kernels import Triton anyway

    return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")) * 1e-3
