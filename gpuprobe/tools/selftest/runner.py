"""Runs selftest checks, each in its own process with its own time budget, and records every outcome.

A check's process is started with ``python -m gpuprobe.tools.selftest.child`` in a new process session
(:func:`gpuprobe.system.children.start_child`: it gets SIGTERM when this process dies), its output kept
in ``checks/<name>/output.txt``. A check that raises, crashes (segfault, abort) or is killed is recorded
as failed and the run goes on; one still running at its own budget (plus a few seconds for the
interpreter to start) is stopped and recorded as failed, "over its own budget".

Scheduling never lies: a check starts only when its estimate (:meth:`Check.estimate`, for the GPU
at hand) fits in what is left of the run's total budget; otherwise it is skipped, "not enough budget
left (needs ~N s, M s left)". A check that was started and is still running when the run's budget
runs out is stopped and recorded as skipped with that reason, never as failed: the run's budget is
not the check's claim. Likewise a check stopped because the run was stopped from outside (SIGTERM from
a watchdog or a batch system, Ctrl-C) is skipped with that reason: no verdict either way. Stopping a
check sends SIGTERM to its whole process tree, which the check turns into its clean-up
(:mod:`gpuprobe.tools.selftest.child`), and SIGKILL :data:`STOP_GRACE_S` later to what is left.

Without ``gpu=True``, or on a machine without CUDA, every GPU check is skipped with the reason; an
expected check nobody has written yet is skipped, "not built". The evidence archive is written before
any check that could run past the run's end, and at the end; a stop signal that arrives while it is
being written waits until it is complete (:func:`install_stop_handlers`), so a stopped run always leaves
a whole ``evidence.tar.gz`` and its summaries (see :mod:`gpuprobe.tools.selftest.bundle`).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from gpuprobe import __version__
from gpuprobe.errors import UserError
from gpuprobe.system.children import end_tree, start_child
from gpuprobe.tools.selftest import registry
from gpuprobe.tools.selftest.bundle import format_figures, write_bundle, write_summary
from gpuprobe.tools.selftest.counters import classify
from gpuprobe.tools.selftest.registry import Check

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
#: The run's total: what ``scripts/device_selftest.sh`` gives the selftest in a 7-minute slot (420 s of
#: wall time, less about 4 s of install and its 30 s end margin for stopping and copying out).
DEFAULT_BUDGET_S = 386.0
#: Seconds a check's process gets on top of its budget to start Python and import its module.
STARTUP_GRACE_S = 10.0
#: Seconds a stopped check gets between SIGTERM and SIGKILL for its clean-up (an MPS daemon's quit takes
#: about 2 s). With the evidence archive already written, a run stopped at its deadline ends within
#: about this plus a few seconds of summary writing: ``scripts/device_selftest.sh`` sends its own
#: SIGTERM no sooner than :data:`WATCHDOG_AFTER_DEADLINE_S` after the deadline.
STOP_GRACE_S = 5.0
#: The least time between the run's deadline and a watchdog's SIGTERM (the script keeps to it).
WATCHDOG_AFTER_DEADLINE_S = 15.0
#: Exit status of ``selftest --gpu`` when GPU checks were asked for but none got a verdict (no usable GPU).
EXIT_NO_GPU_VERDICT = 3

#: Checks modules whose file name differs from the owner name used in ``registry.EXPECTED``.
_MODULE_OWNER = {"nodes": "gpu_nodes"}


@dataclass
class CheckResult:
    name: str
    status: str
    seconds: float = 0.0
    reason: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    gpu: bool | None = None
    description: str = ""
    estimate_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2), "reason": self.reason,
                "figures": self.figures, "owner": self.owner, "gpu": self.gpu, "description": self.description,
                "estimate_s": self.estimate_s}


@dataclass
class SelftestRun:
    out_dir: Path
    started: str
    budget_s: float
    gpu_requested: bool
    command: str = ""
    wall_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    interrupted: bool = False
    stop_signal: str | None = None  # SIGTERM, SIGINT... when the run was stopped from outside
    gpu_class: str | None = None  # the registry name the estimates were read for

    @property
    def gpu(self) -> str | None:
        return self.environment.get("gpu")

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, SKIPPED)}

    def result(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def gpu_verdicts(self) -> int:
        """GPU checks that passed or failed (a skip is no verdict)."""
        return sum(c.gpu is True and c.status in (PASSED, FAILED) for c in self.checks)

    def no_gpu_verdict(self) -> str | None:
        """Why a run asked for GPU checks holds no verdict on the GPU (None when it holds one, or when no
        GPU check was asked for): the doctor found no usable GPU, or every GPU check was skipped."""
        asked = [c for c in self.checks if c.gpu is True]
        if not self.gpu_requested or not asked:
            return None
        if not _cuda_in(self.environment):
            return f"the doctor found no usable GPU: {_cuda_reason(self.environment)}"
        if not self.gpu_verdicts():
            return f"none of the {len(asked)} GPU checks got a verdict (every one was skipped)"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "started": self.started, "wall_s": round(self.wall_s, 2),
                "budget_s": self.budget_s, "gpu_class": self.gpu_class, "gpu_requested": self.gpu_requested,
                "interrupted": self.interrupted, "stop_signal": self.stop_signal,
                "gpuprobe": __version__, "command": self.command, "counts": self.counts(),
                "gpu_verdicts": self.gpu_verdicts(), "no_gpu_verdict": self.no_gpu_verdict(),
                "versions": versions_of(self.environment),
                "environment": self.environment, "checks": [c.to_dict() for c in self.checks]}


class RunStopped(KeyboardInterrupt):
    """The run was stopped from outside: ``signal_name`` is SIGTERM, SIGINT (Ctrl-C) or SIGHUP."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


