"""Advisor checks: a measured curve gives B_opt where the rules say, energy per token from NVML's
counter agrees with power x step time, and replicas run under MPS with nothing of it left after.

The judging of each claim is a small pure function (``judge_*``) that tests feed wrong figures."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

from gpuprobe.advise.advisor import (
    DEFAULT_EPSILON, DEFAULT_FIXED_COST_BYTES, PAPER_LATENCY_FACTOR, PAPER_MIN_EFFICIENCY, PAPER_REFERENCE_BATCH,
    advise,
)
from gpuprobe.advise.curves import curve_from_rows
from gpuprobe.errors import GpuprobeError
from gpuprobe.measure.replicas import (
    ENV_BARRIER, MPSDaemon, MPS_CONTROL, engine_command, memory_share, processes_with_env, run_replicas,
)
from gpuprobe.specs.models import get_model
from gpuprobe.system.telemetry import MIN_ENERGY_WINDOW_S, Telemetry
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda

MODEL = "qwen2-0.5b"
CONTEXT = 1024
#: Batches of the measured curve (CUDA-graph mode, context 1024).
CURVE_BATCHES = (1, 8, 64, 256)
#: Decode throughput at batch 64 is at least this multiple of batch 1's on any GPU gpuprobe supports.
CURVE_RISE_MIN = 4.0
#: J/token of a 0.5B model at batch 64: within these bounds, and within this factor of power x step time / tokens.
JOULES_PER_TOKEN_RANGE = (1e-4, 1.0)
ENERGY_AGREEMENT_FACTOR = 3.0
MPS_SERVER = "nvidia-cuda-mps-server"
#: Why energy per token is not judged on a node whose NVML has no total-energy counter.
NO_ENERGY_COUNTER = ("this node's NVML has no total-energy counter (nvmlDeviceGetTotalEnergyConsumption): J/token "
                     "is judged from that counter only")


def _need_engine(what: str) -> None:
    if importlib.util.find_spec(what) is None:
        raise Skip(f"{what} is not built yet")


# ---- advisor on a measured curve -------------------------------------------------------------------
def expected_b_opt_default(batches: Sequence[int], tps: Sequence[float], epsilon: float,
                           excluded: Sequence[int] = ()) -> int | None:
    """The default rule recomputed on its own: the smallest batch within ``epsilon`` (relative) of the best
    throughput, over the batches not ``excluded`` (the advisor's outliers)."""
    kept = [(b, t) for b, t in zip(batches, tps) if b not in excluded]
    if not kept:
        return None
    best = max(t for _, t in kept)
    return min(b for b, t in kept if t >= (1 - epsilon) * best)


def expected_b_opt_paper(batches: Sequence[int], tps: Sequence[float], latencies: Sequence[float],
                         min_efficiency: float, latency_factor: float, reference_batch: int) -> int | None:
    """The paper's rule recomputed on its own: the largest batch with T(B) / (B T(B_min)) above
    ``min_efficiency`` and latency at most ``latency_factor`` x the latency at the batch nearest
    ``reference_batch`` (a tie goes to the smaller batch)."""
    order = sorted(range(len(batches)), key=lambda i: batches[i])
    b = [batches[i] for i in order]
    t = [tps[i] for i in order]
    lat = [latencies[i] for i in order]
    ref = min(range(len(b)), key=lambda i: (abs(b[i] - reference_batch), b[i]))
    passing = [b[i] for i in range(len(b)) if t[i] / (b[i] * t[0]) > min_efficiency
               and lat[i] <= latency_factor * lat[ref]]
    return max(passing) if passing else None


def judge_curve(batches: Sequence[int], tps: Sequence[float], latencies: Sequence[float],
                b_opt_default: int | None, b_opt_paper: int | None, outliers: Sequence[int] = ()) -> list[str]:
    """What is wrong with the advice on a measured curve: it must rise at least :data:`CURVE_RISE_MIN`x
    from batch 1 to 64, and each rule's B_opt must be where the rule, recomputed here, puts it."""

    problems = []
    by = dict(zip(batches, tps))
    if 1 not in by or 64 not in by:
        problems.append(f"batches 1 and 64 were not both measured (got {sorted(by)})")
    elif not by[64] >= CURVE_RISE_MIN * by[1]:
        problems.append(f"the curve is flat: tokens/s at batch 64 ({by[64]:,.0f}) is {by[64] / by[1]:.2f}x batch 1's "
                        f"({by[1]:,.0f}), under {CURVE_RISE_MIN:g}x: decode in graph mode should batch nearly for free")
    want_default = expected_b_opt_default(batches, tps, DEFAULT_EPSILON, outliers)
    if b_opt_default != want_default:
        problems.append(f"default rule: the advisor says B_opt={b_opt_default}, the rule on this curve gives {want_default}")
    want_paper = expected_b_opt_paper(batches, tps, latencies, PAPER_MIN_EFFICIENCY, PAPER_LATENCY_FACTOR,
                                      PAPER_REFERENCE_BATCH)
    if b_opt_paper != want_paper:
        problems.append(f"paper rule: the advisor says B_opt={b_opt_paper}, the rule on this curve gives {want_paper}")
    return problems


@check("advise_measured_curve", owner="advisor", gpu=True, budget_s=90, estimate_s={"default": 25, "a100": 30})
def advise_measured_curve(ctx: CheckContext) -> dict:
    """A CUDA-graph throughput curve of qwen2-0.5b (B=1, 8, 64, 256; context 1024) rises >= 4x from 1 to 64,
    and both rules put B_opt where they say, recomputed independently.

    One engine per batch in this process (no process per point), 20 timed replays each."""
    torch = require_cuda()
    _need_engine("gpuprobe.measure.throughput")
    from gpuprobe.measure.throughput import measure_throughput_point
    from gpuprobe.specs.gpus import detect_gpu

    rows = []
    for b in CURVE_BATCHES:
        try:
            rows.append(measure_throughput_point(MODEL, b, CONTEXT, dtype="bf16", steps=20, warmup=3, graphs=True))
        except torch.cuda.OutOfMemoryError as e:
            rows.append({"batch": b, "status": "oom", "reason": str(e)[:200]})
        torch.cuda.empty_cache()
    (ctx.out_dir / "curve.json").write_text(json.dumps(rows, indent=2, default=str))
    curve = curve_from_rows(rows, source="selftest curve", model=MODEL, context=CONTEXT)
    det = detect_gpu()
    memory = det.memory_bytes if det else None
    spec = get_model(MODEL)
    adv = advise(curve, "default", spec=spec, context=CONTEXT, gpu_memory_bytes=memory)
    paper = advise(curve, "paper", spec=spec, context=CONTEXT, gpu_memory_bytes=memory)
    (ctx.out_dir / "advice.json").write_text(json.dumps(adv.to_json(), indent=2, default=str))
    latencies, _ = curve.latencies()
    outliers = [v.batch for v in adv.choice.verdicts if v.outlier]
    figures = {"tokens_per_s": dict(zip(curve.batches, (round(t, 1) for t in curve.tokens_per_s))),
               "rise_1_to_64": (round(curve.point(64).tokens_per_s / curve.point(1).tokens_per_s, 2)
                                if {1, 64} <= set(curve.batches) else None),
               "b_opt_default": adv.choice.b_opt, "b_opt_paper": paper.choice.b_opt, "outliers": outliers,
               "kv_bytes_at_b_opt": adv.memory.kv_bytes_at_b_opt, "replicas_that_fit": adv.memory.replicas_that_fit,
               "skipped": curve.skipped}
    problems = judge_curve(curve.batches, curve.tokens_per_s, latencies, adv.choice.b_opt, paper.choice.b_opt,
                           outliers)
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures


# ---- energy per token ------------------------------------------------------------------------------
def judge_energy(joules_per_token: float | None, power_w: float | None, step_s: float | None,
                 tokens_per_step: int) -> tuple[float | None, list[str]]:
    """(independent J/token, problems): the energy counter's J/token must lie in
    :data:`JOULES_PER_TOKEN_RANGE` and within :data:`ENERGY_AGREEMENT_FACTOR` of NVML power x step time / tokens."""
    lo, hi = JOULES_PER_TOKEN_RANGE
    independent = power_w * step_s / tokens_per_step if power_w and step_s and tokens_per_step else None
    problems = []
    if joules_per_token is None:
        return independent, ["no J/token figure (no energy counter reading over the decode window)"]
    if not lo <= joules_per_token <= hi:
        problems.append(f"J/token {joules_per_token:.3g} is outside [{lo:g}, {hi:g}] for a 0.5B model at batch "
                        f"{tokens_per_step}")
    if independent is None:
        problems.append("no NVML power reading or step time to compare J/token with")
    elif not 1 / ENERGY_AGREEMENT_FACTOR <= joules_per_token / independent <= ENERGY_AGREEMENT_FACTOR:
        problems.append(f"J/token {joules_per_token:.3g} from the energy counter is {joules_per_token / independent:.2g}x "
                        f"power x step time / tokens ({independent:.3g}); they must agree within "
                        f"{ENERGY_AGREEMENT_FACTOR:g}x")
    return independent, problems


def _mean_power(samples: list, t0: float, t1: float) -> float | None:
    vals = [s.power_w for s in samples if s.power_w is not None and t0 <= s.t <= t1]
    return sum(vals) / len(vals) if vals else None


@check("energy_per_token", owner="advisor", gpu=True, budget_s=90, estimate_s=25)
def energy_per_token(ctx: CheckContext) -> dict:
    """NVML's energy counter over a >= 5 s decode window (qwen2-0.5b, B=64) gives J/token in [1e-4, 1],
    within 3x of NVML power x step time / tokens.

    One replica: setup (~10 s: torch, engine, capture), a 6 s timed window, teardown."""
    require_cuda()
    _need_engine("gpuprobe.engine")

    batch = 64
    tel = Telemetry(interval_s=0.05, clock=time.time)
    if not tel.available:
        raise Skip(tel.reason or "NVML unavailable")
    if tel.read().energy_j is None:  # J/token needs the counter: power samples are averaged over ~1 s on Hopper
        tel.close()
        raise Skip(NO_ENERGY_COUNTER)
    try:
        run = run_replicas(engine_command(MODEL, batch, CONTEXT, 64, 6.0, "bf16", None, None), 1, telemetry=tel,
                           work_dir=ctx.out_dir / "replica", setup_timeout_s=max(30.0, ctx.budget_s - 30),
                           run_timeout_s=60)
    finally:
        tel.close()
    r = run.results[0]
    summary = run.telemetry or {}
    res = r.result or {}
    power = _mean_power(tel.samples, r.t_start, r.t_end) if r.ok else None
    step_s = res.get("step_latency_mean_s")
    independent, problems = judge_energy(run.joules_per_token, power, step_s, batch)
    figures = {"joules_per_token": run.joules_per_token, "power_x_step_per_token": independent,
               "nvml_power_w": power, "step_latency_mean_s": step_s, "energy_j": run.energy_j,
               "window_s": run.window_s, "tokens_per_s": run.aggregate_tokens_per_s,
               "energy_source": summary.get("energy_source"), "throttle_reasons": summary.get("throttle_reasons")}
    if not r.ok:
        raise CheckFailed(f"the decode replica failed: {r.reason}", figures)
    if summary.get("energy_source") != "counter":  # read before the run, gone during it: the node's, not ours
        raise Skip(f"{NO_ENERGY_COUNTER} (it answered before the decode window, not during it)")
    if (run.window_s or 0) < MIN_ENERGY_WINDOW_S:
        problems.insert(0, f"decode window {run.window_s or 0:.1f} s is shorter than {MIN_ENERGY_WINDOW_S} s")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures


# ---- replicas under MPS ----------------------------------------------------------------------------
def mps_server_pids(pipe_dir: str) -> list[int]:
    """Live MPS server processes of the daemon whose pipe folder is ``pipe_dir`` (Linux ``/proc``)."""

    out = []
    for pid in processes_with_env("CUDA_MPS_PIPE_DIRECTORY", pipe_dir):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(argv0) == MPS_SERVER:
            out.append(pid)
    return sorted(out)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2:].split()[0] not in ("Z", "X")


