"""Sweeps that survive: one child process per point, ``results.jsonl`` appended per finished point, resume.

A point is a JSON-able dict of keyword arguments for a worker function named ``"module:function"``.
Each point runs in its own Python child process (``python -m gpuprobe.measure.sweep``), so an out-of-memory
error, a crash or a hang costs that point only: it is recorded with its reason and the sweep goes on.
Every finished point is appended to ``results.jsonl`` at once, one complete JSON line per point
(written with a single ``write`` and flushed to disk), so Ctrl-C or a killed sweep leaves every
finished point readable; ``resume=True`` skips points already recorded as ``ok``.

Where the child processes run is the executor's business (docs/contracts.md section 13): here, one after
another (the default, :func:`run_tasks_locally`), or as Slurm jobs (:mod:`gpuprobe.measure.executors`);
the child and its record are the same either way. :func:`run_sweeps` runs several results folders through
one executor at once (a study); :func:`run_sweep` is one folder.

Record format: ``{"point": {...}, "status": "ok"|"failed"|"oom"|"timeout", "reason": str|None,
"result": {...}|None, "seconds": float, "finished_at": ISO time}``; a retried attempt adds ``attempt``, a
Slurm job adds ``job: {executor, job_id, attempt, node[, log, log_tail]}``. Besides ``results.jsonl`` a
folder holds ``sweep_points.json`` (the points of the sweep last started, for ``--status``), ``logs/`` (one
log per point) and, while a sweep runs, ``sweep.pid`` (its claim: pid and host).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from gpuprobe.errors import UserError
from gpuprobe.system.children import process_alive, run_child

RESULTS_FILE = "results.jsonl"
#: Holds the pid of the sweep writing into a folder, while it runs.
LOCK_FILE = "sweep.pid"
#: The points of the sweep last started in a folder (what ``--status`` counts against).
POINTS_FILE = "sweep_points.json"
_OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "out of memory")


def point_key(point: dict[str, Any]) -> str:
    """A stable identity of a point (its kwargs, sorted)."""
    return json.dumps(point, sort_keys=True, default=str)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file; a truncated or corrupt line (a killed writer) is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "point" in rec and "status" in rec:
            out.append(rec)
    return out


@contextlib.contextmanager
def claim_folder(out: Path) -> Iterator[None]:
    """Hold ``out`` for this sweep: refuse it while another live sweep holds it (a second ``--resume``
    racing the first, or one that has not finished stopping), take over a stale claim, let go at the end.

    The claim names the host too: on a cluster the folder is shared, and a sweep driven from another login
    node cannot be seen from here, so its claim is refused with the way out (remove the file if it is gone)."""
    lock = out / LOCK_FILE
    here = socket.gethostname()
    try:
        parts = lock.read_text().split()
        other, host = int(parts[0]), (parts[1] if len(parts) > 1 else here)
    except (OSError, ValueError, IndexError):
        other, host = None, here
    if other is not None and host != here:
        raise UserError(f"'{out}' is in use by a sweep on {host} (pid {other}); wait for it to end, or if it is "
                        f"gone remove {lock}, then run again.")
    if other is not None and other != os.getpid() and process_alive(other):
        raise UserError(f"'{out}' is in use by a sweep that is still running (pid {other}); wait for it to end "
                        f"or stop it (kill {other}), then run again.")
    mine = f"{os.getpid()} {here}\n"
    lock.write_text(mine)
    try:
        yield
    finally:
        try:
            if lock.read_text() == mine:
                lock.unlink()
        except OSError:
            pass


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per point: its ``ok`` record when it has one, else its last one (a point that failed and
    then finished on ``--resume`` is finished, not failed). In the order points first appear."""
    best: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = point_key(rec["point"])
        if key not in best or best[key]["status"] != "ok":
            best[key] = rec
    return list(best.values())


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line, flushed to disk before returning.

    A line cut short by a killed writer is closed first, so the new record never merges into it.
    """
    line = json.dumps(record, default=str) + "\n"
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def resolve_worker(worker: str) -> Callable[..., dict[str, Any]]:
    mod, _, func = worker.partition(":")
    if not func:
        raise ValueError(f"worker must be 'module:function', got '{worker}'")
    return getattr(importlib.import_module(mod), func)


def _classify_failure(text: str) -> str:
    return "oom" if any(m in text for m in _OOM_MARKERS) else "failed"


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_point_in_child(worker: str, point: dict[str, Any], timeout_s: float | None,
                       log_path: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one point in a fresh Python process; returns a record (without ``finished_at``)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpuprobe-point-") as tmp:
        args_path, res_path = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args_path.write_text(json.dumps({"worker": worker, "point": point}, default=str))
        cmd = [sys.executable, "-m", "gpuprobe.measure.sweep", str(args_path), str(res_path)]
        child = run_child(cmd, timeout_s, env={**os.environ, **(env or {})})
        out, rc = child.output, child.returncode
        if child.timed_out:
            if log_path:
                log_path.write_text(out)
            return {"point": point, "status": "timeout", "reason": f"over the {timeout_s:g} s limit",
                    "result": None, "seconds": time.perf_counter() - t0}
        if log_path:
            log_path.write_text(out)
        seconds = time.perf_counter() - t0
        if rc == 0 and res_path.exists():
            payload = json.loads(res_path.read_text())
            if payload.get("ok"):
                return {"point": point, "status": "ok", "reason": None, "result": payload["result"],
                        "seconds": seconds}
            err = payload.get("error", "")
            return {"point": point, "status": _classify_failure(err), "reason": _tail(err, 3),
                    "result": None, "seconds": seconds}
        return {"point": point, "status": _classify_failure(out),
                "reason": f"exit status {rc}: {_tail(out, 3) or 'no output'}", "result": None, "seconds": seconds}


def run_point_inline(worker: str, point: dict[str, Any]) -> dict[str, Any]:
    """Run one point in this process (for tests and debugging); exceptions become failed records."""
    t0 = time.perf_counter()
    try:
        result = resolve_worker(worker)(**point)
        return {"point": point, "status": "ok", "reason": None, "result": result, "seconds": time.perf_counter() - t0}
    except Exception as e:  # a failed point must never stop the sweep
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        return {"point": point, "status": _classify_failure(text), "reason": text, "result": None,
                "seconds": time.perf_counter() - t0}


@dataclass
class PointTask:
    """One point of a sweep as an executor sees it: the worker's kwargs, where its record goes, its limits.

    ``index``: its position in its sweep (names its log, ``logs/point{index}.log``); ``placement``: per-sweep
    settings of the executor (for Slurm: the GPU's ``partition`` or ``constraint``); ``attempt``: how many times
    it has run in this sweep, this run included.
    """

    point: dict[str, Any]
    index: int
    out: Path
    worker: str
    timeout_s: float | None = None
    env: dict[str, str] | None = None
    label: str = ""
    placement: dict[str, str] = field(default_factory=dict)
    attempt: int = 0

    @property
    def key(self) -> str:
        return point_key(self.point)

    @property
    def log_path(self) -> Path:
        return self.out / "logs" / f"point{self.index}.log"


@dataclass
class Sweep:
    """The points of one results folder and how to run them (one :func:`run_sweep`, or one folder of a study)."""

    points: list[dict[str, Any]]
    worker: str
    out: Path
    timeout_s: float | None = None
    label: Callable[[dict[str, Any]], str] | None = None
    env: dict[str, str] | None = None
    on_record: Callable[[dict[str, Any]], None] | None = None
    placement: dict[str, str] = field(default_factory=dict)
    name: str = "sweep"


class Executor(Protocol):
    """Where a sweep's points run (docs/contracts.md section 13): :mod:`gpuprobe.measure.executors`."""

    name: str
    retries: int

    def run_tasks(self, tasks: list[PointTask], sink: "RecordSink", bar: "SweepProgress") -> None:
        """Run every task, handing each finished attempt to ``sink``; on Ctrl-C stop what it started and re-raise."""


def should_retry(record: dict[str, Any], attempt: int, retries: int) -> bool:
    """Whether a finished attempt runs again: it did not finish and did not run out of memory (which would
    again), and the sweep has retries left for it (``retries`` more runs after the first)."""
    return record["status"] not in ("ok", "oom") and attempt <= retries


class SweepProgress:
    """The one live line of a sweep (80 columns): the point last started, ``done/total``, ``queued running done
    failed`` and the time left, estimated from the points finished so far. Disabled: nothing is drawn, the
    counts are still kept."""

    LABEL_WIDTH = 16

    def __init__(self, total: int, finished: int, enabled: bool = True) -> None:
        from rich.console import Console
        from rich.progress import Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("[bold]{task.description}"), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("left"),
                   TimeRemainingColumn()]
        # on stderr: stdout carries the command's requested output only (docs/contracts.md section 12)
        self.bar = Progress(*columns, disable=not enabled, transient=False, console=Console(stderr=True))
        self.counts = {"queued": total - finished, "running": 0, "done": finished, "failed": 0}
        self.task = self.bar.add_task(self._label("sweep"), total=total, completed=finished, counts=self._text())

    def _label(self, text: str) -> str:
        w = self.LABEL_WIDTH
        return text if len(text) <= w else text[:w - 1] + "…"

    def _text(self) -> str:
        c = self.counts
        return f"queued {c['queued']} running {c['running']} done {c['done']} failed {c['failed']}"

    def update(self, description: str | None = None, **counts: int) -> None:
        self.counts.update(counts)
        kw = {"description": self._label(description)} if description else {}
        self.bar.update(self.task, completed=self.counts["done"] + self.counts["failed"], counts=self._text(), **kw)

    def print(self, text: str) -> None:
        """A message above the live line (to stderr when the line is off)."""
        if self.bar.disable:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.console.print(text, markup=False, highlight=False)

    def __enter__(self) -> "SweepProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