class _Interrupted(Exception):
    def __init__(self, result: CheckResult, signal_name: str):
        super().__init__(result.reason)
        self.result = result
        self.signal_name = signal_name


# --------------------------------------------------------------------------------------------------
# stop signals


_STOP = {"depth": 0, "pending": None}


def _on_stop_signal(signum, frame) -> None:  # noqa: ARG001
    name = signal.Signals(signum).name
    if _STOP["depth"]:  # inside a section that must finish (the evidence archive): stop right after it
        _STOP["pending"] = _STOP["pending"] or name
        return
    raise RunStopped(name)


def install_stop_handlers() -> None:
    """SIGTERM, SIGHUP and SIGINT stop the run: the check in flight is stopped (skipped, with the signal
    named), the summary of what ran and the evidence archive are written. A signal that comes while the
    archive or the summaries are being written takes effect once they are complete. SIGINT is caught
    even where the parent left it ignored (a background job of a non-interactive shell)."""
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, _on_stop_signal)
    except ValueError:  # not the main thread (a test calling the CLI from a worker thread)
        pass


def _signal_name(stop: BaseException) -> str:
    return getattr(stop, "signal_name", None) or "SIGINT"


@contextlib.contextmanager
def _finish_first(stop_after: bool = True):
    """A section a stop signal does not cut: one that arrives inside it is raised at its end
    (``stop_after``), or left for the caller to read (:func:`_pending_stop`)."""
    _STOP["depth"] += 1
    try:
        yield
    finally:
        _STOP["depth"] -= 1
        if stop_after and not _STOP["depth"] and _STOP["pending"]:
            name, _STOP["pending"] = _STOP["pending"], None
            raise RunStopped(name)


def _pending_stop() -> str | None:
    name, _STOP["pending"] = _STOP["pending"], None
    return name


# --------------------------------------------------------------------------------------------------
# which checks


def discover_checks() -> tuple[dict[str, Check | None], dict[str, str]]:
    """Every known check by name (expected ones first, unbuilt ones as None) and, by module, the
    checks modules that failed to import (a broken module must not stop the others)."""
    errors = registry.discover()
    return registry.registered_checks(), errors


