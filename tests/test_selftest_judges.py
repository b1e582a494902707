"""Each tightened selftest check fails on wrong figures: its judging logic, fed on CPU."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprobe.tools.selftest.registry import CheckContext, Skip

TB = 1e12


# -- advisor on a measured curve ----------------------------------------------------------------------------

BATCHES = [1, 8, 64, 256]
#: A decode curve of the shape a 0.5B model gives in graph mode (tokens/s), its step latency B / T.
RISING = [520.0, 4_100.0, 30_500.0, 88_000.0]


def _advised(batches, tps):
    from gpuprobe.advise.advisor import advise
    from gpuprobe.advise.curves import curve_from_rows

    rows = [{"batch": b, "tokens_per_s": t, "step_latency_s": b / t} for b, t in zip(batches, tps)]
    curve = curve_from_rows(rows, source="test")
    return curve, advise(curve, "default").choice.b_opt, advise(curve, "paper").choice.b_opt


def test_curve_judge_passes_the_advisor_on_a_rising_curve():
    from gpuprobe.tools.selftest.checks.advisor import judge_curve

    curve, default, paper = _advised(BATCHES, RISING)
    assert judge_curve(curve.batches, curve.tokens_per_s, curve.latencies()[0], default, paper) == []
    assert (default, paper) == (256, 256)


def test_curve_judge_fails_a_flat_curve():
    from gpuprobe.tools.selftest.checks.advisor import judge_curve

    flat = [500.0, 510.0, 520.0, 530.0]
    curve, default, paper = _advised(BATCHES, flat)
    problems = judge_curve(curve.batches, curve.tokens_per_s, curve.latencies()[0], default, paper)
    assert len(problems) == 1 and "flat" in problems[0] and "1.04x" in problems[0]


def test_curve_judge_recomputes_each_rule_on_its_own():
    """A B_opt where the rule does not put it fails, for either rule; the paper's rule caps latency at
    5x the batch nearest 32 (here 8), which excludes 256 on this curve."""
    from gpuprobe.tools.selftest.checks.advisor import expected_b_opt_paper, judge_curve

    tps = [500.0, 3_900.0, 29_000.0, 33_000.0]  # batch 256 steps at 7.8 ms, 3.8x batch 8's 2.05 ms
    lat = [b / t for b, t in zip(BATCHES, tps)]
    assert expected_b_opt_paper(BATCHES, tps, lat, 0.2, 5.0, 32) == 256
    assert expected_b_opt_paper(BATCHES, tps, lat, 0.2, 3.0, 32) == 64
    curve, default, paper = _advised(BATCHES, tps)
    assert judge_curve(BATCHES, tps, lat, default, paper) == []
    wrong = judge_curve(BATCHES, tps, lat, 64, 8)
    assert any("default rule" in p and "B_opt=64" in p and "gives 256" in p for p in wrong)
    assert any("paper rule" in p and "B_opt=8" in p for p in wrong)


# -- energy per token ---------------------------------------------------------------------------------------

def test_energy_judge_fails_a_counter_far_from_power_times_step_time():
    """0.5 J/token from the counter where NVML power x step time / tokens says 0.01: 50x apart."""
    from gpuprobe.tools.selftest.checks.advisor import judge_energy

    independent, problems = judge_energy(0.5, 320.0, 0.002, 64)
    assert independent == pytest.approx(0.01)
    assert len(problems) == 1 and "50x" in problems[0]
    assert judge_energy(0.012, 320.0, 0.002, 64)[1] == []
    _, far = judge_energy(3.0, 96_000.0, 0.002, 64)  # agrees, but no 0.5B model spends 3 J a token
    assert len(far) == 1 and "outside [0.0001, 1]" in far[0]
    assert "no J/token" in judge_energy(None, 320.0, 0.002, 64)[1][0]
    assert "no NVML power" in judge_energy(0.01, None, 0.002, 64)[1][0]


# -- replicas under MPS -------------------------------------------------------------------------------------

def test_mps_judge_fails_without_a_server_or_with_leftovers():
    from gpuprobe.tools.selftest.checks.advisor import judge_mps

    assert judge_mps([4242], [], 2, 2, True) == []
    problems = judge_mps([], [], 2, 2, True)
    assert len(problems) == 1 and "no MPS server" in problems[0]
    assert any("left after quit" in p for p in judge_mps([4242], [4242], 2, 2, True))
    assert any("ended by signal" in p for p in judge_mps([4242], [], 2, 2, False))
    assert any("1 of 2 replica" in p for p in judge_mps([4242], [], 1, 2, True))


def test_mps_observer_sees_a_server_while_replicas_run(tmp_path):
    """Real processes stand in for the MPS server (named as NVIDIA names it, carrying the daemon's pipe
    folder) and a replica (carrying the barrier folder): the observer sees the server only while the
    replica lives, and a process of another name is not taken for a server."""
    from gpuprobe.tools.selftest.checks.advisor import MPS_SERVER, MPSObserver, mps_server_pids

    pipe, barrier = str(tmp_path / "pipe"), tmp_path / "barrier"
    server_exe = tmp_path / MPS_SERVER
    shutil.copy(shutil.which("sleep"), server_exe)
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": pipe}
    server = subprocess.Popen([str(server_exe), "30"], env=env)
    other = subprocess.Popen([shutil.which("sleep"), "30"], env=env)
    replica = None
    try:
        deadline = time.monotonic() + 5
        while server.pid not in mps_server_pids(pipe) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mps_server_pids(pipe) == [server.pid]
        with MPSObserver(pipe, barrier, "/nonexistent/mps-control", {}, interval_s=0.05) as seen:
            time.sleep(0.3)
            assert seen.samples_with_replicas == 0  # no replica yet: nothing recorded
            replica = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                       env={**os.environ, "GPUPROBE_BARRIER_DIR": str(barrier)})
            deadline = time.monotonic() + 5
            while not seen.servers_while_replicas_ran and time.monotonic() < deadline:
                time.sleep(0.05)
        assert seen.servers_while_replicas_ran == {server.pid} and seen.samples_with_replicas >= 1
    finally:
        for p in (server, other, replica):
            if p is not None:
                p.kill()
                p.wait()


# -- paged attention bandwidth against a read ceiling -------------------------------------------------------

def test_attention_bandwidth_judged_against_the_read_ceiling():
    from gpuprobe.tools.selftest.checks.kernels import judge_attention_bandwidth

    ceiling, copy = 4.4 * TB, 4.3 * TB
    figures, problems = judge_attention_bandwidth(4.0e9, 1e-3, ceiling, copy, 0.97)
    assert problems == [] and figures["fraction_of_read_ceiling"] == pytest.approx(4.0 / 4.4, abs=1e-4)
    assert figures["copy_tbps"] == 4.3 and figures["read_over_copy"] == pytest.approx(4.0 / 4.3, abs=1e-4)
    _, above = judge_attention_bandwidth(5.0e9, 1e-3, ceiling, copy)  # read bytes above the read ceiling
    assert len(above) == 1 and "above the read ceiling" in above[0]
    _, slow = judge_attention_bandwidth(3.0e9, 1e-3, ceiling, copy)
    assert len(slow) == 1 and "68% of the read ceiling < 85%" in slow[0]
    _, sdpa = judge_attention_bandwidth(4.0e9, 1e-3, ceiling, copy, 1.2)
    assert len(sdpa) == 1 and "dense SDPA" in sdpa[0]


def test_read_kernel_reads_every_word():
    """The read-ceiling kernel in Triton's interpreter: its per-program sums add up to torch's sum."""
    pytest.importorskip("triton")
    import torch

    from gpuprobe.tools.selftest.read_ceiling import BLOCK, ITERS, read_sum, wrapped_sum

    x = torch.randint(-(2**31), 2**31 - 1, (2 * BLOCK * ITERS + 777,), dtype=torch.int32)
    got = read_sum(x)
    assert got.numel() == 3 and wrapped_sum(got) == wrapped_sum(x)
    x[-1] += 1  # the masked tail is read too
    assert wrapped_sum(read_sum(x)) == wrapped_sum(x)


# -- the batch-1 figure -------------------------------------------------------------------------------------

def test_b1_ratio_is_a_figure_and_physics_still_judged():
    from gpuprobe.tools.selftest.checks.engine import judge_b1_b256

    assert judge_b1_b256(2.6e-3, 0.25e-3, 385.0, 95_000.0) == []  # ~10x the floor unfused: a figure, no failure
    fast = judge_b1_b256(0.1e-3, 0.25e-3, 10_000.0, 95_000.0)
    assert len(fast) == 1 and "cannot have read its weights" in fast[0]
    flat = judge_b1_b256(2.6e-3, 0.25e-3, 385.0, 1_000.0)
    assert len(flat) == 1 and "batch nearly for free" in flat[0]


# -- ceilings -----------------------------------------------------------------------------------------------

def _ceilings(fp32_tera: float, fma_mhz: float | None, run_mhz: float, copy_tera: float = 4.25):
    from gpuprobe.ceilings import CeilingsResult, Measurement

    figures = {"dram_copy": copy_tera, "torch_copy": 4.20, "dram_read": 4.4, "dram_write": 4.2, "l2_read": 10.0,
               "smem_read": 30.0, "fp32_fma": fp32_tera, "mma_bf16": 560.0, "mma_fp16": 565.0, "cublas_bf16": 788.0,
               "cublas_fp16": 790.0}
    ms = {k: Measurement(k, v * TB, True, "test", [v * TB]) for k, v in figures.items()}
    if fma_mhz is not None:
        ms["fp32_fma"].detail["sm_mhz"] = fma_mhz
    return CeilingsResult(device_name="NVIDIA H200", gpu="h200", driver="580", backend="cupy", measured_at="x",
                          measurements=ms, clocks={"sm_mhz": run_mhz, "sm_max_mhz": 1980})


def test_fp32_target_scaled_by_the_fma_runs_own_clock():
    """Memory benchmarks pull the run-wide mean clock down (1400 MHz); the FMA ran at 1980: scaled by
    its own clock, 65 TFLOP/s meets the target; scaled by the run's mean it would look 38% too fast."""
    from gpuprobe.ceilings import evaluate_targets
    from gpuprobe.specs.gpus import get_gpu

    figures, failures = evaluate_targets(_ceilings(65.0, 1980.0, 1400.0), get_gpu("h200"))
    assert failures == [] and figures["fp32_sm_mhz"] == 1980.0 and figures["fp32_sm_mhz_source"] == "the FMA run's own"
    _, slow = evaluate_targets(_ceilings(50.0, 1980.0, 1400.0), get_gpu("h200"))
    assert any("FP32 FMA" in f and "1980 MHz" in f for f in slow)
    figures, _ = evaluate_targets(_ceilings(46.0, None, 1400.0), get_gpu("h200"))  # no own clock: the mean
    assert figures["fp32_sm_mhz_source"] == "the run-wide mean"


