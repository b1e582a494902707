"""Model replication on one GPU: N engine processes, each capped to its share of memory, optionally
under CUDA MPS, their decode loops started together; aggregate tokens/s, latency, utilization, energy.

The orchestration (:func:`run_replicas`) is generic over a worker *command*: it starts one process
per replica, waits until each has set up (a file barrier), releases them together, and collects a
JSON result file from each. A worker speaks that protocol through :func:`wait_for_go` and
:func:`write_result`; the environment tells it where:

===========================  ====================================================
``GPUPROBE_REPLICA_INDEX``   0 .. N-1
``GPUPROBE_REPLICA_COUNT``   N
``GPUPROBE_BARRIER_DIR``     the worker creates ``ready.<i>`` here, then waits for ``go``
``GPUPROBE_RESULT_FILE``     where the worker writes its result (a JSON object)
===========================  ====================================================

A worker's result holds ``tokens`` (made in its timed loop), ``t_start`` and ``t_end`` (``time.time()``
around that loop) and anything else (step latency, memory). A replica that fails (non-zero exit,
no result, setup or run time-out) is reported with its reason; the others' results stand. Children
are always ended, and an MPS daemon this module started is always stopped (``quit``), also on
Ctrl-C or an error.

The engine worker (``python -m gpuprobe.measure.replicas --model ...``) is :func:`engine_decode_loop`, one
small function on the engine's API (``Engine.from_pretrained``, ``prepare``, ``capture``, ``memory``).
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gpuprobe.advise.advisor import DEFAULT_FIXED_COST_BYTES
from gpuprobe.errors import GpuprobeError, NotAvailable
from gpuprobe.measure.timing import StepStats, time_steps
from gpuprobe.system.children import end_group, process_alive
from gpuprobe.system.telemetry import Telemetry, energy_between

ENV_INDEX = "GPUPROBE_REPLICA_INDEX"
ENV_COUNT = "GPUPROBE_REPLICA_COUNT"
ENV_BARRIER = "GPUPROBE_BARRIER_DIR"
ENV_RESULT = "GPUPROBE_RESULT_FILE"
MPS_CONTROL = "nvidia-cuda-mps-control"

# --------------------------------------------------------------------------- CUDA MPS


class MPSDaemon:
    """A private CUDA MPS control daemon: its pipe and log folders live in a fresh temporary folder,
    so it never touches a daemon someone else runs. A context manager; :meth:`stop` is idempotent and
    also registered with ``atexit``. Children must get :attr:`env` to reach this daemon.

    ``nvidia-cuda-mps-control -d`` forks the daemon and returns; the daemon writes its process id to
    ``nvidia-cuda-mps-control.pid`` in the pipe folder. Whether it still runs is read from that
    process (and from the processes that carry this daemon's pipe folder in their environment: the
    daemon and the MPS server it starts), never from a client's exit code alone."""

    PID_FILE = "nvidia-cuda-mps-control.pid"
    #: The gpuprobe process that started the daemon; a folder whose owner is gone holds a stale daemon.
    OWNER_FILE = "owner.pid"
    PREFIX = "gpuprobe-mps-"

    def __init__(self, control: str = MPS_CONTROL, root: str | Path | None = None,
                 timeout_s: float = 30.0, keep_logs: str | Path | None = None):
        self.control = control
        self.root = root
        self.timeout_s = timeout_s
        self.keep_logs = Path(keep_logs) if keep_logs else None
        self.dir: Path | None = None
        self.env: dict[str, str] = {}
        self.running = False
        self.stopped_cleanly: bool | None = None
        self.pid: int | None = None
        self.killed: list[int] = []  # processes of this daemon ended by signal after quit did not end them
        self.reaped: list[str] = []  # folders of stale gpuprobe daemons stopped before this one started
        self._exe: str | None = None

    def _run(self, args: list[str], command: str | None = None, timeout: float | None = None):
        return subprocess.run([self._exe, *args], input=command, capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=timeout or self.timeout_s)

    def _start_daemon(self) -> tuple[int, str]:
        """``-d`` with its output in a file, not a pipe: a daemon that keeps the inherited output open
        would otherwise hold ``communicate`` until the time-out."""
        out_path = self.dir / "control-start.txt"
        with open(out_path, "w") as out:
            code = subprocess.run([self._exe, "-d"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, **self.env}, timeout=self.timeout_s).returncode
        return code, out_path.read_text(errors="replace").strip()

    def _bind(self, folder: Path) -> None:
        self.dir = folder
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}

    def start(self) -> "MPSDaemon":
        self._exe = shutil.which(self.control)
        if self._exe is None:
            raise NotAvailable(f"--mps needs '{self.control}' on PATH (it comes with the CUDA driver); "
                               "run without --mps.")
        self.reaped = stop_stale_daemons(self.control, self.root, self.timeout_s)
        self._bind(Path(tempfile.mkdtemp(prefix=self.PREFIX, dir=self.root)))
        (self.dir / "pipe").mkdir()
        (self.dir / "log").mkdir()
        (self.dir / self.OWNER_FILE).write_text(f"{os.getpid()}\n")
        atexit.register(self.stop)
        self.running = True  # from here on stop() must run, even if -d reports an error
        try:
            code, text = self._start_daemon()
        except (OSError, subprocess.TimeoutExpired) as e:
            self.stop()
            raise GpuprobeError(f"the MPS daemon did not start: {e}") from None
        if code != 0:
            detail = text.splitlines()[-1:] or [self._log_tail()]
            self.stop()
            raise GpuprobeError(f"the MPS daemon did not start (exit {code}): {detail[0]}")
        self.pid = self._read_pid(wait_s=5.0)
        return self

    def _read_pid(self, wait_s: float) -> int | None:
        path = self.dir / "pipe" / self.PID_FILE if self.dir else None
        deadline = time.monotonic() + wait_s
        while path is not None:
            try:
                return int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)
        return None

    def processes(self) -> list[int]:
        """The processes of this daemon now: the control daemon and its MPS server(s)."""
        pids = set(processes_with_env("CUDA_MPS_PIPE_DIRECTORY", self.env["CUDA_MPS_PIPE_DIRECTORY"])
                   if self.env else ())
        if self.pid is not None and process_alive(self.pid):
            pids.add(self.pid)
        return sorted(pids)

    def answers(self) -> bool:
        """True when the control daemon answers a query (``get_server_list``) on this pipe folder."""
        if self._exe is None or self.dir is None:
            return False
        try:
            return self._run([], "get_server_list\n", timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def is_running(self) -> bool:
        """True while a process of this daemon lives (its pid file's process, or one carrying its
        pipe folder); without either to go by, whether the daemon answers a query."""
        if self._exe is None or self.dir is None:
            return False
        if self.pid is not None or self.processes():
            return bool(self.processes())
        return self.answers()

    def _log_tail(self) -> str:
        log = self.dir / "log" / "control.log" if self.dir else None
        if log and log.exists():
            lines = log.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def stop(self) -> bool:
        """Send ``quit`` and wait until every process of the daemon is gone; True when ``quit`` alone
        ended them. Those still alive after ``timeout_s`` (processes this object started, by id) are
        terminated, then killed. Safe to call twice."""
        if not self.running:
            return True
        gone = False
        try:
            try:
                self._run([], "quit\n")
            except (OSError, subprocess.TimeoutExpired):
                pass
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                if not self.is_running():
                    gone = True
                    break
                time.sleep(0.2)
            if not gone:
                self._end_leftovers()
        finally:
            self.running = False
            atexit.unregister(self.stop)
            if self.dir is not None:
                if self.keep_logs is not None and (self.dir / "log").exists():
                    shutil.copytree(self.dir / "log", self.keep_logs, dirs_exist_ok=True)
                # the pipe folder outlives any process of the daemon (an interrupted stop): the next
                # start finds it by its dead owner and stops what is left (stop_stale_daemons)
                if not self.processes():
                    shutil.rmtree(self.dir, ignore_errors=True)
        self.stopped_cleanly = gone
        return gone

    def _end_leftovers(self) -> None:
        for sig, wait_s in ((15, 3.0), (9, 2.0)):
            pids = self.processes()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                    if pid not in self.killed:
                        self.killed.append(pid)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + wait_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.1)

    def __enter__(self) -> "MPSDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_stale_daemons(control: str = MPS_CONTROL, root: str | Path | None = None,
                       timeout_s: float = 30.0) -> list[str]:
    """Stop the daemons of gpuprobe runs that ended without stopping theirs (killed with SIGKILL, or
    interrupted while stopping): folders ``gpuprobe-mps-*`` under ``root`` (default: the temporary
    folder) whose owner process is gone. Returns the folders cleaned."""
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    cleaned = []
    for folder in sorted(base.glob(MPSDaemon.PREFIX + "*")):
        try:
            owner = int((folder / MPSDaemon.OWNER_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # not a folder of this version's daemons: never touch what we cannot attribute
        if process_alive(owner) or not (folder / "pipe").is_dir():
            continue
        stale = MPSDaemon(control, timeout_s=timeout_s)
        stale._exe = shutil.which(control)
        stale._bind(folder)
        stale.pid = stale._read_pid(wait_s=0)
        stale.running = True
        stale.stop()
        cleaned.append(str(folder))
    return cleaned


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs of this user's processes whose environment has ``name=value`` (Linux ``/proc``): the MPS
    control daemon and server of a private daemon carry its pipe folder, so none should be left."""
    needle = f"{name}={value}".encode()
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (d / "environ").read_bytes().split(b"\0") and process_alive(int(d.name)):
                pids.append(int(d.name))
        except (OSError, ValueError):
            continue
    return pids


# --------------------------------------------------------------------------- the worker's side


def wait_for_go(timeout_s: float = 600.0, poll_s: float = 0.005) -> None:
    """Tell the orchestrator this replica is set up, then block until all are released together."""
    barrier = os.environ.get(ENV_BARRIER)
    if not barrier:
        return  # run by hand, outside an orchestrator
    index = os.environ.get(ENV_INDEX, "0")
    Path(barrier, f"ready.{index}").touch()
    go = Path(barrier, "go")
    deadline = time.monotonic() + timeout_s
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"replica {index}: no 'go' after {timeout_s:g} s")
        time.sleep(poll_s)


def write_result(result: dict[str, Any]) -> None:
    """Write this replica's result where the orchestrator reads it (stdout when run by hand)."""
    path = os.environ.get(ENV_RESULT)
    text = json.dumps(result, default=str)
    if not path:
        print(text)
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------- orchestration


@dataclass
class ReplicaResult:
    index: int
    ok: bool
    reason: str | None = None
    returncode: int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    t_start: float | None = None
    t_end: float | None = None
    result: dict[str, Any] | None = None
    log: str | None = None


@dataclass
class ReplicationRun:
    """One run of N replicas released together."""

    replicas: int
    results: list[ReplicaResult]
    mps: bool = False
    aggregate_tokens_per_s: float | None = None  # all replicas' tokens over the span of their loops
    sum_tokens_per_s: float | None = None  # the replicas' own rates, added
    window_s: float | None = None
    telemetry: dict[str, Any] | None = None
    energy_j: float | None = None
    joules_per_token: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[ReplicaResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[ReplicaResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok_replicas"] = len(self.ok)
        return d


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_replicas(command: Callable[[int], Sequence[str]] | Sequence[str], n: int, *,
                 env: dict[str, str] | None = None, setup_timeout_s: float = 300.0,
                 run_timeout_s: float = 600.0, telemetry: Any = None, work_dir: str | Path | None = None,
                 config: dict[str, Any] | None = None) -> ReplicationRun:
    """Start ``n`` copies of ``command`` (a list, or a function of the replica index giving one),
    release them together once all are set up, and collect their results.

    ``telemetry``: a :class:`gpuprobe.system.telemetry.Telemetry` (or None) sampled from release to the last exit;
    energy is counted over the span of the replicas' timed loops.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    own_dir = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="gpuprobe-replicas-")) if own_dir else Path(work_dir)
    barrier = root / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    for stale in barrier.iterdir():
        stale.unlink()
    procs: dict[int, subprocess.Popen] = {}
    results: dict[int, ReplicaResult] = {}
    logs = {i: root / f"replica{i}.log" for i in range(n)}
    summary = None
    sampling = False
    try:
        for i in range(n):
            argv = list(command(i) if callable(command) else command)
            child_env = {**os.environ, **(env or {}), ENV_INDEX: str(i), ENV_COUNT: str(n),
                         ENV_BARRIER: str(barrier), ENV_RESULT: str(root / f"result{i}.json")}
            with open(logs[i], "w") as log:
                try:
                    procs[i] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                                start_new_session=True)
                except OSError as e:
                    results[i] = ReplicaResult(i, False, f"could not start: {e}")
        # -- barrier: every live replica ready, or failed
        deadline = time.monotonic() + setup_timeout_s
        pending = set(procs)
        while pending:
            for i in sorted(pending):
                if (barrier / f"ready.{i}").exists():
                    pending.discard(i)
                elif procs[i].poll() is not None:
                    pending.discard(i)
                    results[i] = ReplicaResult(i, False, f"failed during setup (exit {procs[i].returncode}): "
                                               f"{_tail(logs[i]) or 'no output'}", procs[i].returncode)
            if pending and time.monotonic() > deadline:
                for i in pending:
                    end_group(procs[i])
                    results[i] = ReplicaResult(i, False, f"not set up after {setup_timeout_s:g} s",
                                               procs[i].returncode)
                pending.clear()
            time.sleep(0.01)
        running = [i for i in procs if i not in results]
        if running and telemetry is not None:
            telemetry.start()
            sampling = True
        tmp = barrier / "go.tmp"
        tmp.write_text(str(time.time()))
        tmp.replace(barrier / "go")
        deadline = time.monotonic() + run_timeout_s
        for i in running:
            try:
                procs[i].wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                end_group(procs[i])
                results[i] = ReplicaResult(i, False, f"still running after {run_timeout_s:g} s", None)
        if sampling:
            summary, sampling = telemetry.stop(), False
        for i in running:
            if i not in results:
                results[i] = _collect(i, procs[i].returncode, root / f"result{i}.json", logs[i])
    finally:
        for p in procs.values():
            end_group(p)
        if sampling:  # interrupted while sampling: end the sampler thread too
            telemetry.stop()
    for i, r in results.items():
        if logs[i].exists():
            r.log = _tail(logs[i], 20) if not r.ok else None
    run = ReplicationRun(n, [results[i] for i in range(n)], config=dict(config or {}))
    _aggregate(run, telemetry, summary)
    if own_dir:
        shutil.rmtree(root, ignore_errors=True)
    return run


def _collect(i: int, rc: int | None, result_path: Path, log: Path) -> ReplicaResult:
    if rc != 0:
        return ReplicaResult(i, False, f"exit {rc}: {_tail(log) or 'no output'}", rc)
    try:
        res = json.loads(result_path.read_text())
    except (OSError, ValueError):
        return ReplicaResult(i, False, "exited without a result file", rc)
    try:
        tokens, t0, t1 = int(res["tokens"]), float(res["t_start"]), float(res["t_end"])
    except (KeyError, TypeError, ValueError):
        return ReplicaResult(i, False, "result lacks tokens, t_start or t_end", rc, result=res)
    tps = tokens / (t1 - t0) if t1 > t0 else None
    return ReplicaResult(i, True, None, rc, tokens, tps, t0, t1, res)


def _aggregate(run: ReplicationRun, telemetry: Any, summary: Any) -> None:
    ok = run.ok
    if summary is not None:
        run.telemetry = summary.to_dict()
    if not ok:
        return
    t0, t1 = min(r.t_start for r in ok), max(r.t_end for r in ok)  # type: ignore[type-var]
    tokens = sum(r.tokens for r in ok)  # type: ignore[misc]
    run.window_s = t1 - t0
    run.aggregate_tokens_per_s = tokens / run.window_s if run.window_s > 0 else None
    run.sum_tokens_per_s = sum(r.tokens_per_s or 0.0 for r in ok)
    if telemetry is not None and summary is not None and summary.available:
        e = energy_between(telemetry.samples, t0, t1)
        if e is None and summary.energy_j is not None:
            e = summary.energy_j  # whole telemetry window: slightly more than the loops
        run.energy_j = e
        run.joules_per_token = e / tokens if e is not None and tokens else None


# --------------------------------------------------------------------------- the engine worker


def engine_decode_loop(model: str, batch: int, context: int, steps: int, min_seconds: float,
                       dtype: str = "bf16", attention: str | None = None,
                       memory_fraction: float | None = None) -> dict[str, Any]:
    """One replica: build the engine, fill a KV cache of ``batch`` x ``context`` (random, shapes only),
    capture one decode step as a CUDA graph, wait at the barrier, then replay it for at least
    ``steps`` steps and ``min_seconds`` seconds, timing every step with CUDA events. Each step runs at
    the same context, as in ``gpuprobe throughput``, so replicas are compared at exactly (B, C)."""
    import torch

    from gpuprobe import Engine

    if memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(memory_fraction)
    engine = Engine.from_pretrained(model, dtype=dtype, device="cuda", attention=attention)
    b = engine.prepare(batch, context, fill="random")
    graph = engine.capture(b)
    for _ in range(8):  # warm-up
        graph.replay()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(8):
        graph.replay()
    torch.cuda.synchronize()
    n = max(steps, math.ceil(min_seconds / max((time.perf_counter() - t) / 8, 1e-6)))
    wait_for_go()
    t_start = time.time()
    stats = StepStats.of(time_steps(graph.replay, n, 0, cuda=True))
    t_end = time.time()
    mem = engine.memory(b)
    return {"tokens": batch * n, "steps": n, "batch": batch, "context": context, "t_start": t_start, "t_end": t_end,
            "step_latency_p50_s": stats.p50_s, "step_latency_p90_s": stats.p90_s,
            "step_latency_mean_s": stats.mean_s, "weights_bytes": mem.weights_bytes,
            "kv_cache_bytes": mem.kv_cache_bytes, "peak_memory_bytes": mem.peak_memory_bytes,
            "memory_fraction": memory_fraction}


def worker_main(argv: list[str] | None = None) -> int:
    """``python -m gpuprobe.measure.replicas --model M --batch B ...``: one engine replica."""
    p = argparse.ArgumentParser(prog="python -m gpuprobe.measure.replicas", description=worker_main.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--min-seconds", type=float, default=6.0)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--attention", default=None)
    p.add_argument("--memory-fraction", type=float, default=None)
    a = p.parse_args(argv)
    write_result(engine_decode_loop(a.model, a.batch, a.context, a.steps, a.min_seconds, a.dtype,
                                    a.attention, a.memory_fraction))
    return 0


def engine_command(model: str, batch: int, context: int, steps: int, min_seconds: float, dtype: str,
                   attention: str | None, memory_fraction: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "gpuprobe.measure.replicas", "--model", model, "--batch", str(batch),
           "--context", str(context), "--steps", str(steps), "--min-seconds", str(min_seconds), "--dtype", dtype]
    if attention:
        cmd += ["--attention", attention]
    if memory_fraction is not None:
        cmd += ["--memory-fraction", f"{memory_fraction:.4f}"]
    return cmd


def memory_share(n: int, fixed_cost_bytes: int, total_bytes: int, headroom: float = 0.02) -> float:
    """The fraction of GPU memory to cap each of ``n`` replicas' allocators at: an equal share of
    what is left after every replica's fixed cost (not allocator-managed) and a small headroom."""
    share = ((1.0 - headroom) * total_bytes / n - fixed_cost_bytes) / total_bytes
    if share <= 0:
        raise GpuprobeError(f"{n} replicas do not fit: each needs {fixed_cost_bytes / 2**30:.1f} GiB "
                            "of fixed cost alone.")
    return share


def replicate(model: str, counts: Sequence[int], batches: Sequence[int], *, context: int = 1024,
              steps: int = 64, min_seconds: float = 6.0, dtype: str = "bf16", attention: str | None = None,
              mps: bool = False, memory_fraction: float | None = None, fixed_cost_bytes: int | None = None,
              out_dir: Path | None = None, setup_timeout_s: float = 300.0, run_timeout_s: float = 600.0,
              command: Callable[..., list[str]] = engine_command, on_run: Callable[[ReplicationRun], None] | None = None
              ) -> list[ReplicationRun]:
    """Run each replica count in ``counts`` (at the matching batch of ``batches``) on GPU 0.

    Each replica's allocator is capped at its memory share; with ``mps`` all runs share one private
    MPS daemon, stopped whatever happens.
    """

    fixed = fixed_cost_bytes if fixed_cost_bytes is not None else DEFAULT_FIXED_COST_BYTES
    tel = Telemetry(interval_s=0.1, clock=time.time)
    total = _gpu_total_bytes()
    runs: list[ReplicationRun] = []
    daemon = MPSDaemon(keep_logs=(out_dir / "mps-logs") if out_dir else None) if mps else nullcontext()
    try:
        with daemon as d:
            env = dict(d.env) if mps else {}
            for n, b in zip(counts, batches):
                share = memory_fraction if memory_fraction is not None else (
                    memory_share(n, fixed, total) if total else None)
                cmd = command(model, b, context, steps, min_seconds, dtype, attention, share)
                cfg = {"model": model, "replicas": n, "batch": b, "context": context, "dtype": dtype,
                       "attention": attention, "mps": mps, "memory_fraction": share}
                run = run_replicas(cmd, n, env=env, setup_timeout_s=setup_timeout_s, run_timeout_s=run_timeout_s,
                                   telemetry=tel if tel.available else None,
                                   work_dir=(out_dir / f"r{n}-b{b}{'-mps' if mps else ''}") if out_dir else None,
                                   config=cfg)
                run.mps = mps
                if not tel.available:
                    run.telemetry = {"available": False, "reason": tel.reason}
                runs.append(run)
                if on_run:
                    on_run(run)
    finally:
        tel.close()
    return runs


def _gpu_total_bytes() -> int | None:
    from gpuprobe.specs.gpus import detect_gpu

    det = detect_gpu()
    return det.memory_bytes if det else None


# --------------------------------------------------------------------------- fixed cost per process


_FIXED_COST_CHILD = r"""
import sys, torch
torch.cuda.init()
a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
b = a @ a
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    b = a @ a
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    c = a @ a
g.replay()
torch.cuda.synchronize()
tensors = sum(t.numel() * t.element_size() for t in (a, b, c))
print("ready", tensors, flush=True)
sys.stdin.read()
"""


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    """One line of a child's stdout, or "" once ``timeout_s`` passes (the child is then ended)."""
    if proc.stdout is None:
        return ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            end_group(proc)
            return ""
    return proc.stdout.readline()


def measure_fixed_cost_bytes(timeout_s: float = 120.0) -> int | None:
    """A replica's memory beyond its own tensors, measured: device memory in use (NVML) while a fresh
    process holds a CUDA context, cuBLAS handle and workspace and a captured CUDA graph, minus the
    memory in use before it started and the bytes of its tensors. None without NVML or a GPU."""

    tel = Telemetry()
    if not tel.available:
        return None
    try:
        before = tel.read().memory_used_bytes
        proc = subprocess.Popen([sys.executable, "-c", _FIXED_COST_CHILD], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            line = _readline(proc, timeout_s)  # "" when the child died or hung before it was ready
            during = tel.read().memory_used_bytes
        finally:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                end_group(proc)
        if not line.startswith("ready") or before is None or during is None:
            return None
        return max(0, during - before - int(line.split()[1]))
    finally:
        tel.close()


if __name__ == "__main__":
    raise SystemExit(worker_main())
