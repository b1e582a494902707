"""The ``gpuprobe`` command line: argument parsing only.

Each subcommand is one module in this package that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are discovered, so adding a
subcommand touches no shared file. Subcommand modules import heavy libraries (torch, triton)
inside ``run`` only. :func:`main` reads each module's ``NAME``, ``HELP`` and ``ORDER`` from its
source and imports only the subcommand it runs, so ``gpuprobe --help`` loads no subcommand at all.

Until a command starts running, Ctrl-C ends the process with one line (no traceback); a closed
standard output (``gpuprobe report R | head``) ends it quietly with exit code 0.
"""
from __future__ import annotations

import os
import signal
import sys


import argparse
import ast
import errno
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from types import ModuleType

from gpuprobe import __version__
from gpuprobe.cli._signals import interrupt_on_termination
from gpuprobe.errors import GpuprobeError, missing_dependency


@dataclass
class _Entry:
    """A subcommand as its module's source declares it; ``module`` once imported."""

    module_name: str
    name: str
    help: str
    order: int
    module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self.module is None:
            self.module = importlib.import_module(self.module_name)
        return self.module


def _literal(path: str | None) -> dict[str, object] | None:
    """``NAME``, ``HELP``, ``ORDER`` assigned as literals at the top of a module's source (None: unreadable)."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    out: dict[str, object] = {}
    has_run = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "run":
            has_run = True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and t.id in ("NAME", "HELP", "ORDER", "run"):
                if t.id == "run":
                    has_run = True
                    continue
                try:
                    out[t.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    return None
    if isinstance(out.get("NAME"), str) and not has_run:
        return None  # not sure: let the import decide
    return out


def _entries() -> list[_Entry]:
    out = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        full = f"{__name__}.{info.name}"
        spec = importlib.util.find_spec(full)
        lit = _literal(spec.origin if spec else None)
        if lit is not None and not isinstance(lit.get("NAME"), str):
            continue  # a helper module: no NAME
        if lit is None or not isinstance(lit.get("HELP"), str):
            mod = importlib.import_module(full)
            if not (hasattr(mod, "NAME") and hasattr(mod, "run")):
                continue
            out.append(_Entry(full, mod.NAME, mod.HELP, getattr(mod, "ORDER", 50), mod))
            continue
        order = lit.get("ORDER", 50)
        out.append(_Entry(full, str(lit["NAME"]), str(lit["HELP"]), order if isinstance(order, int) else 50))
    return sorted(out, key=lambda e: e.order)


def _subcommand_modules() -> list[ModuleType]:
    """Every subcommand module, imported."""
    return [e.load() for e in _entries()]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2, without the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _chosen(argv: list[str], names: set[str]) -> str | None:
    """The subcommand named on the command line: the first word that is one."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in names else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser: every subcommand's arguments (``argv`` None), or, given ``argv``, only those of the
    subcommand it names (the others listed by name and help, their modules not imported)."""
    parser = OneLineParser(
        prog="gpuprobe",
        description="Measure where the time of LLM decoding goes on a GPU, kernel by kernel.",
    )
    parser.add_argument("--version", action="version", version=f"gpuprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    entries = _entries()
    chosen = None if argv is None else _chosen(argv, {e.name for e in entries})
    for e in entries:
        if argv is not None and e.name != chosen:
            sub.add_parser(e.name, help=e.help, add_help=False)
            continue
        mod = e.load()
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _is_pipe_error(e: BaseException) -> bool:
    return isinstance(e, BrokenPipeError) or (isinstance(e, OSError) and e.errno == errno.EPIPE)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = "?"
    try:
        parser = build_parser(words)
        args = parser.parse_args(words)
        command = args.command
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        if getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "interrupted_while_starting":
            signal.signal(signal.SIGINT, signal.default_int_handler)  # python -m gpuprobe's start-up handler
        with interrupt_on_termination():
            rc = int(args._run(args) or 0)
        sys.stdout.flush()
        return rc
    except GpuprobeError as e:
        print(f"gpuprobe {command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except ModuleNotFoundError as e:
        err = missing_dependency(e)
        if err is None:
            raise
        print(f"gpuprobe {command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except RuntimeError as e:
        if "active drivers" not in str(e):  # Triton found no GPU driver to compile for
            raise
        print(f"gpuprobe {command}: error: Triton found no GPU driver ({e}); run on a CUDA GPU, "
              "or set TRITON_INTERPRET=1 to run the Triton kernels in its (slow) CPU interpreter", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"gpuprobe {command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except OSError as e:
        if not _is_pipe_error(e):  # `gpuprobe ... | head`: the reader left; nothing more to say
            raise
        _quiet_stdout()
        return 0