def test_copy_faster_than_torch_passes_slower_fails():
    from gpuprobe.ceilings import evaluate_targets
    from gpuprobe.specs.gpus import get_gpu

    assert evaluate_targets(_ceilings(65.0, 1980.0, 1980.0, copy_tera=4.60), get_gpu("h200"))[1] == []
    _, failures = evaluate_targets(_ceilings(65.0, 1980.0, 1980.0, copy_tera=3.90), get_gpu("h200"))
    assert any("of torch's copy" in f for f in failures)


# -- GPU-aware targets from the registry --------------------------------------------------------------------

def test_targets_come_from_the_gpu_registry():
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.tools.selftest.targets import copy_bandwidth_target, missed, read_ceiling_target, tensor_target

    h200, h100, a100 = get_gpu("h200"), get_gpu("h100-sxm"), get_gpu("a100-80gb")
    assert copy_bandwidth_target(4.3 * TB, h200).met and not copy_bandwidth_target(3.0 * TB, h200).met
    assert copy_bandwidth_target(3.0 * TB, h100).met  # the same figure is healthy on an H100
    assert "4.80 TB/s" in copy_bandwidth_target(4.3 * TB, h200).target
    assert not read_ceiling_target(5.2 * TB, h200).met and read_ceiling_target(4.5 * TB, h200).met
    assert tensor_target(788 * TB, h200).met and not tensor_target(788 * TB, a100).met
    assert copy_bandwidth_target(None, h200).met is None and copy_bandwidth_target(4.3 * TB, None) is None
    lines = missed([copy_bandwidth_target(2.0 * TB, h200), tensor_target(788 * TB, h200), None])
    assert len(lines) == 1 and lines[0].startswith("copy bandwidth: 2 TB/s against") and "MISSED" in lines[0]


