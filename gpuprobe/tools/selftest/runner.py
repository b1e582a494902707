"""Runs selftest checks, each in its own process with its own time budget, and records every outcome.

A check's process is started with ``python -m gpuprobe.tools.selftest.child`` in a new process session, its
output kept in ``checks/<name>/output.txt``. A check that raises, crashes (segfault, abort) or is
killed is recorded as failed and the run goes on; one still running at its own budget (plus a few
seconds for the interpreter to start) is stopped and recorded as failed, "over its own budget".

Scheduling never lies: a check starts only when its estimate (:meth:`Check.estimate`, for the GPU
at hand) fits in what is left of the run's total budget; otherwise it is skipped, "not enough budget
left (needs ~N s, M s left)". A check that was started and is still running when the run's budget
runs out is stopped and recorded as skipped with that reason, never as failed: the run's budget is
not the check's claim. Without ``gpu=True``, or on a machine without CUDA, every GPU check is
skipped with the reason; an expected check nobody has written yet is skipped, "not built". Ctrl-C
stops the check in flight, and the summary of what ran is still written
(see :mod:`gpuprobe.tools.selftest.bundle`).
"""
from __future__ import annotations

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

from gpuprobe.errors import UserError
from gpuprobe.tools.selftest import registry
from gpuprobe.tools.selftest.bundle import format_figures, write_bundle, write_summary
from gpuprobe.tools.selftest.registry import Check

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
#: The run's total: one 7-minute run on a GPU node's short slot.
DEFAULT_BUDGET_S = 420.0
#: Seconds a check's process gets on top of its budget to start Python and import its module.
STARTUP_GRACE_S = 10.0

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
    gpu_class: str | None = None  # the registry name the estimates were read for

    @property
    def gpu(self) -> str | None:
        return self.environment.get("gpu")

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, SKIPPED)}

    def result(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        from gpuprobe import __version__

        return {"gpu": self.gpu, "started": self.started, "wall_s": round(self.wall_s, 2),
                "budget_s": self.budget_s, "gpu_class": self.gpu_class, "gpu_requested": self.gpu_requested,
                "interrupted": self.interrupted,
                "gpuprobe": __version__, "command": self.command, "counts": self.counts(),
                "environment": self.environment, "checks": [c.to_dict() for c in self.checks]}


class _Interrupted(Exception):
    def __init__(self, result: CheckResult):
        super().__init__(result.reason)
        self.result = result


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


# --------------------------------------------------------------------------------------------------
# one check


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), also those that started their own session."""
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
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(proc: subprocess.Popen, pids: list[int], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop a check's process, its process group and every process it started (ncu, pytest, servers)."""
    pids = _descendants(proc.pid)
    _signal_all(proc, pids, signal.SIGTERM)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
    _signal_all(proc, pids + _descendants(proc.pid), signal.SIGKILL)
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pass


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


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
        proc = subprocess.Popen([sys.executable, "-m", "gpuprobe.tools.selftest.child", str(request_path.resolve())],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        try:
            proc.wait(timeout=max(deadline_s, 0.1))
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            base.seconds = time.monotonic() - t0
            if total_budget_binds:
                base.status = SKIPPED
                base.reason = (f"not finished: the run's budget ran out after {base.seconds:.0f} s "
                               f"(estimated ~{estimate_s or chk.budget_s:.0f} s; its own budget {chk.budget_s:g} s)")
            else:
                base.reason = f"over its own budget: stopped after {base.seconds:.0f} s (budget {chk.budget_s:g} s)"
            return base
        except KeyboardInterrupt:
            _kill_tree(proc)
            base.seconds = time.monotonic() - t0
            base.reason = f"interrupted (Ctrl-C) after {base.seconds:.0f} s"
            raise _Interrupted(base) from None
        finally:
            if proc.poll() is None:
                _kill_tree(proc)
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
    else the doctor's GPU does. Returns the run; ``run.interrupted`` after Ctrl-C.
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
                if progress and sys.stdout.isatty():
                    say(f"[{index:>{len(str(total))}}/{total}] {name} ... (estimate ~{estimate:.0f} s, "
                        f"budget {chk.budget_s:g} s)")
                own = chk.budget_s + startup_grace_s
                result = run_check(chk, out_dir, gpu=gpu, deadline_s=min(own, remaining),
                                   options=dict(options or {}), total_budget_binds=remaining < own,
                                   estimate_s=estimate)
            result.estimate_s = estimate
            run.checks.append(result)
            say(_progress_line(index, total, result))
            run.wall_s = time.monotonic() - t0
            write_summary(run)
    except _Interrupted as stop:
        run.checks.append(stop.result)
        say(_progress_line(plan.index(stop.result.name) + 1, len(plan), stop.result))
        run.interrupted = True
    except KeyboardInterrupt:
        run.interrupted = True
    if run.interrupted:
        done = {c.name for c in run.checks}
        for name in [n for n in plan if n not in done]:
            chk = checks[name]
            run.checks.append(_skipped(name, chk, "not run: interrupted (Ctrl-C)"))
    if _doctor_json(out_dir) is not None or not env_known:
        run.environment = _environment(out_dir)
    shutil.rmtree(out_dir / ".runner", ignore_errors=True)
    run.wall_s = time.monotonic() - t0
    write_bundle(run)
    return run


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
