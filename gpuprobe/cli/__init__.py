"""The ``gpuprobe`` command line: argument parsing only.

Each subcommand is one module in this package that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered, so adding a
subcommand touches no shared file. Subcommand modules import heavy libraries (torch, triton)
inside ``run`` only, so ``gpuprobe --help`` stays fast on a laptop.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from types import ModuleType

from gpuprobe import __version__
from gpuprobe.cli._signals import interrupt_on_termination
from gpuprobe.errors import GpuprobeError, missing_dependency


def _subcommand_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2, without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="gpuprobe",
        description="Measure where the time of LLM decoding goes on a GPU, kernel by kernel.",
    )
    parser.add_argument("--version", action="version", version=f"gpuprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for mod in _subcommand_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with interrupt_on_termination():
            return int(args._run(args) or 0)
    except GpuprobeError as e:
        print(f"gpuprobe {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except ModuleNotFoundError as e:
        err = missing_dependency(e)
        if err is None:
            raise
        print(f"gpuprobe {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except RuntimeError as e:
        if "active drivers" not in str(e):  # Triton found no GPU driver to compile for
            raise
        print(f"gpuprobe {args.command}: error: Triton found no GPU driver ({e}); run on a CUDA GPU, "
              "or set TRITON_INTERPRET=1 to run the Triton kernels in its (slow) CPU interpreter", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"gpuprobe {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `gpuprobe ... | head`
        return 0