def test_summary_shows_figure_and_target_side_by_side(tmp_path):
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.tools.selftest.bundle import write_summary
    from gpuprobe.tools.selftest.runner import CheckResult, SelftestRun
    from gpuprobe.tools.selftest.targets import copy_bandwidth_target, targets_figure, tensor_target

    h200 = get_gpu("h200")
    run = SelftestRun(out_dir=tmp_path, started="now", budget_s=420, gpu_requested=True, gpu_class="h200")
    figures = {"copy_vs_torch": 1.01, "targets": targets_figure([copy_bandwidth_target(4.3 * TB, h200),
                                                                 tensor_target(400 * TB, h200)])}
    run.checks.append(CheckResult("ceilings", "failed", 20.0, "cuBLAS bf16 missed", figures, estimate_s=25.0))
    write_summary(run)
    md = (tmp_path / "summary.md").read_text()
    assert "## Figures against targets" in md and "estimates for h200" in md
    assert "| ceilings | copy bandwidth | 4.3 TB/s |" in md and "| met |" in md
    assert "| ceilings | cuBLAS bf16 | 400 TFLOP/s |" in md and "| MISSED |" in md
    assert "targets=" not in md  # not repeated among the key figures
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["checks"][0]["figures"]["targets"][0]["met"] is True and data["gpu_class"] == "h200"


