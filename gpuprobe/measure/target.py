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

import argparse
import sys
from gpuprobe.measure.point import build_batch, representative_layer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpuprobe.measure.target", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--context", type=int, required=True)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--attention", default=None)
    p.add_argument("--layers", choices=("one", "all"), default="one")
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)

    import torch

    eng, b = build_batch(a.model, a.batch, a.context, a.dtype, a.attention)
    for _ in range(max(a.warmup, 1)):
        eng.step(b)
    if eng.device.type == "cuda":
        torch.cuda.synchronize()
    layers = None if a.layers == "all" else [representative_layer(eng.spec.num_layers)]
    eng.step(b, nvtx=True, layers=layers)
    if eng.device.type == "cuda":
        torch.cuda.synchronize()
    print(f"profiled step: batch {a.batch}, context {a.context}, attention {eng.attention}, "
          f"layers {'all' if layers is None else layers}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
