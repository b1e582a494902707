"""Sweeps that survive: one child process per point, ``results.jsonl`` appended per finished point, resume.

A point is a JSON-able dict of keyword arguments for a worker function named ``"module:function"``.
Each point runs in its own Python child process (``python -m gpuprobe.measure.sweep``), so an out-of-memory
error, a crash or a hang costs that point only: it is recorded with its reason and the sweep goes on.
Every finished point is appended to ``results.jsonl`` at once, one complete JSON line per point
(written with a single ``write`` and flushed to disk), so Ctrl-C or a killed sweep leaves every
finished point readable; ``resume=True`` skips points already recorded as ``ok``.

Record format: ``{"point": {...}, "status": "ok"|"failed"|"oom"|"timeout", "reason": str|None,
"result": {...}|None, "seconds": float, "finished_at": ISO time}``.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from gpuprobe.errors import UserError
from gpuprobe.measure.children import process_alive, run_child

RESULTS_FILE = "results.jsonl"
#: Holds the pid of the sweep writing into a folder, while it runs.
LOCK_FILE = "sweep.pid"
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
    racing the first, or one that has not finished stopping), take over a stale claim, let go at the end."""
    lock = out / LOCK_FILE
    try:
        other = int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        other = None
    if other is not None and other != os.getpid() and process_alive(other):
        raise UserError(f"'{out}' is in use by a sweep that is still running (pid {other}); wait for it to end "
                        f"or stop it (kill {other}), then run again.")
    lock.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        try:
            if lock.read_text().split()[0] == str(os.getpid()):
                lock.unlink()
        except (OSError, IndexError):
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


def run_sweep(points: Iterable[dict[str, Any]], worker: str, out_dir: str | Path, *, resume: bool = False,
              timeout_s: float | None = None, label: Callable[[dict[str, Any]], str] | None = None,
              isolate: bool = True, progress: bool = True, env: dict[str, str] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``worker(**point)`` for every point; returns all records of ``out_dir/results.jsonl``.

    Points already recorded as ``ok`` are skipped when ``resume`` is true; without ``resume`` an
    existing results file is started afresh. Ctrl-C stops after killing the running child, and
    what finished stays in the file (the KeyboardInterrupt is re-raised for the caller). The folder is
    held while the sweep runs (:func:`claim_folder`): a second sweep into it is refused until this one ends.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    with claim_folder(out):
        if not resume and results_path.exists():
            results_path.unlink()
        _sweep(points, worker, results_path, out / "logs", timeout_s, label, progress, isolate, env, on_record)
    return latest_records(read_results(results_path))


def _sweep(points, worker, results_path, logs, timeout_s, label, progress, isolate, env, on_record) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    done = {point_key(r["point"]) for r in read_results(results_path) if r["status"] == "ok"}
    points = list(points)
    todo = [p for p in points if point_key(p) not in done]
    label = label or (lambda p: ", ".join(f"{k}={v}" for k, v in p.items()))
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("sweep", total=len(points), completed=len(points) - len(todo))
        for i, point in enumerate(todo):
            bar.update(task, description=f"{label(point)}")
            if isolate:
                logs.mkdir(exist_ok=True)
                rec = run_point_in_child(worker, point, timeout_s, logs / f"point{len(points) - len(todo) + i}.log", env)
            else:
                rec = run_point_inline(worker, point)
            rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            append_result(results_path, rec)
            if on_record:
                on_record(rec)
            if rec["status"] != "ok" and progress:
                bar.console.print(f"[yellow]{label(point)}: {rec['status']}[/yellow]: {rec['reason']}")
            bar.advance(task)


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
