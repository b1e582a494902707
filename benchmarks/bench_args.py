"""The command line the kernel benchmarks (attention.py, gemm.py) share; a helper module, not a script."""
from __future__ import annotations

import argparse
from typing import Sequence

from gpuprobe.ceilings import kernel_bench as bench
from gpuprobe.render.tables import FORMATS


def parse_bench_args(p: argparse.ArgumentParser, argv: Sequence[str] | None,
                     knob_names: tuple[str, ...]) -> tuple[argparse.Namespace, list[dict[str, int | None]]]:
    """Add --format, parse ``argv``, stop without CUDA, and read --knobs into the knob sets to time."""
    p.add_argument("--format", choices=(*FORMATS, "markdown"), default=None,
                   help="table (default on a terminal), tsv (default when piped), csv, json, or markdown")
    args = p.parse_args(argv)
    bench.require_cuda()
    return args, bench.parse_knobs(args.knobs, knob_names)
