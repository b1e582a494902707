"""Input checks shared by the row-wise kernels (add+norm, activations): one wording of each refusal."""
from __future__ import annotations

import torch

#: The dtypes the kernels take (fp32 math inside for every one).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_rows(x: torch.Tensor, cols: str) -> None:
    """``x`` is ``[rows, cols]``, contiguous in its last dimension (a row stride is free), fp16/bf16/fp32."""
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"x must be [rows, {cols}], contiguous in its last dimension; got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be fp16, bf16 or fp32, got {x.dtype}")