def run_order(names: list[str]) -> list[str]:
    """``names`` in the registry's :data:`~gpuprobe.tools.selftest.registry.RUN_ORDER`; the names it does
    not list after them in their given order, the :data:`~gpuprobe.tools.selftest.registry.EXTRA` ones last."""
    rank = {n: i for i, n in enumerate(registry.RUN_ORDER)}
    extra = {n: len(rank) + 1 + i for i, n in enumerate(registry.EXTRA)}
    return sorted(names, key=lambda n: (rank.get(n, extra.get(n, len(rank))), names.index(n)))


#: The order of a full run (the extra checks left out).
RUN_ORDER: tuple[str, ...] = registry.RUN_ORDER


def select(known: dict[str, Check | None], names: list[str] | None) -> list[str]:
    """The checks to run, in run order (:func:`run_order`): every known one but the extra ones when
    ``names`` is empty; an unknown name is a UserError listing the known ones."""
    if not names:
        return run_order([n for n in known if n not in registry.EXTRA])
    unknown = [n for n in names if n not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown check '{unknown[0]}'{hint}; known checks: {', '.join(known)}.")
    wanted = set(names)
    return run_order([n for n in known if n in wanted])


# --------------------------------------------------------------------------------------------------
# the environment


def probe_environment(timeout_s: float = 120.0) -> dict[str, Any]:
    """A quick doctor (no counter probe) in a child process, so this process never touches CUDA."""
    cmd = [sys.executable, "-m", "gpuprobe", "doctor", "--json", "--quick"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if p.returncode == 0:
            return json.loads(p.stdout)
        err = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout_s:.0f} s"
    except (OSError, ValueError) as e:
        err = str(e)
    return {"error": f"`gpuprobe doctor` failed: {err}", "gpu": None, "items": []}


def _doctor_json(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "checks" / "doctor" / "doctor.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _environment(out_dir: Path) -> dict[str, Any]:
    """The doctor check's full report when it ran in this run, else a quick doctor now."""
    return _doctor_json(out_dir) or probe_environment()


def _cuda_in(environment: dict[str, Any]) -> bool:
    return any(i.get("name") == "cuda" and i.get("status") == "ok" for i in environment.get("items", []))


def gpu_class_of(environment: dict[str, Any]) -> str | None:
    """The registry name of the doctor's GPU (``h200``), the key of the checks' estimates; None when
    there is no GPU or the registry does not know it."""
    item = next((i for i in environment.get("items", []) if i.get("name") == "gpu"), None)
    return (item or {}).get("data", {}).get("registry") if item and item.get("status") == "ok" else None


def _cuda_reason(environment: dict[str, Any]) -> str:
    item = next((i for i in environment.get("items", []) if i.get("name") == "cuda"), None)
    why = item.get("detail") if item else environment.get("error", "the doctor could not tell")
    return f"no CUDA GPU here ({why})"


def versions_of(environment: dict[str, Any]) -> dict[str, Any]:
    """The run's runtime and versions, each as the doctor measured it (None where it found none): kernel
    release and runtime (gVisor, Firecracker), driver, GPU, Python, torch, triton, ncu, and whether ncu
    read a counter (``counters``: ok | refused | failing | not probed | no ncu | no GPU)."""
    items = {i.get("name"): i for i in environment.get("items", []) if isinstance(i, dict)}

    def data(name: str, key: str) -> Any:
        item = items.get(name)
        return (item.get("data") or {}).get(key) if item and item.get("status") == "ok" else None

    kernel = items.get("kernel") or {}
    return {
        "kernel_release": (kernel.get("data") or {}).get("release"),
        "runtime": (kernel.get("data") or {}).get("runtime"),
        "driver": (items.get("driver", {}).get("data") or {}).get("driver"),
        "driver_cuda": (items.get("driver", {}).get("data") or {}).get("driver_cuda"),
        "gpu": data("gpu", "name"),
        "python": data("python", "version") or environment.get("python"),
        "torch": data("torch", "version"),
        "torch_cuda": (items.get("driver", {}).get("data") or {}).get("torch_cuda"),
        "triton": data("triton", "version"),
        "ncu": data("ncu", "version"),
        "counters": counters_state(items.get("counter_permission")),
    }


def counters_state(item: dict[str, Any] | None) -> str:
    """Whether ncu read a hardware counter in this run's probe, in one word or two."""
    if not item:
        return "not probed"
    data = item.get("data") or {}
    if item.get("status") == "ok":
        return "readable"
    if "probe_status" in data:
        return classify(data["probe_status"], data.get("probe_message", ""))
    detail = item.get("detail") or ""
    if "needs ncu" in detail:
        return "no ncu"
    if "needs a CUDA GPU" in detail:
        return "no GPU"
    return "not probed"


# --------------------------------------------------------------------------------------------------
# one check


def _stop_check(proc: subprocess.Popen) -> None:
    """Stop a check's process and everything it started (ncu, pytest, servers), its clean-up first."""
    with _finish_first(stop_after=False):  # a stop signal meanwhile is honoured before the next check
        end_tree(proc, grace_s=STOP_GRACE_S)


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _describe(signal_name: str) -> str:
    return "Ctrl-C" if signal_name == "SIGINT" else signal_name


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_check(chk: Check, out_dir: Path, *, gpu: bool, deadline_s: float, options: dict[str, Any],
              total_budget_binds: bool = False, estimate_s: float | None = None) -> CheckResult:
    """Run ``chk`` in its own process with evidence in ``out_dir/checks/<name>``; stop it at ``deadline_s``.

    The check's ``ctx.budget_s`` is its own budget, or less when the run's total leaves less. Stopped
    at its own budget it has failed; stopped because the run's total ran out (``total_budget_binds``)
    it is skipped: no verdict either way."""
    check_dir = out_dir / "checks" / chk.name
    check_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".runner"
    work.mkdir(exist_ok=True)
    request_path, result_path = work / f"{chk.name}.request.json", work / f"{chk.name}.result.json"
    result_path.unlink(missing_ok=True)
    func = chk.func
    request = {"name": chk.name, "module": func.__module__, "function": func.__qualname__,
               "file": getattr(sys.modules.get(func.__module__), "__file__", None),
               "out_dir": str(check_dir.resolve()), "run_dir": str(out_dir.resolve()), "gpu": gpu,
               "budget_s": min(chk.budget_s, deadline_s), "options": options, "result": str(result_path.resolve())}
    request_path.write_text(json.dumps(request, default=str))
    base = CheckResult(chk.name, FAILED, owner=chk.owner, gpu=chk.gpu, description=chk.description,
                       estimate_s=estimate_s)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    with open(check_dir / "output.txt", "ab") as log:
        proc = start_child([sys.executable, "-m", "gpuprobe.tools.selftest.child", str(request_path.resolve())],
                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            proc.wait(timeout=max(deadline_s, 0.1))
        except subprocess.TimeoutExpired:
            _stop_check(proc)
            base.seconds = time.monotonic() - t0
            if total_budget_binds:
                base.status = SKIPPED
                base.reason = (f"not finished: the run's budget ran out after {base.seconds:.0f} s "
                               f"(estimated ~{estimate_s or chk.budget_s:.0f} s; its own budget {chk.budget_s:g} s)")
            else:
                base.reason = f"over its own budget: stopped after {base.seconds:.0f} s (budget {chk.budget_s:g} s)"
            return base
        except KeyboardInterrupt as stop:
            _stop_check(proc)
            base.seconds = time.monotonic() - t0
            name = _signal_name(stop)
            base.status = SKIPPED
            base.reason = (f"not finished: the run was stopped ({_describe(name)}) after {base.seconds:.0f} s "
                           f"(estimated ~{estimate_s or chk.budget_s:.0f} s); no verdict")
            raise _Interrupted(base, name) from None
        finally:
            if proc.poll() is None:
                _stop_check(proc)
    base.seconds = time.monotonic() - t0
    # the check's own process is done; whatever it left in its process group goes too
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if result_path.is_file():
        try:
            got = json.loads(result_path.read_text())
            base.status, base.reason, base.figures = got["status"], got.get("reason"), got.get("figures") or {}
            return base
        except (ValueError, KeyError):
            pass
    last = _last_line(check_dir / "output.txt")
    base.reason = f"crashed ({_exit_reason(proc.returncode)})" + (f": {last}" if last else "")
    return base


# --------------------------------------------------------------------------------------------------
# a run


def run_selftest(out_dir: str | Path, *, names: list[str] | None = None, gpu: bool = False,
                 budget_s: float = DEFAULT_BUDGET_S, options: dict[str, Any] | None = None,
                 progress: Callable[[str], None] | None = print, checks: dict[str, Check | None] | None = None,
                 environment: dict[str, Any] | None = None, startup_grace_s: float = STARTUP_GRACE_S,
                 command: str = "", gpu_name: str | None = None) -> SelftestRun:
    """Run the checks ``names`` (all but the extra ones when None) and write the summaries and
    evidence into ``out_dir``.

    ``checks`` replaces the registry (tests pass their own); ``environment`` replaces the doctor's
    (a dict as ``gpuprobe doctor --json`` prints); ``gpu_name`` (a registry name) picks the estimates,
    else the doctor's GPU does. Returns the run; ``run.interrupted`` (and ``run.stop_signal``) when it was
    stopped from outside.
    """
    if not budget_s > 0:
        raise UserError(f"the total budget must be a positive number of seconds, got {budget_s}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        try:
            if progress:
                progress(line)
        except (OSError, ValueError):  # a closed pipe or console must not stop the run
            pass

    import_errors: dict[str, str] = {}
    if checks is None:
        checks, import_errors = discover_checks()
    plan = select(checks, names)
    t0 = time.monotonic()
    run = SelftestRun(out_dir=out_dir, started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      budget_s=float(budget_s), gpu_requested=gpu, command=command)
    env_known = environment is not None
    run.environment = environment if environment is not None else {}
    bundled = 0  # results in the evidence archive last written
    try:
        if not names:  # a checks module that does not import and owns no expected check: say so once
            owners = set(registry.EXPECTED.values())
            for module, error in import_errors.items():
                if _MODULE_OWNER.get(module, module) not in owners:
                    run.checks.append(CheckResult(f"checks.{module}", FAILED, owner=module,
                                                  reason=f"checks module does not import: {error}"))
                    say(_progress_line(0, len(plan), run.checks[-1]))
        total = len(plan)
        for index, name in enumerate(plan, 1):
            pending = _pending_stop()
            if pending:
                raise RunStopped(pending)
            chk = checks[name]
            if gpu and not env_known and chk is not None and chk.gpu:  # is there CUDA to run them on?
                run.environment, env_known = _environment(out_dir), True
            if not env_known and _doctor_json(out_dir) is not None:  # the doctor check ran: its GPU
                run.environment, env_known = _environment(out_dir), True
            run.gpu_class = gpu_name or gpu_class_of(run.environment)
            remaining = budget_s - (time.monotonic() - t0)
            estimate = chk.estimate(run.gpu_class) if chk is not None else None
            result = _pre_skip(name, chk, gpu=gpu, cuda=_cuda_in(run.environment), remaining=remaining,
                               estimate=estimate, environment=run.environment, import_errors=import_errors)
            if result is None:
                own = chk.budget_s + startup_grace_s
                if own > remaining and len(run.checks) > bundled:
                    # this check may still run when the run's time is up: the evidence so far is kept first
                    run.wall_s = time.monotonic() - t0
                    _write_bundle(run)
                    bundled = len(run.checks)
                    remaining = budget_s - (time.monotonic() - t0)
                if progress and sys.stdout.isatty():
                    say(f"[{index:>{len(str(total))}}/{total}] {name} ... (estimate ~{estimate:.0f} s, "
                        f"budget {chk.budget_s:g} s)")
                result = run_check(chk, out_dir, gpu=gpu, deadline_s=min(own, remaining),
                                   options=dict(options or {}), total_budget_binds=remaining < own,
                                   estimate_s=estimate)
            result.estimate_s = estimate
            run.checks.append(result)
            say(_progress_line(index, total, result))
            run.wall_s = time.monotonic() - t0
            with _finish_first(stop_after=False):
                write_summary(run)
    except _Interrupted as stop:
        run.checks.append(stop.result)
        say(_progress_line(plan.index(stop.result.name) + 1, len(plan), stop.result))
        run.interrupted, run.stop_signal = True, stop.signal_name
    except KeyboardInterrupt as stop:
        run.interrupted, run.stop_signal = True, _signal_name(stop)
    with _finish_first(stop_after=False):  # from here on, a stop signal only adds its name
        if run.interrupted:
            done = {c.name for c in run.checks}
            for name in [n for n in plan if n not in done]:
                chk = checks[name]
                run.checks.append(_skipped(name, chk, f"not run: the run was stopped ({_describe(run.stop_signal)})"))
        if _doctor_json(out_dir) is not None or not env_known:
            run.environment = _environment(out_dir)
        shutil.rmtree(out_dir / ".runner", ignore_errors=True)
        run.wall_s = time.monotonic() - t0
        _write_bundle(run)
    late = _pending_stop()
    if late and not run.interrupted:  # stopped while the last summaries were written: all of it is there
        run.interrupted, run.stop_signal = True, late
        with _finish_first(stop_after=False):
            write_summary(run, _last_evidence(out_dir))
    return run


def _write_bundle(run: SelftestRun) -> None:
    with _finish_first(stop_after=False):
        write_bundle(run)


def _last_evidence(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / "summary.json").read_text()).get("evidence")
    except (OSError, ValueError):
        return None


def _skipped(name: str, chk: Check | None, reason: str) -> CheckResult:
    if chk is None:
        return CheckResult(name, SKIPPED, reason=reason, owner=registry.EXPECTED.get(name))
    return CheckResult(name, SKIPPED, reason=reason, owner=chk.owner, gpu=chk.gpu, description=chk.description)


def budget_reason(estimate_s: float, remaining_s: float) -> str:
    """Why a check was not started: its estimate does not fit in what is left."""
    return f"not enough budget left (needs ~{estimate_s:.0f} s, {max(0.0, remaining_s):.0f} s left)"


def _pre_skip(name: str, chk: Check | None, *, gpu: bool, cuda: bool, remaining: float, estimate: float | None,
              environment: dict[str, Any], import_errors: dict[str, str]) -> CheckResult | None:
    """The result of a check that is not started, or None to start it."""
    if chk is None:
        owner = registry.EXPECTED.get(name)
        broken = [m for m in import_errors if _MODULE_OWNER.get(m, m) == owner]
        if broken:
            return CheckResult(name, FAILED, owner=owner, reason=f"checks module gpuprobe.tools.selftest.checks."
                               f"{broken[0]} does not import: {import_errors[broken[0]]}")
        return _skipped(name, None, "not built")
    if chk.gpu and not gpu:
        return _skipped(name, chk, "a GPU check: run `gpuprobe selftest --gpu` on a CUDA machine")
    if chk.gpu and not cuda:
        return _skipped(name, chk, _cuda_reason(environment))
    if estimate is not None and estimate > remaining:
        return _skipped(name, chk, budget_reason(estimate, remaining))
    return None


def _progress_line(index: int, total: int, r: CheckResult) -> str:
    tail = r.reason if r.status != PASSED else format_figures(r.figures, limit=90)
    if r.status == FAILED and r.figures:
        tail = f"{r.reason} [{format_figures(r.figures, limit=60)}]"
    return f"[{index:>{len(str(total))}}/{total}] {r.status:<7} {r.seconds:6.1f} s  {r.name}" + (f"  {tail}" if tail else "")
