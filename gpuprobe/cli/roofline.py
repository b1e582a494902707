"""`gpuprobe roofline`: the main job. Parsing only: the run is :func:`gpuprobe.run.roofline.run_roofline`."""
from __future__ import annotations

import argparse

from gpuprobe.analytic import DEFAULT_KERNELS
from gpuprobe.cli._common import (add_attention_argument, add_context_argument, add_dtype_argument,
                                  add_kernels_argument, add_model_argument, check_context)
from gpuprobe.cli._executor import add_executor_arguments, executor_from_args
from gpuprobe.parsing import parse_int_list
from gpuprobe.render.tables import FORMATS
from gpuprobe.run.options import DEFAULT_BATCHES, MODES, RooflineOptions
from gpuprobe.run.roofline import run_roofline
from gpuprobe.specs.gpus import normalize_dtype
from gpuprobe.specs.models import load_model_spec

NAME = "roofline"
HELP = "roofline of a model's decode step per op and batch size (analytic, timing or ncu mode)"
ORDER = 1
DESCRIPTION = """\
Per-op roofline of one decode step across batch sizes.

Modes: `ncu` (Nsight Compute counters per kernel, the default when ncu and counter permission
are available), `timing` (CUDA-event time per op with analytic bytes and FLOPs), `analytic`
(cost model and ceilings only; the mode on a machine without a GPU). All write roofline.json,
roofline.csv and roofline.png in --out."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--gpu", help="GPU registry name (default: the detected GPU, else h100-sxm)")
    p.add_argument("--batch", default=None, help="batch sizes, e.g. 1,8,64 or 1-512 (powers of two); default "
                   f"{','.join(map(str, DEFAULT_BATCHES))}, cut at the largest batch that fits in measured modes")
    add_context_argument(p)
    add_dtype_argument(p)
    add_attention_argument(p)
    add_kernels_argument(p)
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="force a mode (default: the best this machine supports; nsys: graph-replayed steps "
                        "timed by Nsight Systems, docs/nsys.md)")
    p.add_argument("--layers", default="one", help="measured modes: 'one' representative layer (default) or 'all'")
    p.add_argument("--out", help="output folder (default: a new folder under ./gpuprobe-out/)")
    p.add_argument("--resume", metavar="DIR", help="measured modes: continue a sweep in DIR, skipping finished points")
    p.add_argument("--datasheet", action="store_true", help="use datasheet ceilings even when measured ones are cached")
    p.add_argument("--calibration", metavar="FILE|none|auto", default=None,
                   help="analytic mode: predict each op's time with this calibration.json (default auto: the "
                        "GPU's shipped calibration; none: the bare floor); docs/prediction.md")
    p.add_argument("--write-calibration", metavar="FILE", default=None,
                   help="measured modes: fit a calibration to this run's per-op times and write it to FILE")
    p.add_argument("--json", action="store_true", help="print roofline.json to stdout (messages go to stderr)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the table's format: table (default on a terminal), tsv (default when piped), csv, json; "
                        "tsv, csv and json hold one row per op and batch")
    add_executor_arguments(p)


def options_from_args(args: argparse.Namespace) -> RooflineOptions:
    """The one :class:`~gpuprobe.run.options.RooflineOptions` of this run (checked values)."""
    given = args.batch is not None
    spec = load_model_spec(args.model)
    return RooflineOptions(
        model=args.model, batches=tuple(parse_int_list(args.batch, "batch") if given else DEFAULT_BATCHES),
        batches_given=given, context=check_context(args.context, spec, args.beyond_max_context),
        dtype=normalize_dtype(args.dtype), gpu=args.gpu,
        attention=args.attention, mode=args.mode, layers=args.layers, out=args.out, resume=args.resume,
        use_cached_roofs=not args.datasheet, kernels=args.kernels or DEFAULT_KERNELS,
        executor=executor_from_args(args), calibration=args.calibration, write_calibration=args.write_calibration,
        fmt=args.format, as_json=args.json)


def run(args: argparse.Namespace) -> int:
    return run_roofline(options_from_args(args))
