"""Find and run Nsight Compute (``ncu``): command lines from metric sets, timeouts, clear faults.

Defaults (docs/contracts.md sections 2 and 7): ``--clock-control none`` (the card's clocks are left as
they are; ``base`` locks them to base clock and must be asked for), ``--cache-control all`` (caches
flushed before each kernel: DRAM bytes are cold-cache figures; recorded in the provenance),
``--target-processes all``, ``--nvtx`` on, ``--replay-mode kernel``.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from gpuprobe.errors import GpuprobeError, NotAvailable, UserError
from gpuprobe.system.children import run_child
from gpuprobe.ncu import profile_meta_path
from gpuprobe.ncu.metrics import get_metric_set
from gpuprobe.ncu.nvtx_filter import check_expression

GET_NCU = ("Nsight Compute is not installed (no `ncu` on PATH, in $CUDA_HOME/bin, /usr/local/cuda*/bin or "
           "/opt/nvidia/nsight-compute/*). Get it with the CUDA toolkit or from "
           "https://developer.nvidia.com/nsight-compute (apt: nsight-compute-<version>), or point $PATH at it. "
           "`gpuprobe report FILE` still reads reports made elsewhere.")

PERMISSION_FIX = ("the GPU performance counters are restricted to administrators (ERR_NVGPUCTRPERM). Fix: run "
                  "as root (sudo), or let all users read them: put `options nvidia "
                  "NVreg_RestrictProfilingToAdminUsers=0` in /etc/modprobe.d/nvidia-profiling.conf and reboot "
                  "(or reload the nvidia module); in a container also start it with --cap-add=SYS_ADMIN. "
                  "See https://developer.nvidia.com/ERR_NVGPUCTRPERM")

CLOCK_CONTROLS = ("none", "base")
CACHE_CONTROLS = ("all", "none")
REPLAY_MODES = ("kernel", "application", "range", "app-range")


class NcuError(GpuprobeError):
    """ncu ran but failed; the message says why and what to do."""

    exit_code = 1


class CounterPermissionError(NcuError):
    exit_code = 2


class NoKernelsProfiled(UserError):
    """The filter matched no kernel."""


@dataclass(frozen=True)
class NcuInstall:
    path: Path
    version: str | None

    @property
    def root(self) -> Path:
        """The Nsight Compute folder (``ncu`` may sit in ``bin/`` of a CUDA toolkit, a symlink to it)."""
        real = self.path.resolve()
        return real.parent.parent if real.parent.name in ("bin", "target") else real.parent


def install_roots() -> list[Path]:
    """Nsight Compute install folders in the usual places, newest name first."""
    pats = ["/opt/nvidia/nsight-compute/*", "/usr/local/cuda*/nsight-compute*"]
    out: list[Path] = []
    for pat in pats:
        out += [Path(p) for p in sorted(glob.glob(pat), reverse=True) if Path(p).is_dir()]
    return out


def _candidates() -> list[Path]:
    cands: list[Path] = []
    w = shutil.which("ncu")
    if w:
        cands.append(Path(w))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(Path(os.environ[var]) / "bin" / "ncu")
    cands += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*/bin/ncu"), reverse=True)]
    cands += [r / "ncu" for r in install_roots()]
    return cands


_VERSION = re.compile(r"Version\s+(\d+(?:\.\d+)+)")


def parse_version(text: str) -> str | None:
    """The version in ``ncu --version`` output (``... Version 2025.3.1.0 (build ...)``)."""
    m = _VERSION.search(text or "")
    return m.group(1) if m else None


_VERSIONS: dict[tuple[str, float], str | None] = {}


def ncu_version(path: str | Path, timeout_s: float = 30) -> str | None:
    """``ncu --version`` of ``path`` (asked once per executable and modification time: it takes ~0.3 s)."""
    try:
        key = (str(Path(path).resolve()), Path(path).stat().st_mtime)
    except OSError:
        key = (str(path), 0.0)
    if key in _VERSIONS:
        return _VERSIONS[key]
    try:
        r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    _VERSIONS[key] = parse_version(r.stdout + r.stderr)
    return _VERSIONS[key]


def find_ncu() -> NcuInstall | None:
    """The first ``ncu`` found on PATH, in $CUDA_HOME/bin, /usr/local/cuda*/bin, /opt/nvidia/nsight-compute/*."""
    for c in _candidates():
        if c.is_file() and os.access(c, os.X_OK):
            return NcuInstall(c, ncu_version(c))
    return None


def require_ncu(ncu: NcuInstall | str | Path | None = None) -> NcuInstall:
    if isinstance(ncu, NcuInstall):
        return ncu
    if ncu is not None:
        p = Path(ncu)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise UserError(f"'{p}' is not an executable ncu")
        return NcuInstall(p, ncu_version(p))
    inst = find_ncu()
    if inst is None:
        raise NotAvailable(GET_NCU)
    return inst


# ---------------------------------------------------------------- command lines


@dataclass
class ProfileOptions:
    """Everything that shapes one ncu run (recorded beside the report)."""

    metric_set: str = "roofline"
    extra_metrics: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    nvtx_include: tuple[str, ...] = ()
    nvtx_exclude: tuple[str, ...] = ()
    kernel_name: str | None = None
    launch_skip: int | None = None
    launch_count: int | None = None
    replay_mode: str = "kernel"
    clock_control: str = "none"
    cache_control: str = "all"
    target_processes: str = "all"
    extra_args: tuple[str, ...] = ()


def build_command(ncu: str | Path, command: Sequence[str], out_rep: str | Path,
                  opts: ProfileOptions | None = None) -> list[str]:
    """The ncu command line that profiles ``command`` into ``out_rep`` (``.ncu-rep`` added by ncu)."""
    o = opts or ProfileOptions()
    if not command:
        raise UserError("no command to profile; put it after `--`, e.g. gpuprobe profile -- python script.py")
    if o.clock_control not in CLOCK_CONTROLS:
        raise UserError(f"--clock-control must be one of {', '.join(CLOCK_CONTROLS)}, got '{o.clock_control}'")
    if o.cache_control not in CACHE_CONTROLS:
        raise UserError(f"--cache-control must be one of {', '.join(CACHE_CONTROLS)}, got '{o.cache_control}'")
    if o.replay_mode not in REPLAY_MODES:
        raise UserError(f"--replay-mode must be one of {', '.join(REPLAY_MODES)}, got '{o.replay_mode}'")
    ms = get_metric_set(o.metric_set)
    metrics = list(dict.fromkeys(ms.metrics + tuple(o.extra_metrics)))
    rep = str(out_rep)
    if rep.endswith(".ncu-rep"):
        rep = rep[: -len(".ncu-rep")]
    cmd = [str(ncu), "--target-processes", o.target_processes, "--replay-mode", o.replay_mode,
           "--clock-control", o.clock_control, "--cache-control", o.cache_control, "--nvtx",
           "--metrics", ",".join(metrics)]
    for s in tuple(ms.sections) + tuple(o.sections):
        cmd += ["--section", s]
    for e in o.nvtx_include:
        cmd += ["--nvtx-include", check_expression(e)]
    for e in o.nvtx_exclude:
        cmd += ["--nvtx-exclude", check_expression(e)]
    if o.kernel_name:
        kn = o.kernel_name
        cmd += ["--kernel-name", kn if kn.startswith("regex:") else f"regex:{kn}"]
    if o.launch_skip is not None:
        cmd += ["--launch-skip", str(int(o.launch_skip))]
    if o.launch_count is not None:
        cmd += ["--launch-count", str(int(o.launch_count))]
    cmd += list(o.extra_args)
    cmd += ["--force-overwrite", "--export", rep]
    return cmd + list(command)


# ---------------------------------------------------------------- output classification


def is_permission_error(output: str) -> bool:
    return "ERR_NVGPUCTRPERM" in (output or "")


def no_kernels_profiled(output: str) -> bool:
    return "No kernels were profiled" in (output or "")


def tail(text: str, lines: int = 20) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


@dataclass
class ProfileResult:
    report: Path
    returncode: int
    seconds: float
    command: list[str]
    output_tail: str
    options: ProfileOptions
    ncu: NcuInstall
    meta_path: Path | None = None
    kernels: int | None = None
    extra: dict = field(default_factory=dict)


def _run(cmd: list[str], timeout_s: float | None, cwd: str | Path | None = None) -> tuple[int, str, bool]:
    """Run, returning (exit status, combined output, timed_out); the whole process group is ended on a
    timeout or Ctrl-C (:func:`gpuprobe.system.children.run_child`)."""
    r = run_child(cmd, timeout_s, cwd=cwd)
    return r.returncode, r.output, r.timed_out


def run_ncu(command: list[str], out_rep: str | Path, metric_set: str = "roofline",
            nvtx_include: list[str] | None = None, *, nvtx_exclude: list[str] | None = None,
            kernel_name: str | None = None, launch_skip: int | None = None, launch_count: int | None = None,
            replay_mode: str = "kernel", clock_control: str = "none", cache_control: str = "all",
            extra_metrics: Sequence[str] = (), extra_args: Sequence[str] = (), timeout_s: float | None = None,
            ncu: NcuInstall | str | Path | None = None,
            diagnose: Callable[..., list[tuple[str, ...]]] | None = None) -> ProfileResult:
    """Profile ``command`` under ncu into ``out_rep`` (a ``.ncu-rep``) and check the outcome.

    Writes ``<name>.gpuprobe.json`` beside the report (ncu version, options, command) so readers
    can put them in the provenance. Raises :class:`NotAvailable` without ncu,
    :class:`CounterPermissionError` (with the fix) on ERR_NVGPUCTRPERM, :class:`NoKernelsProfiled`
    (with the filter and the NVTX ranges that were seen) when nothing matched, and :class:`NcuError`
    with the exit status and output tail when the target crashed or ran past ``timeout_s``.

    ``diagnose``: when a filter matched nothing, a function ``(command, ncu, timeout_s=, launch_count=)``
    returning the NVTX stacks the program opens, named in the error
    (:func:`gpuprobe.ncu.diagnose.run_ncu_with_diagnosis` passes :func:`gpuprobe.ncu.diagnose.seen_nvtx_stacks`);
    None or False: no second run.
    """
    opts = ProfileOptions(metric_set=metric_set, extra_metrics=tuple(extra_metrics),
                          nvtx_include=tuple(nvtx_include or ()), nvtx_exclude=tuple(nvtx_exclude or ()),
                          kernel_name=kernel_name, launch_skip=launch_skip, launch_count=launch_count,
                          replay_mode=replay_mode, clock_control=clock_control, cache_control=cache_control,
                          extra_args=tuple(extra_args))
    build_command("ncu", command, "check.ncu-rep", opts)  # bad input fails before looking for ncu
    inst = require_ncu(ncu)
    out_rep = Path(out_rep)
    if out_rep.suffix != ".ncu-rep":
        out_rep = out_rep.with_name(out_rep.name + ".ncu-rep")
    out_rep.parent.mkdir(parents=True, exist_ok=True)
    cmd = build_command(inst.path, command, out_rep, opts)
    t0 = time.monotonic()
    rc, out, timed_out = _run(cmd, timeout_s)
    seconds = time.monotonic() - t0
    if is_permission_error(out):
        raise CounterPermissionError(PERMISSION_FIX)
    if timed_out:
        raise NcuError(f"the profiled command ran past --timeout {timeout_s:g} s and was stopped "
                       f"(exit status {rc}); last output:\n{tail(out)}")
    if no_kernels_profiled(out) or (rc == 0 and not out_rep.exists()):
        msg = f"no kernel matched the filter ({describe_filter(opts)})"
        if diagnose and (opts.nvtx_include or opts.nvtx_exclude):
            n = SEEN_LAUNCHES
            seen = [s for s in diagnose(command, inst, timeout_s=timeout_s, launch_count=n) if s]
            if seen:
                msg += "; NVTX push/pop stacks seen: " + "; ".join("/".join(s) + "/" for s in seen[:12])
            else:
                msg += (f"; no NVTX push/pop range was open around the first {n} kernels (the program is not "
                        "annotated, or its annotated part comes later)")
        raise NoKernelsProfiled(msg)
    if rc != 0:
        raise NcuError(f"the profiled command failed under ncu (exit status {rc}); last output:\n{tail(out)}")
    if not out_rep.exists():
        raise NcuError(f"ncu finished but wrote no report at '{out_rep}'; last output:\n{tail(out)}")
    meta = {
        "ncu": str(inst.path), "ncu_version": inst.version, "command": list(command), "ncu_command": cmd,
        "seconds": round(seconds, 3), **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
    }
    meta_path = profile_meta_path(out_rep)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return ProfileResult(out_rep, rc, seconds, cmd, tail(out), opts, inst, meta_path)


def describe_filter(opts: ProfileOptions) -> str:
    parts = [f"--nvtx-include {e}" for e in opts.nvtx_include] + [f"--nvtx-exclude {e}" for e in opts.nvtx_exclude]
    if opts.kernel_name:
        parts.append(f"--kernel-name {opts.kernel_name}")
    if opts.launch_skip is not None:
        parts.append(f"--launch-skip {opts.launch_skip}")
    if opts.launch_count is not None:
        parts.append(f"--launch-count {opts.launch_count}")
    return " ".join(parts) or "no filter"


#: Kernels a diagnosis (:func:`gpuprobe.ncu.diagnose.seen_nvtx_stacks`) looks at when a filter matched nothing.
SEEN_LAUNCHES = 200


def import_raw_csv(report: str | Path, ncu: NcuInstall | str | Path | None = None, *, base_units: bool = True,
                   timeout_s: float = 180) -> str:
    """The raw page of a ``.ncu-rep`` as CSV text: ``ncu --import R --csv --page raw [--print-units base]``.

    The reader of last resort when no ``ncu_report`` module can be loaded (no GPU needed, only ncu).
    Raises :class:`NotAvailable` without ncu and :class:`NcuError` when the import fails."""
    inst = require_ncu(ncu)
    cmd = [str(inst.path), "--import", str(report), "--csv", "--page", "raw"]
    if base_units:
        cmd += ["--print-units", "base"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise NcuError(f"`{' '.join(cmd)}` ran past {timeout_s:g} s") from None
    except OSError as e:
        raise NcuError(f"could not start ncu: {e}") from None
    if r.returncode != 0 or not r.stdout.strip():
        raise NcuError(f"`{' '.join(cmd)}` failed (exit status {r.returncode}); last output:\n"
                       f"{tail(r.stdout + r.stderr, 8)}")
    return r.stdout


# ---------------------------------------------------------------- counter permission


def _driver_restricts_profiling() -> bool | None:
    """``RmProfilingAdminOnly`` from the driver's parameters (None when unreadable)."""
    try:
        text = Path("/proc/driver/nvidia/params").read_text()
    except OSError:
        return None
    m = re.search(r"RmProfilingAdminOnly:\s*(\d+)", text)
    return None if not m else m.group(1) != "0"


TEST_PROGRAM = ("import torch; x = torch.ones(1024, device='cuda'); y = x * 2; torch.cuda.synchronize(); "
                "print('ok', float(y.sum()))")


#: Output that means the node refuses counters (not a bug of gpuprobe or of the program profiled).
REFUSAL_MARKERS = ("ERR_NVGPUCTRPERM", "LibraryNotLoaded", "restricted to administrators",
                   "RmProfilingAdminOnly")



def marker_line(output: str) -> str | None:
    """The first line of ``output`` (all of it) that says the node refuses counters, or None."""
    return next((ln.strip() for ln in (output or "").splitlines() if any(m in ln for m in REFUSAL_MARKERS)), None)


def probe_counters(ncu: str | os.PathLike | None = None, timeout_s: float = 60.0) -> tuple[str, str, str]:
    """Profile a tiny torch kernel for one metric: (``ok``|``missing``|``failing``, message, ncu's output).

    ``--clock-control none`` (never lock a shared card's clocks). A refusal marker anywhere in the output
    (:func:`marker_line`) is named in the message (the selftest classifies ``failing`` with such a line as a
    refusal of the node).
    """
    try:
        inst = require_ncu(ncu)
    except (NotAvailable, UserError) as e:
        return "missing", str(e), ""
    if _driver_restricts_profiling() and not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return "failing", "driver has RmProfilingAdminOnly=1 and this user is not root: " + PERMISSION_FIX, ""
    with tempfile.TemporaryDirectory(prefix="gpuprobe-perm-") as tmp:
        rep = Path(tmp) / "perm"
        cmd = [str(inst.path), "--target-processes", "all", "--clock-control", "none", "--metrics",
               "gpu__time_duration.sum", "--launch-count", "1", "--force-overwrite", "--export", str(rep),
               sys.executable, "-c", TEST_PROGRAM]
        try:
            r = run_child(cmd, timeout_s)
        except OSError as e:
            return "failing", f"could not start ncu: {e}", ""
        out = r.output
        marker = marker_line(out)
        lines = out.rstrip().splitlines()
        at = next((i for i, ln in enumerate(lines) if marker and ln.strip() == marker), None)
        where = f" (line {at + 1} of {len(lines)})" if at is not None else ""
        if is_permission_error(out):
            return "failing", f"{PERMISSION_FIX}\nncu said{where}: {marker}", out
        if marker:
            return "failing", (f"ncu could not read the counters (exit status {r.returncode}); ncu said{where}:"
                             f"\n{marker}"), out
        if r.timed_out:
            return "failing", f"ncu test run exceeded {timeout_s:g} s; last output:\n{tail(out, 8)}", out
        if r.returncode != 0 or not (Path(tmp) / "perm.ncu-rep").exists():
            return "failing", (f"ncu test run failed (exit status {r.returncode}; it needs torch with CUDA); last output:"
                             f"\n{tail(out, 8)}"), out
    return "ok", f"ncu {inst.version or '?'} at {inst.path} read a GPU counter (--clock-control none)", out


def check_counter_permission(ncu: NcuInstall | str | Path | None = None, timeout_s: float = 60) -> tuple[str, str]:
    """Whether this user can read GPU counters: (``ok``|``missing``|``failing``, message with the fix).

    ``missing``: no ncu. ``failing``: counters restricted (the fix: root, or the driver option
    ``NVreg_RestrictProfilingToAdminUsers=0``) or the test run failed. ``ok``: one small torch
    kernel was profiled (:func:`probe_counters`).
    """
    status, message, _ = probe_counters(ncu, timeout_s)
    return status, message
