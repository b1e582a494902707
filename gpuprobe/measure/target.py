"""The program Nsight Compute profiles for one roofline point: warm-up steps, then one annotated step.

``python -m gpuprobe.measure.target --model qwen2-0.5b --batch 64 --context 1024 [--layers one|all]``

Builds the engine with random weights, fills a batch's KV cache with random values so that the
next step attends ``--context`` tokens, runs ``--warmup`` eager steps *without* NVTX ranges (cuBLAS
and Triton choose and compile their kernels; nothing matches ncu's filter), then one eager step
with ranges ``decode/`` > ``layer{i}/`` > ``{op}/`` — only the representative layer annotated with
``--layers one`` (whole-step ops are always annotated), every layer with ``--layers all``. The
filters that select those kernels are :func:`gpuprobe.measure.point.nvtx_includes`.
"""
from __future__ import annotations

import sys
from gpuprobe.measure.point import point_parser, representative_layer, say_point, warmed_batch


def main(argv: list[str] | None = None) -> int:
    p = point_parser("python -m gpuprobe.measure.target", __doc__)
    p.add_argument("--layers", choices=("one", "all"), default="one")
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)

    import torch

    eng, b = warmed_batch(a)
    if eng.device.type == "cuda":
        torch.cuda.synchronize()
    layers = None if a.layers == "all" else [representative_layer(eng.spec.num_layers)]
    eng.step(b, nvtx=True, layers=layers)
    if eng.device.type == "cuda":
        torch.cuda.synchronize()
    say_point("profiled step", a, eng, f"layers {'all' if layers is None else layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
