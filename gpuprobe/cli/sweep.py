"""`gpuprobe sweep STUDY.toml`: a study (models x GPUs x contexts x batches x modes), its points as jobs."""
from __future__ import annotations

import argparse

from gpuprobe.cli._common import add_attention_argument
from gpuprobe.parsing import parse_int_list
from gpuprobe.cli._executor import add_executor_arguments, executor_from_args
from gpuprobe.errors import UserError
from gpuprobe.render.tables import FORMATS
from gpuprobe.run.study import EXECUTOR_KEYS, load_plan, parse_gpu, print_status, resume_plan, run_study

NAME = "sweep"
HELP = "a study: measured rooflines of models x GPUs x contexts x batches, every point a job (docs/cluster.md)"
ORDER = 3
DESCRIPTION = """\
A study in one command: one measured roofline per (model, GPU, context) in its own results folder, a
study.json index, and one comparison across GPUs (per-op time and DRAM % of peak: comparison.csv, the
table on stdout, comparison.png). Each GPU is a Slurm partition or constraint (--executor slurm).

  gpuprobe sweep study.toml --executor slurm --max-parallel 8
  gpuprobe sweep --model qwen2-0.5b,qwen2-1.5b --gpu h100-sxm:partition=h100 --gpu h200:partition=h200 \\
      --batch 1,8,64 --executor slurm
  gpuprobe sweep --status DIR        # progress at any time (queued, running, done, failed, time left)
  gpuprobe sweep --resume DIR        # after Ctrl-C or a killed driver: adopts the jobs still in flight"""

#: The executor options whose value, when not given, comes from the study file's [executor] table.
_FROM_FILE_DEFAULTS = {"executor": None, "slurm_gpus_per_job": None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", metavar="STUDY.toml", help="the study file (see docs/cluster.md)")
    p.add_argument("--model", action="append", default=None, metavar="M[,M...]",
                   help="models (registry names or folders holding config.json); replaces the file's list")
    p.add_argument("--gpu", action="append", default=None, metavar="NAME[:partition=P][:constraint=C]",
                   help="a GPU of the study and where its nodes are (repeatable); replaces the file's list")
    p.add_argument("--context", default=None, metavar="C[,C...]", help="context lengths in tokens")
    p.add_argument("--batch", default=None, metavar="LIST",
                   help="batch sizes, e.g. 1,8,64 or 1-512 (default: 1..512, cut at what fits each GPU)")
    p.add_argument("--mode", default=None, metavar="ncu|timing|nsys[,...]",
                   help="measured modes (default ncu; a node that refuses counters falls back to timing per point)")
    p.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default bf16)")
    add_attention_argument(p)
    p.add_argument("--layers", default=None, help="ncu mode: 'one' representative layer (default) or 'all'")
    p.add_argument("--out", help="the study's folder (default: a new folder under ./gpuprobe-out/)")
    p.add_argument("--resume", metavar="DIR", help="continue the study in DIR: only points without an ok record run; "
                   "jobs still queued or running are adopted")
    p.add_argument("--status", metavar="DIR", help="print the progress of the study (or sweep) in DIR and exit")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="the tables' format: table (default on a terminal), tsv (default when piped), csv, json")
    add_executor_arguments(p)
    p.set_defaults(**_FROM_FILE_DEFAULTS)


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _executor_options(args: argparse.Namespace, from_file: dict) -> None:
    """The study file's [executor] values for the options the command line left out."""
    for key, attr in EXECUTOR_KEYS.items():
        if key not in from_file or getattr(args, attr) not in (None, []):
            continue
        value = from_file[key]
        if key in ("max_parallel", "retries", "gpus_per_job") and (isinstance(value, bool) or not isinstance(value, int)
                                                                    or value < (1 if key == "max_parallel" else 0)):
            raise UserError(f"[executor] {key} must be a whole number{' > 0' if key == 'max_parallel' else ' >= 0'}, "
                            f"got {value!r}.")
        if key == "setup":
            value = [value] if isinstance(value, str) else [str(v) for v in value]
        setattr(args, attr, value)
    if args.executor is None:
        args.executor = "local"
    if args.slurm_gpus_per_job is None:
        args.slurm_gpus_per_job = 1


def run(args: argparse.Namespace) -> int:
    if args.status:
        return print_status(args.status, args.format)
    lists = {"models": _split(args.model),
             "gpus": [{"name": g.name, "partition": g.partition, "constraint": g.constraint}
                      for g in map(parse_gpu, _split(args.gpu) or [])] or None,
             "contexts": parse_int_list(args.context, "context") if args.context else None,
             "batches": parse_int_list(args.batch, "batch") if args.batch else None,
             "modes": _split([args.mode]) if args.mode else None, "dtype": args.dtype,
             "attention": args.attention, "layers": args.layers}
    if args.study is None and not args.resume and not (lists["models"] and lists["gpus"]):
        raise UserError("give a study file (gpuprobe sweep STUDY.toml), or --model and --gpu, or --resume DIR / "
                        "--status DIR.")
    if args.study is None and args.resume:
        plan = resume_plan(args.resume)
        if any(v is not None for v in lists.values()):
            raise UserError("--resume DIR continues the study stored in DIR; drop the list options (or give the "
                            "same study file).")
    else:
        plan = load_plan(args.study, **{k: [dict((kk, vv) for kk, vv in g.items() if vv) for g in v]
                                        if k == "gpus" and v else v for k, v in lists.items()})
    _executor_options(args, plan.executor)
    executor = executor_from_args(args, partitions=[g.partition for g in plan.gpus])
    return run_study(plan, executor=executor, out=args.out, resume=args.resume, fmt=args.format)
