"""The program Nsight Systems traces for one point of ``gpuprobe roofline --mode nsys``.

``python -m gpuprobe.measure.nsys_target --model qwen2-0.5b --batch 64 --context 1024``

Builds gpuprobe's engine with random weights and a batch whose next step attends ``--context``
tokens, runs ``--warmup`` unannotated eager steps, then ``--eager-steps`` eager steps with the op
ranges ``decode/`` > ``layer{i}/`` > ``{op}/`` (the reference the graph kernels are aligned with),
captures the step as a CUDA graph and replays it ``--graph-steps`` times, each replay inside a
range ``graph_decode b=B c=C`` (the steps the roofline is measured on: ranges pushed inside a
capture are not replayed, so the graph's kernels get their ops by alignment with the eager steps).
"""
from __future__ import annotations

import sys
from gpuprobe.engine.nvtx import get_backend
from gpuprobe.measure.point import point_parser, say_point, warmed_batch

#: Step ranges of the trace: eager reference steps, graph-replayed measured steps.
EAGER_STEP_REGEX = r"^decode$"
GRAPH_STEP_REGEX = r"^graph_decode\b"


def graph_step_name(batch: int, context: int) -> str:
    return f"graph_decode b={batch} c={context}"


def main(argv: list[str] | None = None) -> int:
    p = point_parser("python -m gpuprobe.measure.nsys_target", __doc__)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eager-steps", type=int, default=2)
    p.add_argument("--graph-steps", type=int, default=10)
    a = p.parse_args(argv)

    import torch

    eng, b = warmed_batch(a)
    for _ in range(max(a.eager_steps, 1)):
        eng.step(b, nvtx=True)
    torch.cuda.synchronize()
    g = eng.capture(b)
    nvtx = get_backend()
    name = graph_step_name(a.batch, a.context)
    for _ in range(max(a.graph_steps, 1)):
        nvtx.push(name)
        g.replay()
        nvtx.pop()
    torch.cuda.synchronize()
    say_point("traced", a, eng, f"{a.eager_steps} eager steps, {a.graph_steps} graph replays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
