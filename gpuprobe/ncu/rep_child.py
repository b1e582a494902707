"""Read a binary ``.ncu-rep`` in a child process, so that no file can take the caller down.

NVIDIA's ``ncu_report`` is native code: a damaged file can make it raise anything at any call
(``TypeError`` from ``metric_by_name``...) or abort the whole process (a failed protobuf check).
:func:`read_in_child` runs ``python -m gpuprobe.ncu.rep_child IN OUT`` and takes back plain Python
data (pickled to ``OUT``); a child that dies becomes one line naming the user's file. Inside the
child, :func:`extract` guards every call into ``ncu_report`` and counts what it had to skip.

:func:`scan_blocks` checks the file's own framing without ``ncu_report``: a ``.ncu-rep`` is the
``NVR\\0`` signature, a length-prefixed file header, then blocks, each a length-prefixed block
header (a protobuf message whose field 1 is the number of sources, field 2 the number of results,
i.e. kernels, and field 5 the payload size) followed by its payload. A file that stops inside a
block was truncated; the results of its complete blocks are what it can hold.
"""
from __future__ import annotations

import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from gpuprobe.system.children import end_group, start_child

REP_MAGIC = b"NVR\x00"
DEFAULT_DOMAIN = "<default domain>"  # NVTX ranges of the default domain are named without a prefix
CHILD_TIMEOUT_S = 600.0


# ---------------------------------------------------------------- framing of the file


@dataclass(frozen=True)
class BlockScan:
    """What the framing of a ``.ncu-rep`` says: results (kernels) in complete blocks, and where it broke."""

    results: int
    blocks: int
    complete: bool
    problem: str | None = None  # why the framing is broken (None when complete)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    x = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("varint runs past its message")
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return x, i