def listed_servers(control: str, env: dict[str, str]) -> list[int]:
    """Server pids the control daemon lists (``get_server_list``); empty when it does not answer."""
    try:
        p = subprocess.run([control], input="get_server_list\n", capture_output=True, text=True, timeout=5,
                           env={**os.environ, **env})
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(int(x) for x in p.stdout.split() if x.isdigit())


class MPSObserver:
    """Samples, every ``interval_s`` while running, the replica processes alive (they carry the barrier
    folder in their environment) and this daemon's MPS servers."""

    def __init__(self, pipe_dir: str, barrier_dir: Path, control: str, env: dict[str, str], interval_s: float = 0.25):
        self.pipe_dir, self.barrier, self.control, self.env = pipe_dir, str(barrier_dir), control, env
        self.interval_s = interval_s
        self.servers_while_replicas_ran: set[int] = set()
        self.samples_with_replicas = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if processes_with_env(ENV_BARRIER, self.barrier):
                self.samples_with_replicas += 1
                self.servers_while_replicas_ran.update(mps_server_pids(self.pipe_dir))
                self.servers_while_replicas_ran.update(listed_servers(self.control, self.env))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MPSObserver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def judge_mps(servers_while_running: Sequence[int], left_after: Sequence[int], replicas_ok: int, replicas: int,
              stopped_cleanly: bool | None) -> list[str]:
    """What is wrong with a replicated run under MPS: an MPS server must have been seen while the
    replicas ran, and no process of the daemon may be left after it was stopped."""
    problems = []
    if not servers_while_running:
        problems.append("no MPS server process was seen while the replicas ran: they did not run under MPS")
    if left_after:
        problems.append(f"MPS processes left after quit: {sorted(left_after)}")
    if stopped_cleanly is False:
        problems.append("quit did not end the MPS daemon: its processes had to be ended by signal")
    if replicas_ok != replicas:
        problems.append(f"{replicas - replicas_ok} of {replicas} replica(s) failed under MPS")
    return problems


