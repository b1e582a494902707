"""Advisor checks: a measured curve gives B_opt, energy per token from NVML's counter, MPS cleanup."""
from __future__ import annotations

import importlib.util
import json
import shutil

from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda

MODEL = "qwen2-0.5b"


def _need_engine(what: str) -> None:
    if importlib.util.find_spec(what) is None:
        raise Skip(f"{what} is not built yet")


@check("advise_measured_curve", owner="advisor", gpu=True, budget_s=150)
def advise_measured_curve(ctx: CheckContext) -> dict:
    """A short CUDA-graph throughput curve of qwen2-0.5b (context 1024) gives B_opt under both rules."""
    require_cuda()
    _need_engine("gpuprobe.measure.throughput")
    from gpuprobe.advise.advisor import advise
    from gpuprobe.advise.curves import measure_curve
    from gpuprobe.specs.gpus import detect_gpu
    from gpuprobe.specs.models import get_model

    curve = measure_curve(MODEL, "1,8,64,256", 1024, "bf16", None, ctx.out_dir)
    det = detect_gpu()
    spec = get_model(MODEL)
    adv = advise(curve, "default", spec=spec, context=1024, gpu_memory_bytes=det.memory_bytes if det else None)
    paper = advise(curve, "paper", spec=spec, context=1024, gpu_memory_bytes=det.memory_bytes if det else None)
    (ctx.out_dir / "advice.json").write_text(json.dumps(adv.to_json(), indent=2, default=str))
    tps = dict(zip(curve.batches, curve.tokens_per_s))
    figures = {"tokens_per_s": tps, "b_opt_default": adv.choice.b_opt, "b_opt_paper": paper.choice.b_opt,
               "kv_bytes_at_b_opt": adv.memory.kv_bytes_at_b_opt, "replicas_that_fit": adv.memory.replicas_that_fit,
               "skipped": curve.skipped}
    if len(curve.points) < 3:
        raise CheckFailed(f"only {len(curve.points)} of 4 batches measured", figures)
    if adv.choice.b_opt is None or paper.choice.b_opt is None:
        raise CheckFailed("a rule found no B_opt on a measured curve", figures)
    if 1 in tps and 64 in tps and not tps[64] > 8 * tps[1]:
        raise CheckFailed(f"tokens/s at batch 64 ({tps[64]:,.0f}) is not 8x batch 1's ({tps[1]:,.0f}): "
                          "decode should scale with batch in graph mode", figures)
    return figures


@check("energy_per_token", owner="advisor", gpu=True, budget_s=90)
def energy_per_token(ctx: CheckContext) -> dict:
    """NVML's total-energy counter over a >= 5 s decode window gives a plausible J/token, matching sampled power."""
    require_cuda()
    _need_engine("gpuprobe.engine")
    from gpuprobe.measure.replicas import engine_command, run_replicas
    from gpuprobe.measure.telemetry import MIN_ENERGY_WINDOW_S, Telemetry, integrate_power

    tel = Telemetry(interval_s=0.05, clock=__import__("time").time)
    if not tel.available:
        raise Skip(tel.reason or "NVML unavailable")
    try:
        run = run_replicas(engine_command(MODEL, 64, 1024, 64, 6.0, "bf16", None, None), 1, telemetry=tel,
                           work_dir=ctx.out_dir / "replica", setup_timeout_s=240, run_timeout_s=120)
    finally:
        tel.close()
    r = run.results[0]
    summary = run.telemetry or {}
    integral = integrate_power(tel.samples)
    figures = {"energy_j": run.energy_j, "joules_per_token": run.joules_per_token, "window_s": run.window_s,
               "tokens_per_s": run.aggregate_tokens_per_s, "avg_power_w": summary.get("avg_power_w"),
               "energy_counter_j_whole_window": summary.get("energy_j"), "power_integral_j": integral,
               "throttle_reasons": summary.get("throttle_reasons"), "energy_source": summary.get("energy_source")}
    if not r.ok:
        raise CheckFailed(f"the decode replica failed: {r.reason}", figures)
    if summary.get("energy_source") != "counter":
        raise CheckFailed("no total-energy counter reading (nvmlDeviceGetTotalEnergyConsumption)", figures)
    if (run.window_s or 0) < MIN_ENERGY_WINDOW_S:
        raise CheckFailed(f"decode window {run.window_s:.1f} s is shorter than {MIN_ENERGY_WINDOW_S} s", figures)
    p = summary.get("avg_power_w") or 0
    if not 30 <= p <= 1200:
        raise CheckFailed(f"average power {p:.0f} W is implausible for a GPU under load", figures)
    if not run.joules_per_token or not 0 < run.joules_per_token < 10:
        raise CheckFailed(f"J/token {run.joules_per_token} is implausible for a 0.5B model at batch 64", figures)
    whole = summary.get("energy_j")
    if integral and whole and abs(integral - whole) > 0.25 * whole:
        raise CheckFailed(f"energy counter ({whole:.0f} J) and sampled power ({integral:.0f} J) disagree by over 25%",
                          figures)
    return figures


@check("replicate_mps_cleanup", owner="advisor", gpu=True, budget_s=150)
def replicate_mps_cleanup(ctx: CheckContext) -> dict:
    """Two qwen2-0.5b replicas run under a private MPS daemon, and no MPS process of it is left afterwards."""
    require_cuda()
    _need_engine("gpuprobe.engine")
    from gpuprobe.measure.replicas import MPS_CONTROL, MPSDaemon, engine_command, memory_share, processes_with_env, run_replicas
    from gpuprobe.advise.advisor import DEFAULT_FIXED_COST_BYTES
    from gpuprobe.specs.gpus import detect_gpu

    if shutil.which(MPS_CONTROL) is None:
        raise Skip(f"{MPS_CONTROL} is not on PATH")
    det = detect_gpu()
    share = memory_share(2, DEFAULT_FIXED_COST_BYTES, det.memory_bytes) if det and det.memory_bytes else None
    daemon = MPSDaemon(keep_logs=ctx.out_dir / "mps-logs")
    with daemon:
        pipe = daemon.env["CUDA_MPS_PIPE_DIRECTORY"]
        running_during = daemon.answers()
        daemon_pid = daemon.pid
        run = run_replicas(engine_command(MODEL, 16, 512, 16, 1.0, "bf16", None, share), 2, env=daemon.env,
                           work_dir=ctx.out_dir / "replicas", setup_timeout_s=240, run_timeout_s=120)
    left = processes_with_env("CUDA_MPS_PIPE_DIRECTORY", pipe)
    figures = {"daemon_answered_during_run": running_during, "daemon_pid": daemon_pid, "replicas_ok": len(run.ok),
               "aggregate_tokens_per_s": run.aggregate_tokens_per_s, "stopped_cleanly": daemon.stopped_cleanly,
               "ended_by_signal": daemon.killed, "mps_processes_left": left,
               "failures": [f.reason for f in run.failed]}
    if not running_during:
        raise CheckFailed("the MPS control daemon did not answer while running", figures)
    if left or not daemon.stopped_cleanly:
        raise CheckFailed(f"quit did not end the MPS daemon: {daemon.killed or left} had to be ended or are left",
                          figures)
    if len(run.ok) != 2:
        raise CheckFailed(f"{2 - len(run.ok)} replica(s) failed under MPS", figures)
    return figures