# -- counters probed once, refused counters skip the ncu checks ---------------------------------------------

LIBRARY_NOT_LOADED = ("ncu test run failed (exit status 1; it needs torch with CUDA); last output:\n"
                      "==ERROR== Failed to initialize the profiler: LibraryNotLoaded")


def test_counter_answers_classified():
    from gpuprobe.tools.selftest.counters import classify

    assert classify("failing", LIBRARY_NOT_LOADED) == "refused"
    assert classify("failing", "... ERR_NVGPUCTRPERM ...") == "refused"
    assert classify("failing", "ncu test run failed (exit status 1); Traceback ...") == "failing"
    assert classify("missing", "ncu not found") == "missing" and classify("ok", "") == "ok"


def _run_with_doctor(tmp_path: Path, status: str, message: str) -> CheckContext:
    from gpuprobe.tools import doctor

    item = doctor._counter_item((status, message))  # the doctor keeps its probe's answer in the item
    assert item.data["probe_status"] == status and item.data["probe_message"] == message
    folder = tmp_path / "checks" / "doctor"
    folder.mkdir(parents=True)
    (folder / "doctor.json").write_text(json.dumps({"items": [item.to_dict()]}))
    out = tmp_path / "checks" / "this"
    out.mkdir(parents=True)
    return CheckContext(out_dir=out, gpu=True, budget_s=60, run_dir=tmp_path)


