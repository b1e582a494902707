"""Where a sweep's points run (docs/contracts.md section 13): ``local`` (the default) or ``slurm``.

The point is the same child process on every executor (``python -m gpuprobe.measure.sweep``, running the
worker, under ncu or nsys when its mode says so), and every finished attempt lands in the folder's
``results.jsonl`` as the same record (:mod:`gpuprobe.measure.sweep`); a Slurm record adds ``job`` (its job
id, node, attempt, log).

- :class:`LocalExecutor`: one point after another on this machine (today's behaviour).
- :class:`SlurmExecutor`: every point a Slurm job, through ``submitit``'s ``SlurmExecutor`` (chosen
  explicitly, never submitit's auto-detection): one job array per results folder, at most
  ``max_parallel`` of its tasks at a time (``sbatch --array=0-N%M``). The results folder must be on a
  filesystem the nodes share.

How a Slurm sweep survives (the folder's ``slurm/jobs.jsonl`` ledger, one JSON line per event):

- before ``sbatch``: ``submitting`` (a token, the points' keys); the array's job name is
  ``gpuprobe-<token>`` and submitit's files go to ``slurm/<token>/<job id>/``; after: ``submitted`` (the job
  ids); once a job's record is in ``results.jsonl``: ``ended``. A driver killed at any moment leaves a
  ledger from which the next ``--resume`` adopts every job still queued or running (``squeue``), takes the
  records of jobs that finished meanwhile (submitit's result files), and submits only the rest, so no point
  is lost or run twice.
- jobs are tracked by ``squeue`` and submitit's result files alone: no accounting database is needed.
  ``sacct`` is only asked why a job ended without a result, and where accounting is off that is said.
- Ctrl-C, SIGTERM or SIGHUP of the driver: ``scancel`` of every job it has in flight, saying how many.
- an attempt that fails or times out (a job that died, was killed or timed out included) is submitted again
  while ``retries`` allow; the last one is reported with the tail of its Slurm log. A preempted job is
  requeued by submitit itself (same job id; it stays in ``squeue``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.errors import UserError
from gpuprobe.measure.sweep import (
    LOCK_FILE, PointTask, RESULTS_FILE, RecordSink, SweepProgress, append_result, latest_records, point_key,
    read_results, run_point_in_child, run_tasks_locally, should_retry,
)
from gpuprobe.system.children import process_alive

EXECUTORS = ("local", "slurm")
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "sinfo")
#: The folder of a results folder that holds the job ledger and submitit's files.
SLURM_DIR = "slurm"
LEDGER_FILE = "jobs.jsonl"
JOB_PREFIX = "gpuprobe-"
#: squeue states of a job that has not started (anything else that squeue lists counts as running).
QUEUED_STATES = ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD")
LOG_TAIL_LINES = 12


# ---- local -----------------------------------------------------------------------------------------
@dataclass
class LocalExecutor:
    """Points one after another on this machine, each in its own child process (the default)."""

    retries: int = 0
    isolate: bool = True
    name: str = "local"

    def run_tasks(self, tasks: list[PointTask], sink: RecordSink, bar: SweepProgress) -> None:
        run_tasks_locally(tasks, sink, bar, isolate=self.isolate, retries=self.retries)

    def describe(self) -> str:
        return "local (one point after another on this machine)"


# ---- Slurm settings and checks ---------------------------------------------------------------------
_SLURM_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_slurm_time(text: str | int | None) -> int | None:
    """A Slurm time limit in whole minutes (seconds rounded up): ``90`` (minutes), ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``, as sbatch reads ``--time``."""
    if text is None or isinstance(text, int):
        return text
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise UserError(f"--slurm-time '{text}' is not a Slurm time limit; give minutes (90), HH:MM:SS or "
                        "D-HH:MM:SS.")
    d, a, b, c = (int(x) if x is not None else None for x in m.group("d", "a", "b", "c"))
    if d is not None:
        h, mi, sec = a, b or 0, c or 0
    elif b is None:
        h, mi, sec = 0, a, 0
    elif c is None:
        h, mi, sec = 0, a, b
    else:
        h, mi, sec = a, b, c
    minutes = (d or 0) * 1440 + h * 60 + mi + (1 if sec else 0)
    if minutes <= 0:
        raise UserError(f"--slurm-time '{text}' is no time at all; give at least one minute.")
    return minutes


@dataclass(frozen=True)
class SlurmSettings:
    """What each point's job asks Slurm for (docs/cluster.md maps each to its sbatch option).

    ``gpus_per_job``: ``--gpus-per-node`` (0: no GPU request); ``time_min``: ``--time`` (None: the point's own
    limit plus 5 minutes); ``setup``: shell lines run before the point (``module load``, ``export``);
    ``max_parallel``: tasks of one array at a time (``--array=...%N``); ``poll_s``: seconds between looks at
    ``squeue`` (default 5, or ``$GPUPROBE_SLURM_POLL_S``).
    """

    partition: str | None = None
    gpus_per_job: int = 1
    constraint: str | None = None
    time_min: int | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()
    max_parallel: int | None = None
    poll_s: float = field(default_factory=lambda: float(os.environ.get("GPUPROBE_SLURM_POLL_S", "5")))


def missing_slurm_tools() -> list[str]:
    return [t for t in SLURM_TOOLS if shutil.which(t) is None]


def slurm_partitions(timeout_s: float = 30) -> list[str]:
    """The cluster's partitions (``sinfo``), the default one without its ``*``."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"--executor slurm: sinfo did not answer ({e}); check that slurmctld is reachable from "
                        "this machine (scontrol ping).") from None
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no output"])[0]
        raise UserError(f"--executor slurm: sinfo failed ({first}); check that slurmctld is reachable from this "
                        "machine (scontrol ping).")
    return sorted({line.strip().rstrip("*") for line in out.stdout.splitlines() if line.strip()})


