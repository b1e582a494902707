"""Checks on the paths a command reads or writes, before any byte moves: one line and exit 2, never a hang.

* :func:`require_regular_file`: an input must be a regular file (a FIFO would block forever, a link to
  ``/dev/zero`` or a character device would be read until memory runs out), optionally below a size.
* :func:`require_writable_file` / :func:`require_writable_dir`: an output (``--plot PNG``, ``--out DIR``)
  must be creatable: its folder exists (or can be made), is a folder, and is writable; ``/proc/x.png``
  or a path under a regular file is refused before the work starts.
"""
from __future__ import annotations

import lzma
import os
import stat
import time
from pathlib import Path

from gpuprobe.errors import UserError


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def require_regular_file(path: str | Path, what: str = "an input file", max_bytes: int | None = None) -> int:
    """The size of ``path`` when it is a regular file (links followed) of at most ``max_bytes``; else
    :class:`UserError` naming it and what it is instead. Never opens the file."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UserError(f"'{p}': no such file") from None
    except PermissionError:
        raise UserError(f"'{p}': permission denied; check the path and its permissions") from None
    except OSError as e:
        raise UserError(f"'{p}': cannot be read ({e.strerror or e})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise UserError(f"'{p}' is a folder; give {what}")
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise UserError(f"'{p}' is {kind}, not a regular file; give {what} (copy the data to a file first)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UserError(f"'{p}' is {_human(st.st_size)}, more than the {_human(max_bytes)} this reader takes; "
                        "split or filter it first")
    if not os.access(p, os.R_OK):
        raise UserError(f"'{p}': permission denied; check its permissions")
    return st.st_size


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def require_fits_in_memory(path: str | Path, size: int, expansion: float, what: str) -> None:
    """Refuse a file whose in-memory form (``size * expansion`` bytes) would not fit in available memory."""
    avail = available_memory()
    if avail is not None and size * expansion > avail:
        raise UserError(f"'{path}' ({_human(size)}) would need about {_human(int(size * expansion))} of memory to "
                        f"read as {what}, more than the {_human(avail)} available; filter or split it first")


def _existing_parent(p: Path) -> Path:
    q = p.parent if str(p.parent) else Path(".")
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def require_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder that exists or can be created and is writable; else one-line :class:`UserError`."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{option} '{p}' exists and is not a folder; give a folder path")
        target = p
    else:
        target = _existing_parent(p)
        if not target.is_dir():
            raise UserError(f"{option} '{p}': '{target}' is not a folder, so '{p}' cannot be created")
    if not os.access(target, os.W_OK | os.X_OK) or _pseudo_fs(target):
        raise UserError(f"{option} '{p}': '{target}' is not writable; choose another place")
    return p


def require_writable_file(path: str | Path, option: str = "--plot") -> Path:
    """``path`` as a file that can be written: not a folder, not a device or FIFO, in a writable folder
    (made later by the writer if absent); else one-line :class:`UserError`."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} '{p}' is a folder; give a file name (e.g. roofline.png)")
    if p.exists():
        mode = os.stat(p).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"{option} '{p}' exists and is not a regular file; give another file name")
        if not os.access(p, os.W_OK):
            raise UserError(f"{option} '{p}' exists and is not writable; choose another place")
    parent = p.parent if str(p.parent) else Path(".")
    target = parent if parent.exists() else _existing_parent(p)
    if not target.is_dir():
        raise UserError(f"{option} '{p}': '{target}' is not a folder, so '{p}' cannot be written")
    if not os.access(target, os.W_OK | os.X_OK) or _pseudo_fs(target):
        raise UserError(f"{option} '{p}': '{target}' is not writable; choose another place")
    return p


def _pseudo_fs(folder: Path) -> bool:
    """True under /proc or /sys, where root may pass ``os.access`` yet no new file can be created."""
    try:
        resolved = folder.resolve()
    except OSError:
        return False
    return resolved.parts[:2] in (("/", "proc"), ("/", "sys"))


__all__ = ["require_regular_file", "require_writable_file", "require_writable_dir", "require_fits_in_memory",
           "available_memory"]


def output_dir(out: str | Path | None, prefix: str) -> Path:
    """The folder a run writes into: ``out``, or a new ``./gpuprobe-out/{prefix}-{timestamp}``; made once and
    checked writable (one line naming it otherwise)."""
    path = Path(out) if out else Path("gpuprobe-out") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder '{path}': {e.strerror or e}; pass a writable --out.") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder '{path}' is not writable; pass a writable --out.")
    return path


class DecompressError(ValueError):
    """An ``.xz`` input that cannot be decompressed, or would decompress past the limit (the message says which)."""


def decompress_xz(path: str | Path, dst, limit_bytes: int) -> int:
    """``path`` (xz) decompressed into the open binary file ``dst``, at most ``limit_bytes``; the bytes written.
    Raises :class:`DecompressError` (one line) on a damaged or truncated archive, a read error, or the limit."""
    written = 0
    try:
        with lzma.open(path) as src:
            while chunk := src.read(1 << 22):
                written += len(chunk)
                if written > limit_bytes:
                    raise DecompressError(f"decompresses to more than {limit_bytes >> 30} GiB; decompress it "
                                          "yourself (`xz -dk`) and pass the result")
                dst.write(chunk)
        dst.flush()
    except (lzma.LZMAError, EOFError) as e:
        raise DecompressError(f"cannot decompress ({e}): the archive is damaged or truncated") from None
    except OSError as e:
        raise DecompressError(f"cannot decompress ({e.strerror or e})") from None
    return written