class RecordSink:
    """Where finished attempts go: appended to their folder's ``results.jsonl`` (stamped ``finished_at``),
    handed to the sweep's ``on_record``, counted on the live line, failures said above it."""

    def __init__(self, sweeps: dict[Path, Sweep], bar: SweepProgress) -> None:
        self.sweeps, self.bar = sweeps, bar

    def __call__(self, task: PointTask, record: dict[str, Any], *, final: bool = True) -> None:
        record.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        append_result(task.out / RESULTS_FILE, record)
        sweep = self.sweeps.get(task.out)
        if sweep is not None and sweep.on_record:
            sweep.on_record(record)
        if record["status"] != "ok":
            again = f" (attempt {task.attempt}; running it again)" if not final else ""
            self.bar.print(f"{task.label}: {record['status']}{again}: {record['reason']}")
        if final:
            key = "done" if record["status"] == "ok" else "failed"
            self.bar.update(**{key: self.bar.counts[key] + 1})


def run_tasks_locally(tasks: list[PointTask], sink: RecordSink, bar: SweepProgress, *, isolate: bool = True,
                      retries: int = 0) -> None:
    """The local executor: one task after another on this machine, each in its own child process (``isolate``;
    else in this process, for debugging); a failed attempt runs again at once while ``retries`` allow."""
    queued = len(tasks)
    for task in tasks:
        bar.update(description=task.label, queued=queued - 1, running=1)
        queued -= 1
        while True:
            task.attempt += 1
            if isolate:
                task.log_path.parent.mkdir(exist_ok=True)
                rec = run_point_in_child(task.worker, task.point, task.timeout_s, task.log_path, task.env)
            else:
                rec = run_point_inline(task.worker, task.point)
            if task.attempt > 1:
                rec["attempt"] = task.attempt
            again = should_retry(rec, task.attempt, retries)
            bar.update(running=0 if not again else 1)
            sink(task, rec, final=not again)
            if not again:
                break