def check_slurm(partitions: list[str | None]) -> None:
    """Before anything is submitted: the Slurm tools and submitit are there and every partition exists."""
    missing = missing_slurm_tools()
    if missing:
        raise UserError(f"--executor slurm needs the Slurm client tools, and {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH; run on a machine that submits to "
                        "the cluster (a login node), or use --executor local.")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError("--executor slurm needs the Python package submitit; install it with: "
                        "pip install 'gpuprobe[slurm]'") from None
    wanted = sorted({p for p in partitions if p})
    if not wanted:
        return
    have = slurm_partitions()
    unknown = [p for p in wanted if p not in have]
    if unknown:
        raise UserError(f"--slurm-partition {', '.join(unknown)}: no such partition on this cluster (sinfo lists "
                        f"{', '.join(have) or 'none'}); pick one of those.")


# ---- the job ledger --------------------------------------------------------------------------------
def _append_line(path: Path, obj: dict[str, Any]) -> None:
    """One ledger line, flushed to disk (a line cut short by a killed driver is closed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    append_result(path, obj)


@dataclass
class OpenJob:
    """A job the ledger says was submitted and has not ended: its point's key, token and job id."""

    key: str
    token: str
    job_id: str
    cancelled: bool = False


class JobLedger:
    """``slurm/jobs.jsonl`` of one results folder: what was submitted, under which job ids, what ended."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / SLURM_DIR / LEDGER_FILE

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed driver
            if isinstance(ev, dict) and "event" in ev:
                out.append(ev)
        return out

    def submitting(self, token: str, keys: list[str]) -> None:
        _append_line(self.path, {"event": "submitting", "token": token, "keys": keys, "at": time.time()})

    def submitted(self, token: str, job_ids: list[str]) -> None:
        _append_line(self.path, {"event": "submitted", "token": token, "job_ids": job_ids, "at": time.time()})

    def ended(self, job_id: str, status: str) -> None:
        _append_line(self.path, {"event": "ended", "job_id": job_id, "status": status, "at": time.time()})

    def cancelled(self, job_ids: list[str]) -> None:
        _append_line(self.path, {"event": "cancelled", "job_ids": job_ids, "at": time.time()})

    def open_jobs(self) -> tuple[list[OpenJob], dict[str, list[str]]]:
        """Jobs submitted and not ended (``cancelled`` set for those this folder's driver cancelled), and the
        batches whose ``submitted`` line is missing (the driver died inside ``sbatch``): token -> keys, to be
        looked up by job name."""
        batches: dict[str, list[str]] = {}
        jobs: dict[str, OpenJob] = {}
        for ev in self.events():
            kind = ev["event"]
            if kind == "submitting":
                batches[ev["token"]] = list(ev["keys"])
            elif kind == "submitted":
                keys = batches.pop(ev["token"], [])
                for key, jid in zip(keys, ev["job_ids"]):
                    jobs[jid] = OpenJob(key, ev["token"], jid)
            elif kind == "ended":
                jobs.pop(ev["job_id"], None)
            elif kind == "cancelled":
                for jid in ev["job_ids"]:
                    if jid in jobs:
                        jobs[jid].cancelled = True
        return list(jobs.values()), batches


def token_folder(out: Path, token: str) -> Path:
    return Path(out) / SLURM_DIR / token


def job_paths(out: Path, token: str, job_id: str):
    """submitit's paths of one job (submitted pickle, result pickle, logs)."""
    from submitit.core.utils import JobPaths

    return JobPaths(token_folder(out, token) / "%j", job_id=job_id, task_id=0)


def read_job_result(out: Path, token: str, job_id: str) -> tuple[str, Any] | None:
    """submitit's result of a finished job: ``("success", record)`` or ``("error", traceback)``; None while none."""
    from submitit.core.utils import pickle_load

    path = job_paths(out, token, job_id).result_pickle
    if not path.exists():
        return None
    try:
        return pickle_load(path)
    except Exception:  # written by rename, so a partial file means another writer: look again next time
        return None


def log_tail(out: Path, token: str, job_id: str, lines: int = LOG_TAIL_LINES) -> tuple[str, str]:
    """The last lines of a job's Slurm log (stderr, else stdout) and the log's path."""
    paths = job_paths(out, token, job_id)
    for p in (paths.stderr, paths.stdout):
        try:
            text = p.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:]), str(p)
    return "", str(paths.stderr)


