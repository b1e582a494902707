"""``gpuprobe roofline``, every mode from one entry: :func:`run_roofline` takes the run's
:class:`~gpuprobe.run.options.RooflineOptions`, resolves the model and the GPU, chooses the mode once, and
hands the options on whole: to :func:`run_analytic_roofline` (the cost model over the roofs, predicted
with the GPU's calibration where one exists) or to :func:`gpuprobe.run.measured.run_measured_roofline`
(``timing``, ``ncu``, ``nsys``)."""
from __future__ import annotations

import sys
from pathlib import Path

from gpuprobe.errors import UserError
from gpuprobe.paths import output_dir
from gpuprobe.render.outputs import write_outputs
from gpuprobe.render.tables import print_roofline_table
from gpuprobe.roofline.analytic_roofline import analytic_roofline
from gpuprobe.run.measured import run_measured_roofline
from gpuprobe.run.options import RooflineOptions
from gpuprobe.run.plan import cached_roofs, choose_mode, gpu_and_device
from gpuprobe.specs.gpus import DTYPE_BYTES
from gpuprobe.specs.models import load_model_spec


def run_roofline(options: RooflineOptions) -> int:
    """Run the roofline the options ask for; returns the exit status."""
    spec = load_model_spec(options.model)
    gpu, detected = gpu_and_device(options.gpu)
    mode, why = choose_mode(options.mode, has_gpu=detected is not None)
    if mode == "analytic" and options.resume:
        raise UserError("--resume continues a measured sweep; the analytic roofline has nothing to resume "
                        "(drop --resume, or run on a GPU with --mode timing|ncu|nsys).")
    if mode != "analytic" and options.kernels == "unfused":
        raise UserError("--kernels unfused applies to --mode analytic; the measured modes profile the engine's "
                        "default fused kernels.")
    if mode == "analytic" and getattr(options.executor, "name", "local") != "local":
        raise UserError("--executor runs a measured sweep's points; the analytic roofline has none "
                        "(drop --executor, or use --mode timing|ncu|nsys).")
    if mode == "analytic" and options.write_calibration:
        raise UserError("--write-calibration fits a calibration to measured times; the analytic roofline "
                        "measures none (use --mode timing|ncu|nsys on a GPU).")
    if mode != "analytic":
        out = Path(options.resume) if options.resume else output_dir(options.out, f"roofline-{spec.name}")
        return run_measured_roofline(options, spec=spec, gpu=gpu, mode=mode, why=why, out=out)
    return run_analytic_roofline(options, spec=spec, gpu=gpu, why=why)


def _calibration(options: RooflineOptions, gpu):
    """The calibration the analytic mode predicts with (None: the bare floor)."""
    from gpuprobe.calibration import resolve_calibration  # the calibration stage: loaded only when predicting

    return resolve_calibration(options.calibration, gpu, options.dtype)


def run_analytic_roofline(options: RooflineOptions, *, spec, gpu, why: str) -> int:
    """The analytic roofline: the table (or ``roofline.json``) on stdout, the files in the output folder."""
    out = output_dir(options.out, f"roofline-{spec.name}")
    roofs = cached_roofs(gpu, options.dtype, options.use_cached_roofs)
    calibration = _calibration(options, gpu)
    result = analytic_roofline(spec, gpu, list(options.batches), options.context, options.dtype, extra_roofs=roofs,
                               kernels=options.kernels, calibration=calibration)
    say = sys.stderr
    timed = (f"predicted per op by the calibration '{calibration.label}' (the floor beside it)"
             if calibration is not None else "the floor: max(FLOPs / compute roof, minimum bytes / DRAM roof)")
    print(f"gpuprobe roofline: ANALYTIC mode ({why}): not measured; times are {timed}, from the cost model "
          f"and {'measured' if roofs else 'datasheet'} ceilings of {gpu.display_name}.", file=say, flush=True)
    mem = result.extra["memory"]
    if options.as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_roofline_table(result, fmt=options.fmt,
                             footer=f"weights {spec.weight_bytes(DTYPE_BYTES[options.dtype]) / 1e9:.2f} GB; "
                                    f"largest batch whose KV cache at context {options.context} fits "
                                    f"{gpu.display_name} ({mem['memory_fraction']:.0%} of memory): "
                                    f"{mem['max_batch_that_fits']}")
    sys.stdout.flush()
    files = write_outputs(result, out, figures=("roofline",))
    for name in ("json", "csv", "roofline"):
        if name in files:
            print(f"wrote {files[name]}", file=say)
    return 0