def test_doctors_probe_reused_never_probed_twice(tmp_path, monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest.counters import PROBE_CHECK, PROBE_FILE, counter_probe

    def no_second_probe(*a, **k):
        raise AssertionError("the counter permission was probed a second time")

    monkeypatch.setattr(runner, "check_counter_permission", no_second_probe)
    ctx = _run_with_doctor(tmp_path, "failing", LIBRARY_NOT_LOADED)
    probe = counter_probe(ctx)
    assert probe.status == "refused" and probe.source == "the doctor check of this run"
    assert "LibraryNotLoaded" in probe.skip_reason() and "timing mode" in probe.skip_reason()
    kept = tmp_path / "checks" / PROBE_CHECK / PROBE_FILE
    assert json.loads(kept.read_text())["status"] == "refused"
    assert counter_probe(ctx) == probe  # read back from the kept answer


def test_probe_once_when_no_doctor_ran(tmp_path, monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest import counters
    from gpuprobe.tools.selftest.counters import counter_probe

    calls = []
    monkeypatch.setattr(runner, "find_ncu", lambda: None)
    monkeypatch.setattr(counters, "probe_counters", lambda *a, **k: calls.append(1) or ("ok", "ncu can read", "out"))
    ctx = CheckContext(out_dir=tmp_path / "a", gpu=True, budget_s=60, run_dir=tmp_path)
    ctx.out_dir.mkdir()
    assert counter_probe(ctx).usable and counter_probe(ctx).usable and calls == [1]


@pytest.mark.parametrize("name", ["ncu_counter_permission", "gemm_counter_flops", "csv_vs_rep_pair",
                                  "profile_torch_program"])
def test_refused_counters_skip_every_ncu_check_with_the_reason(name, tmp_path, monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest.checks import ncu as ncu_checks

    monkeypatch.setattr(ncu_checks, "require_cuda", lambda: None)
    monkeypatch.setattr(runner, "find_ncu", lambda: runner.NcuInstall(Path("/x/ncu"), "2025.3.1.0"))
    ctx = _run_with_doctor(tmp_path, "failing", LIBRARY_NOT_LOADED)
    with pytest.raises(Skip, match="counters refused on this node \\(LibraryNotLoaded\\)"):
        getattr(ncu_checks, name if name != "ncu_counter_permission" else "ncu_counter_permission")(ctx)


def test_a_probe_that_fails_for_another_reason_is_a_failure(tmp_path, monkeypatch):
    from gpuprobe.tools.selftest.checks import ncu as ncu_checks
    from gpuprobe.tools.selftest.registry import CheckFailed

    monkeypatch.setattr(ncu_checks, "require_cuda", lambda: None)
    ctx = _run_with_doctor(tmp_path, "failing", "ncu test run failed (exit status 1)\nTraceback: ImportError")
    with pytest.raises(CheckFailed, match="ncu test run failed"):
        ncu_checks.ncu_counter_permission(ctx)


def test_roofline_falls_back_to_timing_mode_when_counters_are_refused(tmp_path, monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest.checks import roofline

    monkeypatch.setattr(runner, "find_ncu", lambda: runner.NcuInstall(Path("/x/ncu"), "2025.3.1.0"))
    monkeypatch.setattr(runner, "_driver_restricts_profiling", lambda: None)
    mode, why = roofline.choose_mode(_run_with_doctor(tmp_path, "failing", LIBRARY_NOT_LOADED))
    assert mode == "timing" and "LibraryNotLoaded" in why
    mode, _ = roofline.choose_mode(_run_with_doctor(tmp_path / "ok", "ok", "ncu can read the counters"))
    assert mode == "ncu"


# -- the two-point roofline ---------------------------------------------------------------------------------

def test_two_points_and_assembly_fit_the_budget():
    """Both ncu points at their limits, the timing-mode fallback and the assembly fit the check's budget; the
    ncu limit is sized from what ncu costs (kernels x replay passes), above its longest expected run."""
    from gpuprobe.tools.selftest.checks.roofline import (BATCHES, OVERHEAD_S, WORKER_AROUND_NCU_S, expected_seconds,
                                                         fallback_reserve_s, limits, point_cost)
    from gpuprobe.tools.selftest.registry import all_checks

    chk = all_checks()["roofline_two_points"]
    cost = point_cost()
    assert cost.passes == 18 and cost.kernels >= 12 and cost.expected_s < cost.upper_s
    point, ncu = limits(chk.budget_s)
    assert ncu == pytest.approx(cost.limit_s()) and ncu > cost.upper_s and point == ncu + WORKER_AROUND_NCU_S
    assert chk.estimate("h200") == pytest.approx(expected_seconds(), abs=5) and chk.estimate("h200") < chk.budget_s
    for budget in (chk.budget_s, 110.0, 80.0):
        point, ncu = limits(budget)
        assert len(BATCHES) * point + OVERHEAD_S + fallback_reserve_s() <= budget or point == 25.0
        assert ncu < point


def test_roofline_json_written_even_when_no_point_finished(tmp_path):
    from gpuprobe.measure.sweep import RESULTS_FILE
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model
    from gpuprobe.tools.selftest.checks.roofline import ensure_roofline_json, verify

    out = tmp_path / "sweep"
    out.mkdir()
    (out / RESULTS_FILE).write_text("".join(json.dumps(
        {"point": {"batch": b, "mode": "timing"}, "status": "timeout", "reason": f"ran past 75 s (batch {b})",
         "result": None, "seconds": 75.0}) + "\n" for b in (1, 64)))
    config = {"model": "qwen2-0.5b", "context": 1024, "dtype": "bf16", "attention": None, "mode": "timing",
              "layers": "one", "batches": [1, 64]}
    path = ensure_roofline_json(out, spec=get_model("qwen2-0.5b"), gpu=get_gpu("h200"), dtype="bf16", config=config)
    data = json.loads(path.read_text())
    assert data["points"] == [] and [f["batch"] for f in data["failed_points"]] == [1, 64]
    problems = verify(data, "timing")
    assert any("batch 1: timeout" in p for p in problems) and any("expected attention points" in p for p in problems)


def test_timing_mode_roofline_verified_without_crosschecks():
    from gpuprobe.tools.selftest.checks.roofline import verify

    def att(batch, pct, bound):
        return {"op": "attention", "batch": batch, "dram_pct_of_measured": pct, "bound": bound}

    good = {"mode": "timing", "points": [att(1, 12.0, "memory"), att(64, 71.0, "memory")], "failed_points": []}
    assert verify(good, "timing") == []
    flat = {**good, "points": [att(1, 40.0, "memory"), att(64, 38.0, "memory")]}
    assert any("did not rise" in p for p in verify(flat, "timing"))
    assert any("not ncu" in p for p in verify(good, "ncu"))


def test_nsys_checks_skip_where_nsys_is_missing(monkeypatch, tmp_path):
    from gpuprobe.tools.selftest import registry

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Skip, match="nsys .* is not on the PATH"):
        registry.require_nsys()
    fake = tmp_path / "nsys"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert registry.require_nsys() == str(fake)