def _varint_fields(msg: bytes) -> dict[int, int]:
    """Top-level varint fields of a protobuf message (others skipped); ValueError when malformed."""
    out: dict[int, int] = {}
    i = 0
    while i < len(msg):
        key, i = _varint(msg, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            out[field], i = _varint(msg, i)
        elif wire == 2:
            n, i = _varint(msg, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(msg):
            raise ValueError("field runs past its message")
    return out


def scan_blocks(data: bytes) -> BlockScan:
    """Walk the blocks of a ``.ncu-rep`` held in ``data``; never raises."""
    if not data.startswith(REP_MAGIC):
        return BlockScan(0, 0, False, "no NVR signature")
    size = len(data)
    i = len(REP_MAGIC)
    results = blocks = 0
    if i + 4 > size:
        return BlockScan(0, 0, False, "ends inside its file header")
    (n,) = struct.unpack_from("<I", data, i)
    i += 4 + n
    if i > size:
        return BlockScan(0, 0, False, "ends inside its file header")
    while i < size:
        if i + 4 > size:
            return BlockScan(results, blocks, False, f"ends inside block {blocks + 1} (byte {i} of {size})")
        (n,) = struct.unpack_from("<I", data, i)
        i += 4
        if i + n > size:
            return BlockScan(results, blocks, False, f"ends inside block {blocks + 1} (byte {i} of {size})")
        try:
            fields = _varint_fields(data[i:i + n])
        except ValueError:
            return BlockScan(results, blocks, False, f"block {blocks + 1} has a damaged header (byte {i})")
        i += n
        payload = fields.get(5, 0)
        if i + payload > size:
            return BlockScan(results, blocks, False,
                             f"ends inside block {blocks + 1}: {size - i} of its {payload} bytes are there")
        i += payload
        results += fields.get(2, 0)
        blocks += 1
    return BlockScan(results, blocks, True)


# ---------------------------------------------------------------- in the child


_FAILED = object()


def _call(fn: Any, *args: Any, default: Any = None) -> Any:
    try:
        return fn(*args)
    except Exception:  # ncu_report raises plain exceptions of any type on damaged data
        return default


def _metric(m: Any) -> tuple[Any, str] | None:
    """(value, unit as ncu gives it) of one metric, or None when the module cannot give it."""
    unit = _call(m.unit, default="") or ""
    kind = _call(m.kind)
    if kind is not None and kind == getattr(m, "ValueKind_STRING", object()):
        v = _call(m.as_string, default=_FAILED)
        if v is _FAILED:
            return None
        return (v, "") if isinstance(v, str) else (None, "")
    v = _call(m.value)
    if v is None:
        return math.nan, str(unit)
    if isinstance(v, str):
        return v, ""
    try:
        return float(v), str(unit)
    except (TypeError, ValueError, OverflowError):
        return str(v), ""


def _nvtx(action: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    st = _call(action.nvtx_state)
    if st is None:
        return (), ()
    stack: list[str] = []
    ranges: list[str] = []
    for dom_id in sorted(_call(st.domains, default=()) or (), key=lambda d: (d != 0, d)):
        dom = _call(st.domain_by_id, dom_id)
        if dom is None:
            continue
        dname = _call(dom.name)
        prefix = "" if dname in (DEFAULT_DOMAIN, "", None) else f"{dname}@"
        stack += [prefix + str(n) for n in (_call(dom.push_pop_ranges, default=()) or ())]
        ranges += [prefix + str(n) for n in (_call(dom.start_end_ranges, default=()) or ())]
    return tuple(stack), tuple(ranges)


def _module(module_file: str | None) -> Any:
    """The ``ncu_report`` the caller chose (by its file), else the one :func:`find_ncu_report` finds."""
    from gpuprobe.ncu.ncu_report_loader import _load_from, find_ncu_report

    mod = find_ncu_report()
    if not module_file:
        return mod
    have = getattr(mod, "__file__", None) if mod is not None else None
    if have and os.path.realpath(have) == os.path.realpath(module_file):
        return mod
    if not os.path.isfile(module_file):
        return None
    return _load_from(Path(module_file))


def extract(path: str, module_file: str | None = None) -> dict[str, Any]:
    """Everything gpuprobe reads from a ``.ncu-rep``, as plain Python data (run this in the child).

    Returns ``{"kernels": [{"name", "nvtx_stack", "nvtx_ranges", "metrics": {name: (value, unit)}}],
    "skipped_metrics": n, "skipped_kernels": n, "reader": where ncu_report came from}``, or
    ``{"error": text, "unavailable": bool}`` when the module is missing or cannot open the file.
    """
    try:
        mod = _module(module_file)
    except Exception as e:  # a broken install
        return {"error": f"ncu_report ({module_file}) does not load: {e}", "unavailable": True}
    if mod is None:
        return {"error": f"the ncu_report module ({module_file or 'ncu_report'}) is missing", "unavailable": True}
    reader = f"ncu_report ({getattr(mod, '__file__', None) or 'module'})"
    try:
        ctx = mod.load_report(path)
    except FileNotFoundError as e:  # the file exists: the module's native library does not
        return {"error": f"ncu_report ({reader}) cannot find its library: {e}", "unavailable": True}
    except Exception as e:
        return {"error": f"ncu_report cannot load it: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
                "unavailable": False}
    kernels: list[dict[str, Any]] = []
    skipped_metrics = skipped_kernels = 0
    for ri in range(_call(ctx.num_ranges, default=0) or 0):
        rng = _call(ctx.range_by_idx, ri)
        if rng is None:
            skipped_kernels += 1
            continue
        for ai in range(_call(rng.num_actions, default=0) or 0):
            a = _call(rng.action_by_idx, ai)
            if a is None:
                skipped_kernels += 1
                continue
            demangled = getattr(a, "NameBase_DEMANGLED", None)
            name = _call(a.name, demangled) if demangled is not None else None
            name = name if isinstance(name, str) and name else _call(a.name, default="")
            stack, ranges = _nvtx(a)
            metrics: dict[str, tuple[Any, str]] = {}
            for mname in _call(a.metric_names, default=()) or ():
                m = _call(a.metric_by_name, mname, default=_FAILED)
                if m is None:  # listed but holding no value: normal in real reports
                    continue
                got = _metric(m) if m is not _FAILED else None
                if got is None:
                    skipped_metrics += 1
                    continue
                metrics[str(mname)] = got
            kernels.append({"name": str(name or ""), "nvtx_stack": stack, "nvtx_ranges": ranges, "metrics": metrics})
    return {"kernels": kernels, "skipped_metrics": skipped_metrics, "skipped_kernels": skipped_kernels,
            "reader": reader}


def _no_core_dumps() -> None:
    """An abort inside ncu_report should leave no core file in the user's folder."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed
        pass


def main(argv: list[str]) -> int:
    """``SRC OUT [MODULE_FILE]``: OUT is a path or ``fd:N`` (a file descriptor the parent passed)."""
    _no_core_dumps()
    src, out, module_file = (argv + [""])[:3]
    result = extract(src, module_file or None)
    if out.startswith("fd:"):
        with os.fdopen(int(out[3:]), "wb", closefd=False) as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        with open(out, "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


# ---------------------------------------------------------------- in the caller


class ChildFailed(Exception):
    """The child died (a native abort or a signal) or ran past its time; ``str()`` says which."""


def read_in_child(plain: Path | str, module_file: str | None = None, timeout_s: float = CHILD_TIMEOUT_S,
                  pass_fds: tuple[int, ...] = ()) -> dict[str, Any]:
    """:func:`extract` of ``plain`` run in a fresh interpreter (with the ``ncu_report`` at ``module_file``
    when given); :class:`ChildFailed` when it dies.

    The child dies with this process (``PR_SET_PDEATHSIG``, :func:`gpuprobe.system.children.start_child`)
    and writes its result into an unnamed temporary file (``O_TMPFILE``) passed as a descriptor: a SIGKILLed
    parent leaves neither a process nor a file behind. ``pass_fds``: descriptors ``plain`` refers to
    (``/proc/self/fd/N``)."""

    with tempfile.TemporaryFile(prefix="gpuprobe-rep-") as out:
        fd = out.fileno()
        proc = start_child([sys.executable, "-m", "gpuprobe.ncu.rep_child", str(plain), f"fd:{fd}",
                            module_file or ""], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, pass_fds=(fd, *pass_fds), env=dict(os.environ))
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            end_group(proc, 2.0)
            raise ChildFailed(f"ncu_report did not finish within {timeout_s:.0f} s") from None
        except BaseException:
            end_group(proc, 2.0)
            raise
        if rc != 0:
            raise ChildFailed("ncu_report aborted")
        try:
            out.seek(0)
            return pickle.load(out)
        except Exception:  # a child that died while writing
            raise ChildFailed("ncu_report aborted") from None


if __name__ == "__main__":  # pragma: no cover - the child side, exercised through read_in_child
    sys.exit(main(sys.argv[1:]))
