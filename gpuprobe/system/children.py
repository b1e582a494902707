"""Child processes that end with their whole process group (docs/contracts.md section 6).

Every child gpuprobe starts (a sweep point, ncu and the program it profiles, a replica) runs in a new
session, so that it and everything it starts form one process group; :func:`end_group` ends that
group (SIGTERM, then SIGKILL after a grace period), never just the one process, and :func:`run_child`
does so on a timeout and on Ctrl-C alike. On Linux a child started from the main thread also asks the
kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a parent killed with SIGKILL leaves no
child running: each level of a sweep (point, ncu, the profiled program) ends with the one above it.
:func:`end_tree` ends a child and every process below it, also those that started a session of their
own (a daemon's helper, a server), found through ``/proc``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class ChildResult:
    """How a child ended: exit status (negative: the signal that ended it), output, whether it ran out of time."""

    returncode: int
    output: str
    timed_out: bool


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited process whose parent, often a
    container's init, has not reaped it yet)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2:].split()[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass


def _wait(proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``proc`` to exit (whether it did is for the caller to ask)."""
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass


def end_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """End a child started in its own session and its whole process group: SIGTERM, then SIGKILL
    after ``grace_s``; returns once the child itself has exited. The group is signalled even when the
    child has already exited (what it started may still run)."""
    _signal_group(proc, signal.SIGTERM)
    _wait(proc, grace_s)
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux ``/proc``), also those that started a session of their own;
    parents before their children. Empty where ``/proc`` cannot be read."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _signal_tree(proc: subprocess.Popen, pids: Sequence[int], sig: int, wait_s: float) -> None:
    """``sig`` to ``proc``'s process group and to ``pids``, then wait up to ``wait_s`` for ``proc`` to exit."""
    _signal_group(proc, sig)
    _signal_pids(pids, sig)
    _wait(proc, wait_s)


def end_tree(proc: subprocess.Popen, grace_s: float = 5.0, kill_wait_s: float = 10.0) -> None:
    """End a child started in its own session, its process group and every process below it: SIGTERM to
    all of them (a child that turns SIGTERM into an exception runs its clean-up: a daemon stopped, a
    temporary folder removed), SIGKILL to what is left after ``grace_s`` (the processes found before and
    after the grace, so one started during the clean-up goes too). Returns once the child has exited or
    ``kill_wait_s`` has passed after the SIGKILL."""
    pids = descendants(proc.pid)
    _signal_tree(proc, pids, signal.SIGTERM, grace_s)
    left = [p for p in dict.fromkeys(pids + descendants(proc.pid)) if process_alive(p)]
    _signal_tree(proc, left, signal.SIGKILL, kill_wait_s)


def _die_with(parent_pid: int) -> Callable[[], None]:
    """The child-side set-up (run between fork and exec) that ends the child when ``parent_pid`` dies."""
    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return setup


def start_child(cmd: Sequence[str], **popen_kw) -> subprocess.Popen:
    """``subprocess.Popen`` of ``cmd`` in a new session (its own process group, for :func:`end_group`),
    ended by the kernel when this process dies (Linux, from the main thread: the request follows the
    thread that started the child)."""
    if _LIBC is not None and threading.current_thread() is threading.main_thread():
        popen_kw.setdefault("preexec_fn", _die_with(os.getpid()))
    return subprocess.Popen(list(cmd), start_new_session=True, **popen_kw)


def run_child(cmd: Sequence[str], timeout_s: float | None, *, env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None, grace_s: float = 5.0) -> ChildResult:
    """Run ``cmd`` to the end or to ``timeout_s``; stdout and stderr together as text. On a timeout, and on
    any exception here (Ctrl-C), the child's whole process group is ended (:func:`end_group`)."""
    proc = start_child(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                       env=dict(env) if env is not None else None, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return ChildResult(proc.returncode, out or "", False)
    except subprocess.TimeoutExpired:
        end_group(proc, grace_s)
        out, _ = proc.communicate()
        return ChildResult(proc.returncode if proc.returncode is not None else -signal.SIGKILL, out or "", True)
    except BaseException:
        end_group(proc, grace_s)
        raise
