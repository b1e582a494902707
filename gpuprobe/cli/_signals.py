"""SIGTERM and SIGHUP handled like Ctrl-C: each becomes :class:`Terminated` (a ``KeyboardInterrupt``) in
the main thread, so every clean-up that Ctrl-C runs (children ended with their process groups, finished
points kept, partial outputs written, temporary folders removed) runs for them too."""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

#: The signals that stop a command as Ctrl-C does.
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A termination signal, raised where the main thread is; ``signum`` names it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated`; the previous handlers come back after."""
    previous = {s: signal.signal(s, _raise) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
