"""`gpuprobe roofline`: the main job. Analytic without a GPU; measured (ncu or timing) with one."""
from __future__ import annotations

import argparse
import sys

from gpuprobe.cli._common import (
    DEFAULT_BATCHES, add_attention_argument, add_batch_argument, add_context_argument, add_dtype_argument,
    add_kernels_argument, add_model_argument, check_context, output_dir, parse_int_list,
)

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
    add_batch_argument(p, default=",".join(map(str, DEFAULT_BATCHES)))
    add_context_argument(p)
    add_dtype_argument(p)
    add_attention_argument(p)
    add_kernels_argument(p)
    p.add_argument("--mode", choices=("auto", "analytic", "timing", "ncu"), default="auto",
                   help="force a mode (default: the best this machine supports)")
    p.add_argument("--layers", default="one", help="measured modes: 'one' representative layer (default) or 'all'")
    p.add_argument("--out", help="output folder (default: a new folder under ./gpuprobe-out/)")
    p.add_argument("--resume", metavar="DIR", help="measured modes: continue a sweep in DIR, skipping finished points")
    p.add_argument("--datasheet", action="store_true", help="use datasheet ceilings even when measured ones are cached")


def _resolve_gpu(name: str | None):
    from gpuprobe.specs.gpus import DEFAULT_GPU, detect_gpu, get_gpu

    if name:
        return get_gpu(name), None
    det = detect_gpu()
    if det is not None and det.spec is not None:
        return det.spec, det
    return get_gpu(DEFAULT_GPU), det


def _cached_roofs(gpu, dtype: str, use: bool):
    """Measured roofs cached by `gpuprobe ceilings` for this GPU, if any."""
    if not use:
        return []
    try:
        from gpuprobe.ceilings import cached_ceilings, measured_roofs
    except ImportError:
        return []
    cached = cached_ceilings(gpu.display_name)
    return measured_roofs(cached, dtype) if cached else []


def choose_mode(requested: str, detected) -> tuple[str, str]:
    """The mode to run and why (the banner's reason)."""
    if requested == "analytic":
        return "analytic", "forced with --mode analytic"
    if detected is None:
        if requested in ("timing", "ncu"):
            from gpuprobe.errors import NotAvailable

            raise NotAvailable(f"--mode {requested} needs a CUDA GPU and this machine has none; "
                               "drop --mode (or use --mode analytic) for the analytic roofline.")
        return "analytic", "no GPU on this machine"
    return requested, "requested" if requested != "auto" else "auto"


def run(args: argparse.Namespace) -> int:
    from gpuprobe.specs.gpus import normalize_dtype
    from gpuprobe.specs.models import load_model_spec

    spec = load_model_spec(args.model)
    batches = parse_int_list(args.batch, "batch")
    context = check_context(args.context)
    dtype = normalize_dtype(args.dtype)
    gpu, detected = _resolve_gpu(args.gpu)
    if args.layers not in ("one", "all"):
        from gpuprobe.errors import UserError

        raise UserError(f"--layers must be 'one' or 'all', got '{args.layers}'.")
    mode, why = choose_mode(args.mode, detected)
    kernels = getattr(args, "kernels", None)
    if mode != "analytic" and kernels == "unfused":
        from gpuprobe.errors import UserError

        raise UserError("--kernels unfused applies to --mode analytic; the measured modes profile the engine's "
                        "default fused kernels.")
    if mode != "analytic":
        from gpuprobe.roofline_measured import run_measured_roofline

        return run_measured_roofline(args, spec=spec, gpu=gpu, batches=batches, context=context,
                                     dtype=dtype, mode=mode)
    out = output_dir(args.out, f"roofline-{spec.name}")
    roofs = _cached_roofs(gpu, dtype, not args.datasheet)
    print(f"gpuprobe roofline: ANALYTIC mode ({why}): times are predicted from the cost model and "
          f"{'measured' if roofs else 'datasheet'} ceilings of {gpu.display_name}, not measured.", flush=True)
    return _run_analytic(spec, gpu, batches, context, dtype, roofs, out, kernels or "fused")


def _run_analytic(spec, gpu, batches, context, dtype, roofs, out, kernels: str = "fused") -> int:
    from gpuprobe.plots.roofline import plot_roofline
    from gpuprobe.report_tables import print_roofline_table
    from gpuprobe.roofline_analytic import analytic_roofline
    from gpuprobe.specs.gpus import DTYPE_BYTES

    result = analytic_roofline(spec, gpu, batches, context, dtype, extra_roofs=roofs, kernels=kernels)
    mem = result.extra["memory"]
    print_roofline_table(result, footer=f"weights {spec.weight_bytes(DTYPE_BYTES[dtype]) / 1e9:.2f} GB; "
                                        f"largest batch whose KV cache at context {context} fits "
                                        f"{gpu.display_name} ({mem['memory_fraction']:.0%} of memory): "
                                        f"{mem['max_batch_that_fits']}")
    jpath, cpath = result.write(out)
    png = plot_roofline(result, out / "roofline.png")
    print(f"wrote {png}\nwrote {jpath}\nwrote {cpath}")
    sys.stdout.flush()
    return 0