# ---- squeue, scancel, sacct ------------------------------------------------------------------------
def squeue_states(job_names: list[str], timeout_s: float = 30) -> dict[str, str] | None:
    """Job id -> squeue state of every listed job of these names (array tasks one by one); None when squeue
    did not answer (slurmctld busy): nothing is concluded from that look."""
    if not job_names:
        return {}
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-n", ",".join(sorted(set(job_names))), "-o", "%i|%T"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    out = {}
    for line in res.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            out[jid] = state
    return out


def sacct_state(job_id: str, timeout_s: float = 20) -> str:
    """Why a job ended, from the accounting database; where there is none, says so."""
    if shutil.which("sacct") is None:
        return "sacct not installed: no accounting record of why it ended"
    try:
        res = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode"], capture_output=True,
                             text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return "sacct did not answer"
    text = (res.stdout or "").strip()
    if res.returncode != 0 or not text:
        why = ((res.stderr or "").strip().splitlines() or ["no record"])[0]
        return f"sacct unavailable ({why}); jobs are tracked by squeue and submitit's files"
    return "sacct: " + text.splitlines()[0].replace("|", ", exit ")


def scancel(job_ids: list[str], timeout_s: float = 30) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=timeout_s)


def array_of(job_id: str) -> str:
    return job_id.split("_")[0]