@check("replicate_mps_cleanup", owner="advisor", gpu=True, budget_s=90, estimate_s=25)
def replicate_mps_cleanup(ctx: CheckContext) -> dict:
    """Two qwen2-0.5b replicas run under a private MPS daemon (its server seen while they run), and no
    process of it is left afterwards.

    MPS start (~1 s), two replicas set up together (~12 s), 1 s loops, quit (~2 s)."""
    require_cuda()
    _need_engine("gpuprobe.engine")
    from gpuprobe.specs.gpus import detect_gpu

    control = shutil.which(MPS_CONTROL)
    if control is None:
        raise Skip(f"{MPS_CONTROL} is not on PATH")
    det = detect_gpu()
    share = memory_share(2, DEFAULT_FIXED_COST_BYTES, det.memory_bytes) if det and det.memory_bytes else None
    work = ctx.out_dir / "replicas"
    daemon = MPSDaemon(keep_logs=ctx.out_dir / "mps-logs")
    try:
        daemon.start()
    except (GpuprobeError, OSError) as e:  # the binary is there, the daemon is not: the node's, not ours
        daemon.stop()
        raise Skip(f"the MPS control daemon cannot start on this node: {e}"[:300]) from None
    try:  # stopped here on every way out, a SIGTERM of the runner included (it raises in the check)
        pipe = daemon.env["CUDA_MPS_PIPE_DIRECTORY"]
        answered = daemon.answers()
        if not answered:
            raise Skip("the MPS control daemon started but does not answer on this node (get_server_list)")
        with MPSObserver(pipe, work / "barrier", control, daemon.env) as seen:
            run = run_replicas(engine_command(MODEL, 16, 512, 16, 1.0, "bf16", None, share), 2, env=daemon.env,
                               work_dir=work, setup_timeout_s=max(30.0, ctx.budget_s - 30), run_timeout_s=60)
    finally:
        daemon.stop()
    servers = sorted(seen.servers_while_replicas_ran)
    left = sorted(set(processes_with_env("CUDA_MPS_PIPE_DIRECTORY", pipe)) |
                  {p for p in servers if alive(p)})
    figures = {"daemon_answered": answered, "daemon_pid": daemon.pid, "mps_servers_seen": servers,
               "samples_with_replicas": seen.samples_with_replicas, "replicas_ok": len(run.ok),
               "aggregate_tokens_per_s": run.aggregate_tokens_per_s, "stopped_cleanly": daemon.stopped_cleanly,
               "ended_by_signal": daemon.killed, "mps_processes_left": left,
               "failures": [f.reason for f in run.failed]}
    problems = judge_mps(servers, left, len(run.ok), 2, daemon.stopped_cleanly)
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
