"""Running a script's ``main`` as the CLI runs a subcommand (the scripts in ``benchmarks/``)."""
from __future__ import annotations

import sys
from typing import Callable

from gpuprobe.errors import GpuprobeError


def run_script(main: Callable[..., int | None], argv: list[str] | None = None) -> None:
    """Call ``main`` (with ``argv`` when given) and exit with its code: a gpuprobe error or a bad value is
    one line on stderr and exit code 2 (the error's own code where it has one), never a traceback;
    Ctrl-C exits 130."""
    try:
        code = main() if argv is None else main(argv)
    except (GpuprobeError, ValueError) as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except KeyboardInterrupt:
        print(f"{sys.argv[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