# ---- inside the job --------------------------------------------------------------------------------
def run_point_job(worker: str, point: dict[str, Any], timeout_s: float | None, log_path: str,
                  env: dict[str, str] | None) -> dict[str, Any]:
    """What each Slurm job runs (through submitit): the point's child process, as the local executor runs
    it; returns its record (submitit keeps it in the job's result file)."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    rec = run_point_in_child(worker, point, timeout_s, log, env)
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    jid = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    rec["job"] = {"executor": "slurm", "job_id": jid, "node": socket.gethostname()}
    return rec


# ---- the driver ------------------------------------------------------------------------------------
@dataclass
class Flight:
    """A job in flight: its task, the token of its array (where submitit keeps its files), its state."""

    task: PointTask
    token: str
    job_id: str
    submitted_at: float = field(default_factory=time.time)
    missing_since: float | None = None
    state: str = "PENDING"


class SlurmExecutor:
    """Every point a Slurm job (see the module docstring); ``settings`` apply to each job, a sweep's
    ``placement`` (partition, constraint) overrides them for its points."""

    name = "slurm"

    def __init__(self, settings: SlurmSettings, retries: int = 2, lost_grace_s: float | None = None) -> None:
        self.settings = settings
        self.retries = retries
        #: How long a job may be gone from squeue without a result before it counts as ended without one
        #: (a shared filesystem may show the result file a little later).
        self.lost_grace_s = lost_grace_s if lost_grace_s is not None else max(2 * settings.poll_s, 5.0)
        self._submitting: str | None = None  # the token of an array inside sbatch right now

    def describe(self) -> str:
        s = self.settings
        where = ", ".join(x for x in (f"partition {s.partition}" if s.partition else "",
                                      f"constraint {s.constraint}" if s.constraint else "") if x)
        limit = f"; at most {s.max_parallel} at once per folder" if s.max_parallel else ""
        return (f"slurm ({where or 'partition: as each GPU names it, else the default'}; "
                f"{s.gpus_per_job} GPU per job{limit}; {self.retries} retries)")

    # -- submission --
    def _parameters(self, task: PointTask, n: int) -> dict[str, Any]:
        s = self.settings
        minutes = s.time_min
        if minutes is None:
            minutes = int((task.timeout_s or 3300) // 60) + 5
        params: dict[str, Any] = {"time": minutes, "nodes": 1, "ntasks_per_node": 1, "wckey": None,
                                  "signal_delay_s": int(max(10, min(90, minutes * 6)))}
        partition = task.placement.get("partition") or s.partition
        constraint = task.placement.get("constraint") or s.constraint
        if partition:
            params["partition"] = partition
        if constraint:
            params["constraint"] = constraint
        if s.account:
            params["account"] = s.account
        if s.gpus_per_job:
            params["gpus_per_node"] = int(s.gpus_per_job)
        if s.setup:
            params["setup"] = list(s.setup)
        params["array_parallelism"] = int(s.max_parallel) if s.max_parallel else max(n, 1)
        return params

    def _submit(self, tasks: list[PointTask]) -> list[Flight]:
        """One array of ``tasks`` (all of one results folder); the ledger lines around ``sbatch``."""
        import submitit

        out = tasks[0].out
        token = uuid.uuid4().hex[:12]
        ledger = JobLedger(out)
        ledger.submitting(token, [t.key for t in tasks])
        self._submitting = token
        ex = submitit.SlurmExecutor(folder=token_folder(out, token) / "%j", max_num_timeout=0)
        ex.update_parameters(job_name=JOB_PREFIX + token, **self._parameters(tasks[0], len(tasks)))
        for t in tasks:
            t.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            jobs = ex.map_array(run_point_job, [t.worker for t in tasks], [t.point for t in tasks],
                                [t.timeout_s for t in tasks], [str(t.log_path) for t in tasks],
                                [t.env for t in tasks])
        except Exception as e:  # sbatch refused (a limit, a bad account): stop, with its words
            why = " ".join(str(e).split())[-400:]
            raise UserError(f"sbatch refused the jobs of {out}: {why}; fix that, then continue with --resume "
                            f"{out}") from None
        ids = [str(j.job_id) for j in jobs]
        ledger.submitted(token, ids)
        self._submitting = None
        flights = []
        for t, jid in zip(tasks, ids):
            t.attempt += 1
            flights.append(Flight(t, token, jid))
        return flights

    def _adopt(self, out: Path, tasks: list[PointTask]) -> tuple[list[Flight], list[PointTask]]:
        """A resumed folder: the jobs of ``tasks`` still in flight (or finished unseen) become flights again;
        returns them and the tasks left to submit."""
        ledger = JobLedger(out)
        jobs, lost_batches = ledger.open_jobs()
        for token, keys in lost_batches.items():  # died inside sbatch: find the array by its job name
            live = squeue_states([JOB_PREFIX + token]) or {}
            ids = sorted(live, key=lambda j: int(j.split("_")[1]) if "_" in j else 0)
            folder = token_folder(out, token)
            on_disk = [p.name for p in folder.glob("*_*") if p.is_dir()] if folder.exists() else []
            found = sorted(set(ids) | set(on_disk), key=lambda j: int(j.split("_")[1]) if "_" in j else 0)
            full: list[str] = []
            if found:
                array = array_of(found[0])
                full = [f"{array}_{i}" for i in range(len(keys))] if "_" in found[0] else [array]
                jobs += [OpenJob(k, token, j) for k, j in zip(keys, full)]
            ledger.submitted(token, full)  # closed: none found means sbatch never took it
        recorded = {(r.get("job") or {}).get("job_id") for r in read_results(out / RESULTS_FILE)}
        by_key = {t.key: t for t in tasks}
        flights: list[Flight] = []
        for job in jobs:
            if job.job_id in recorded:  # its record made it to results.jsonl before the driver died
                ledger.ended(job.job_id, "recorded")
                continue
            if job.cancelled and read_job_result(out, job.token, job.job_id) is None:
                ledger.ended(job.job_id, "cancelled")  # cancelled before it finished: runs again, no failure
                continue
            task = by_key.pop(job.key, None)
            if task is None:
                continue
            task.attempt += 1
            flights.append(Flight(task, job.token, job.job_id))
        return flights, list(by_key.values())

    # -- the loop --
    def run_tasks(self, tasks: list[PointTask], sink: RecordSink, bar: SweepProgress) -> None:
        check_slurm([])
        folders: dict[Path, list[PointTask]] = {}
        for t in tasks:
            folders.setdefault(t.out, []).append(t)
        flights: dict[str, Flight] = {}
        try:
            adopted_n = 0
            for out, group in folders.items():
                adopted, fresh = self._adopt(out, group)
                adopted_n += len(adopted)
                flights.update({f.job_id: f for f in adopted})
                if fresh:
                    flights.update({f.job_id: f for f in self._submit(fresh)})
            if adopted_n:
                bar.print(f"adopted {adopted_n} Slurm job(s) of an earlier run still queued, running or unread")
            self._watch(flights, sink, bar)
        except BaseException:
            self._cancel(flights, bar)
            raise

    def _watch(self, flights: dict[str, Flight], sink: RecordSink, bar: SweepProgress) -> None:
        silent_since: float | None = None
        while flights:
            live = squeue_states([JOB_PREFIX + f.token for f in flights.values()])
            now = time.time()
            if live is None:  # slurmctld busy or down: conclude nothing from this look
                silent_since = silent_since or now
                if now - silent_since >= 60:
                    bar.print("squeue has not answered for a minute; still waiting (the jobs are left alone)")
                    silent_since = now
            else:
                silent_since = None
            for jid, f in list(flights.items()):
                result = read_job_result(f.task.out, f.token, jid)
                if result is None:
                    if live is None:
                        continue
                    if jid in live or array_of(jid) in live:
                        f.state, f.missing_since = live.get(jid, live.get(array_of(jid), f.state)), None
                        continue
                    f.missing_since = f.missing_since or now
                    if now - f.missing_since < self.lost_grace_s:
                        continue
                del flights[jid]
                rec = self._record(f, result)
                again = should_retry(rec, f.task.attempt, self.retries)
                if not again and rec["status"] != "ok":
                    tail, path = log_tail(f.task.out, f.token, jid)
                    rec["job"]["log"], rec["job"]["log_tail"] = path, tail
                sink(f.task, rec, final=not again)
                JobLedger(f.task.out).ended(jid, rec["status"])
                if not again and rec["status"] != "ok" and rec["job"].get("log_tail"):
                    bar.print(f"{f.task.label}: Slurm job {jid} failed {f.task.attempt} time(s); the end of "
                              f"{rec['job']['log']}:\n" + "\n".join("    " + x for x in
                                                                     rec["job"]["log_tail"].splitlines()))
                if again:
                    flights.update({n.job_id: n for n in self._submit([f.task])})
            queued = sum(1 for f in flights.values() if f.state in QUEUED_STATES)
            bar.update(queued=queued, running=len(flights) - queued)
            if flights:
                time.sleep(self.settings.poll_s)

    def _record(self, f: Flight, result: tuple[str, Any] | None) -> dict[str, Any]:
        """The record of a job that ended: its point's record, or one saying how the job ended without it."""
        job = {"executor": "slurm", "job_id": f.job_id, "attempt": f.task.attempt}
        if result is not None and result[0] == "success" and isinstance(result[1], dict):
            rec = dict(result[1])
            rec["job"] = {**job, **(rec.get("job") or {}), "job_id": f.job_id, "attempt": f.task.attempt}
            return rec
        if result is not None:  # the job's Python raised around the point: a time limit, a signal
            text = str(result[1]).strip().splitlines()
            last = text[-1] if text else "no traceback"
            timed_out = "timed-out" in last or "TimeoutError" in last
            reason = f"Slurm job {f.job_id} raised: {last}"
        else:
            why = sacct_state(f.job_id)
            tail, _ = log_tail(f.task.out, f.token, f.job_id, 3)
            timed_out = "TIMEOUT" in why or "DUE TO TIME LIMIT" in tail
            reason = (f"Slurm job {f.job_id} ended without a result ({why})"
                      + (f"; its log ends: {' | '.join(tail.splitlines())}" if tail else ""))
        return {"point": f.task.point, "status": "timeout" if timed_out else "failed", "reason": reason,
                "result": None, "seconds": round(time.time() - f.submitted_at, 3), "job": job}

    def _cancel(self, flights: dict[str, Flight], bar: SweepProgress) -> None:
        """``scancel`` what this driver has in flight and say how many (queued, running)."""
        if self._submitting:  # interrupted inside sbatch: its jobs have no ids here yet, only their name
            scancel([f"--name={JOB_PREFIX}{self._submitting}"])
        if not flights:
            return
        queued = sum(1 for f in flights.values() if f.state in QUEUED_STATES)
        ids = sorted(flights)
        try:
            scancel(ids)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"scancel failed ({e}); cancel these jobs yourself: scancel {' '.join(ids)}", file=sys.stderr,
                  flush=True)
            return
        by_folder: dict[Path, list[str]] = {}
        for f in flights.values():
            by_folder.setdefault(f.task.out, []).append(f.job_id)
        for out, jids in by_folder.items():
            JobLedger(out).cancelled(jids)
        print(f"cancelled {len(ids)} Slurm job(s) ({len(ids) - queued} running, {queued} queued) with scancel",
              file=sys.stderr, flush=True)
        deadline = time.time() + 30
        names = [JOB_PREFIX + f.token for f in flights.values()]
        while time.time() < deadline:
            left = squeue_states(names)
            if left is not None and not left:
                break
            time.sleep(0.5)


