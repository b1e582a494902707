"""`gpuprobe roofline`: the main job. Analytic without a GPU; measured (ncu or timing) with one."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpuprobe.cli._common import (DEFAULT_BATCHES, add_attention_argument, add_context_argument, add_dtype_argument,
                                  add_kernels_argument, add_model_argument, check_context, output_dir, parse_int_list)
from gpuprobe.analytic import DEFAULT_KERNELS
from gpuprobe.errors import UserError
from gpuprobe.nsys.engine_roofline import run_nsys_roofline
from gpuprobe.render.plots.roofline import plot_roofline
from gpuprobe.render.tables import print_roofline_table
from gpuprobe.roofline.analytic import analytic_roofline
from gpuprobe.roofline.measured import run_measured_roofline
from gpuprobe.roofline.plan import MODES, RooflineOptions, cached_roofs, choose_mode
from gpuprobe.specs.gpus import DEFAULT_GPU, DTYPE_BYTES, detect_gpu, get_gpu, normalize_dtype
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
    p.add_argument("--json", action="store_true", help="print roofline.json to stdout (messages go to stderr)")
    p.add_argument("--format", choices=("table", "tsv", "csv", "json"), default=None,
                   help="the table's format: table (default on a terminal), tsv (default when piped), csv, json")


def _resolve_gpu(name: str | None):
    if name:
        return get_gpu(name), None
    det = detect_gpu()
    if det is not None and det.spec is not None:
        return det.spec, det
    return get_gpu(DEFAULT_GPU), det


def options_from_args(args: argparse.Namespace, spec) -> RooflineOptions:
    """The one :class:`~gpuprobe.roofline.plan.RooflineOptions` of this run (checked values)."""
    given = args.batch is not None
    return RooflineOptions(
        model=args.model, batches=tuple(parse_int_list(args.batch, "batch") if given else DEFAULT_BATCHES),
        batches_given=given, context=check_context(args.context, spec, args.beyond_max_context),
        dtype=normalize_dtype(args.dtype), gpu=args.gpu,
        attention=args.attention, mode=args.mode, layers=args.layers, out=args.out, resume=args.resume,
        use_cached_roofs=not args.datasheet, kernels=args.kernels or DEFAULT_KERNELS)


def run(args: argparse.Namespace) -> int:
    spec = load_model_spec(args.model)
    options = options_from_args(args, spec)
    gpu, detected = _resolve_gpu(options.gpu)
    mode, why = choose_mode(options.mode, has_gpu=detected is not None)
    if mode == "analytic" and options.resume:
        raise UserError("--resume continues a measured sweep; the analytic roofline has nothing to resume "
                        "(drop --resume, or run on a GPU with --mode timing|ncu|nsys).")
    kernels = options.kernels
    if mode != "analytic" and kernels == "unfused":
        raise UserError("--kernels unfused applies to --mode analytic; the measured modes profile the engine's "
                        "default fused kernels.")
    if mode != "analytic":
        out = Path(options.resume) if options.resume else output_dir(options.out, f"roofline-{spec.name}")
        if mode == "nsys":
            return run_nsys_roofline(options, spec=spec, gpu=gpu, out=out)
        return run_measured_roofline(options, spec=spec, gpu=gpu, mode=mode, why=why, out=out)
    out = output_dir(options.out, f"roofline-{spec.name}")
    roofs = cached_roofs(gpu, options.dtype, options.use_cached_roofs)
    say = sys.stderr if args.json else sys.stdout
    print(f"gpuprobe roofline: ANALYTIC mode ({why}): times are predicted from the cost model and "
          f"{'measured' if roofs else 'datasheet'} ceilings of {gpu.display_name}, not measured.", file=say,
          flush=True)
    return _run_analytic(spec, gpu, list(options.batches), options.context, options.dtype, roofs, out,
                         as_json=args.json, fmt=args.format, kernels=kernels)


def _run_analytic(spec, gpu, batches, context, dtype, roofs, out, as_json: bool = False,
                  fmt: str | None = None, kernels: str = DEFAULT_KERNELS) -> int:
    result = analytic_roofline(spec, gpu, batches, context, dtype, extra_roofs=roofs, kernels=kernels)
    mem = result.extra["memory"]
    if as_json:
        print(result.to_json())
    else:
        print_roofline_table(result, fmt=fmt,
                             footer=f"weights {spec.weight_bytes(DTYPE_BYTES[dtype]) / 1e9:.2f} GB; "
                                    f"largest batch whose KV cache at context {context} fits "
                                    f"{gpu.display_name} ({mem['memory_fraction']:.0%} of memory): "
                                    f"{mem['max_batch_that_fits']}")
    jpath, cpath = result.write(out)
    png = plot_roofline(result, out / "roofline.png")
    print(f"wrote {png}\nwrote {jpath}\nwrote {cpath}", file=sys.stderr if as_json else sys.stdout)
    sys.stdout.flush()
    return 0
