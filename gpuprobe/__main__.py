"""``python -m gpuprobe``: the command line. Ctrl-C while Python is still importing is one line, not a
traceback (the handler is installed here, before any import, and ``main`` restores Python's own)."""
import os
import signal


def interrupted_while_starting(signum, _frame) -> None:
    try:
        os.write(2, b"gpuprobe: interrupted\n")
    finally:
        os._exit(128 + signum)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, interrupted_while_starting)

from gpuprobe.cli import main  # noqa: E402

raise SystemExit(main())
