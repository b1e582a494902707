"""The executor options of every command that runs a sweep (``roofline``, ``sweep``, calibration runs):
``--executor local|slurm`` and the Slurm job settings (docs/cluster.md maps each to its sbatch option)."""
from __future__ import annotations

import argparse

from gpuprobe.cli._common import non_negative_int, positive_int
from gpuprobe.errors import UserError
from gpuprobe.measure.executors import EXECUTORS, LocalExecutor, SlurmExecutor, SlurmSettings, check_slurm, \
    parse_slurm_time

#: ``--retries`` when not given: none here (a failure here recurs), two on a cluster (a node can fail).
DEFAULT_RETRIES = {"local": 0, "slurm": 2}


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--executor`` and its settings; :func:`executor_from_args` turns them into an executor."""
    g = p.add_argument_group("where the points run (docs/cluster.md)")
    g.add_argument("--executor", default="local", metavar="{local,slurm}",
                   help="local: one point after another on this machine (default); slurm: every point a Slurm "
                        "job (through submitit), the results folder on a filesystem the nodes share")
    g.add_argument("--max-parallel", type=positive_int("--max-parallel"), default=None, metavar="N",
                   help="slurm: at most N points of a results folder running at once (sbatch --array=...%%N)")
    g.add_argument("--retries", type=non_negative_int("--retries"), default=None, metavar="N",
                   help="run a point that failed or timed out again, up to N times (default: 0 local, 2 slurm; "
                        "an out-of-memory point is not retried)")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="sbatch --partition")
    g.add_argument("--slurm-gpus-per-job", type=non_negative_int("--slurm-gpus-per-job"), default=1, metavar="N",
                   help="sbatch --gpus-per-node (default 1; 0 asks for no GPU)")
    g.add_argument("--slurm-constraint", default=None, metavar="FEATURES",
                   help="sbatch --constraint: nodes with these features (e.g. the nodes that permit GPU counters)")
    g.add_argument("--slurm-time", default=None, metavar="TIME",
                   help="sbatch --time per point: minutes, HH:MM:SS or D-HH:MM:SS (default: the point's own "
                        "limit plus 5 minutes)")
    g.add_argument("--slurm-account", default=None, metavar="NAME", help="sbatch --account")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="a shell line each job runs before its point (repeatable): `module load cuda`, "
                        "`source venv/bin/activate`, `export VAR=...`")


def executor_from_args(args: argparse.Namespace, partitions: list[str | None] | None = None):
    """The executor the options ask for, checked before anything is submitted (one line, exit 2, otherwise):
    an unknown executor, Slurm options without ``--executor slurm``, missing Slurm tools or submitit, a
    partition that does not exist (``sinfo``). ``partitions``: more partitions to check (a study's GPUs)."""
    kind = args.executor
    if kind not in EXECUTORS:
        raise UserError(f"--executor '{kind}' is not an executor; use one of {', '.join(EXECUTORS)}.")
    retries = DEFAULT_RETRIES[kind] if args.retries is None else args.retries
    if kind == "local":
        given = [f"--slurm-{n.replace('_', '-')}" for n in ("partition", "constraint", "time", "account")
                 if getattr(args, f"slurm_{n}")]
        if args.slurm_setup:
            given.append("--slurm-setup")
        if args.max_parallel:
            given.append("--max-parallel")
        if given:
            verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise UserError(f"{', '.join(given)} {verb} to --executor slurm; add --executor slurm, or drop {them}.")
        return LocalExecutor(retries=retries)
    settings = SlurmSettings(partition=args.slurm_partition, gpus_per_job=args.slurm_gpus_per_job,
                             constraint=args.slurm_constraint, time_min=parse_slurm_time(args.slurm_time),
                             account=args.slurm_account, setup=tuple(args.slurm_setup),
                             max_parallel=args.max_parallel)
    check_slurm([settings.partition, *(partitions or [])])
    return SlurmExecutor(settings, retries=retries)
