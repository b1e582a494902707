"""``gpuprobe wheelhouse``: the wheels to install gpuprobe on a GPU node without internet."""
from __future__ import annotations

import argparse

from gpuprobe.tools.wheelhouse import build_wheelhouse

NAME = "wheelhouse"
HELP = "build an offline wheelhouse (gpuprobe + its dependencies) for a GPU node's Python and platform"
DESCRIPTION = """\
Run on a machine with access to a package index, from a gpuprobe source checkout. Builds gpuprobe's
wheel and downloads binary wheels of its dependencies (with the ncu and telemetry extras) for the
node's Python version and platform; torch and triton are left to the node unless --with-torch.
Copy DIR to the node and run the install line this prints.

example:
  gpuprobe wheelhouse --python 3.12 --platform manylinux_2_28_x86_64 --out wheelhouse
  # on the node:
  pip install --no-index --find-links wheelhouse 'gpuprobe[ncu,telemetry]'
"""
ORDER = 96


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the wheels (created if needed)")
    p.add_argument("--python", default=None, metavar="X.Y",
                   help="the node's Python version, e.g. 3.12 (default: this machine's)")
    p.add_argument("--platform", action="append", default=None, metavar="TAG",
                   help="the node's platform tag, e.g. manylinux_2_28_x86_64 (its glibc); older compatible "
                        "tags are added for you; repeatable (default: this machine's)")
    p.add_argument("--with-torch", action="store_true",
                   help="also bring torch, triton and safetensors (large; a node usually has its own)")
    p.add_argument("--add", nargs="+", action="extend", default=[], metavar="REQ",
                   help="more requirements to bring, e.g. cupy-cuda12x")
    p.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME",
                   help="keep only these projects besides gpuprobe (a node that has the rest), "
                        "e.g. --only ncu-report nvtx platformdirs")
    p.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="NAME",
                   help="leave out these projects (a node that has them)")
    p.add_argument("--source", default=None, metavar="DIR", help="gpuprobe's source tree (default: found)")


def run(args: argparse.Namespace) -> int:
    house = build_wheelhouse(args.out, python=args.python, platforms=args.platform or (),
                             with_torch=args.with_torch, add=args.add, only=args.only, exclude=args.exclude,
                             source=args.source, say=lambda msg: print(msg, flush=True))
    print(house.describe())
    print(f"wheelhouse: {len(house.wheels)} wheels, {house.total_bytes / 2**20:.1f} MiB in {house.path}")
    print("install on the node (no network needed):")
    print(f"  {house.install_line}")
    return 0