# ---- status of a folder ----------------------------------------------------------------------------
def _local_driver_alive(out: Path) -> bool:
    """Whether a sweep driven from this host holds ``out`` now (its claim names a live process here)."""
    try:
        parts = (out / LOCK_FILE).read_text().split()
        pid, host = int(parts[0]), (parts[1] if len(parts) > 1 else socket.gethostname())
    except (OSError, ValueError, IndexError):
        return False
    return host == socket.gethostname() and process_alive(pid)


def folder_status(out: str | Path, points: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Progress of one results folder at any time: points, done, failed, queued, running (``squeue``, for the
    Slurm jobs its ledger has in flight), and the time left estimated from the finished points."""

    out = Path(out)
    latest = {point_key(r["point"]): r for r in latest_records(read_results(out / RESULTS_FILE))}
    keys = [point_key(p) for p in points] if points is not None else list(latest)
    done = sum(1 for k in keys if latest.get(k, {}).get("status") == "ok")
    queued = running = 0
    note = None
    in_flight: set[str] = set()
    jobs, _ = JobLedger(out).open_jobs()
    jobs = [j for j in jobs if not j.cancelled and latest.get(j.key, {}).get("status") != "ok"]
    if jobs:
        if missing_slurm_tools():
            note = "squeue not on PATH: queued and running jobs not counted"
        else:
            live = squeue_states([JOB_PREFIX + j.token for j in jobs])
            if live is None:
                note = "squeue did not answer: queued and running jobs not counted"
            else:
                for j in jobs:
                    state = live.get(j.job_id, live.get(array_of(j.job_id)))
                    if state is None:
                        continue
                    in_flight.add(j.key)
                    if state in QUEUED_STATES:
                        queued += 1
                    else:
                        running += 1
    # a point whose last attempt failed and which runs again counts as queued or running, not failed
    failed = sum(1 for k in keys if k in latest and latest[k]["status"] != "ok" and k not in in_flight)
    left = max(len(keys) - done - failed, 0)
    if not jobs and left and _local_driver_alive(out):  # a local sweep: one point at a time, the rest wait
        running, queued = 1, left - 1
    seconds = sorted(r["seconds"] for k, r in latest.items() if r["status"] == "ok" and r.get("seconds"))
    eta = None
    if seconds and left:
        eta = seconds[len(seconds) // 2] * left / max(running, 1)
    return {"folder": str(out), "points": len(keys), "done": done, "failed": failed, "queued": queued,
            "running": running, "eta_s": eta, "note": note}