def write_points(out: Path, points: list[dict[str, Any]]) -> None:
    """The sweep's points, for ``--status`` (how many there are, which are still to run)."""
    tmp = out / (POINTS_FILE + ".tmp")
    tmp.write_text(json.dumps({"points": points}, default=str) + "\n")
    os.replace(tmp, out / POINTS_FILE)


def read_points(out: Path) -> list[dict[str, Any]] | None:
    try:
        return json.loads((Path(out) / POINTS_FILE).read_text())["points"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_sweeps(sweeps: list[Sweep], *, resume: bool = False, executor: Executor | None = None,
               progress: bool = True, isolate: bool = True) -> list[list[dict[str, Any]]]:
    """Run the points of several results folders through one executor (a study: every folder's points are
    in flight together); returns the latest records of each folder, in the order of ``sweeps``.

    Each folder is held for the run (:func:`claim_folder`); without ``resume`` its results file is started
    afresh, with it the points already ``ok`` are skipped. ``executor`` None: the local executor
    (:func:`run_tasks_locally`, no retries). Ctrl-C (or SIGTERM/SIGHUP turned into it) stops what was
    started, keeps every finished point and re-raises.
    """
    with contextlib.ExitStack() as stack:
        tasks: list[PointTask] = []
        total = 0
        for sw in sweeps:
            sw.out = Path(sw.out)
            sw.out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(claim_folder(sw.out))
            results_path = sw.out / RESULTS_FILE
            if not resume and results_path.exists():
                results_path.unlink()
            points = list(sw.points)
            write_points(sw.out, points)
            done = {point_key(r["point"]) for r in read_results(results_path) if r["status"] == "ok"}
            label = sw.label or (lambda p: ", ".join(f"{k}={v}" for k, v in p.items()))
            prefix = f"{sw.name}: " if len(sweeps) > 1 else ""
            tasks += [PointTask(point=p, index=i, out=sw.out, worker=sw.worker, timeout_s=sw.timeout_s, env=sw.env,
                                label=prefix + label(p), placement=dict(sw.placement))
                      for i, p in enumerate(points) if point_key(p) not in done]
            total += len(points)
        with SweepProgress(total, total - len(tasks), enabled=progress) as bar:
            sink = RecordSink({sw.out: sw for sw in sweeps}, bar)
            if executor is None:
                run_tasks_locally(tasks, sink, bar, isolate=isolate)
            else:
                executor.run_tasks(tasks, sink, bar)
    return [latest_records(read_results(sw.out / RESULTS_FILE)) for sw in sweeps]


def run_sweep(points: Iterable[dict[str, Any]], worker: str, out_dir: str | Path, *, resume: bool = False,
              timeout_s: float | None = None, label: Callable[[dict[str, Any]], str] | None = None,
              isolate: bool = True, progress: bool = True, env: dict[str, str] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              executor: Executor | None = None) -> list[dict[str, Any]]:
    """Run ``worker(**point)`` for every point; returns all records of ``out_dir/results.jsonl``.

    Points already recorded as ``ok`` are skipped when ``resume`` is true; without ``resume`` an
    existing results file is started afresh. Ctrl-C stops after killing the running child, and
    what finished stays in the file (the KeyboardInterrupt is re-raised for the caller). The folder is
    held while the sweep runs (:func:`claim_folder`): a second sweep into it is refused until this one ends.
    ``executor``: where the points run (None: here, one after another; see :mod:`gpuprobe.measure.executors`).
    """
    sweep = Sweep(points=list(points), worker=worker, out=Path(out_dir), timeout_s=timeout_s, label=label, env=env,
                  on_record=on_record)
    return run_sweeps([sweep], resume=resume, executor=executor, progress=progress, isolate=isolate)[0]


def _child_main(args_path: str, res_path: str) -> int:
    spec = json.loads(Path(args_path).read_text())
    try:
        result = resolve_worker(spec["worker"])(**spec["point"])
        payload = {"ok": True, "result": result}
    except BaseException as e:  # report every failure, OOM included, to the parent
        payload = {"ok": False, "error": "".join(traceback.format_exception(type(e), e, e.__traceback__))}
    Path(res_path).write_text(json.dumps(payload, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1], sys.argv[2]))
