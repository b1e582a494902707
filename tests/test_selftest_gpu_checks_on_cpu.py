"""The GPU checks' verdicts on CPU, with stand-ins where the GPU is needed: the kernel count never passes on
zero and allows the bias copy and one library reduce, the counter probe reads all of ncu's output with
--clock-control none, a node without the energy counter or a startable MPS daemon skips, the mma.sync
ratio is a figure, the fused batch-1 step is judged against a target reachable on the GPU."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip

#: Recorded on the lent H200 node under gVisor (kernel 4.4.0, driver 580.159.03, Nsight Compute 2025.3.1).
LIBRARY_NOT_LOADED = "==ERROR== Failed to initialize the profiler: LibraryNotLoaded"


def _ctx(tmp_path: Path) -> CheckContext:
    out = tmp_path / "evidence"
    out.mkdir(exist_ok=True)
    return CheckContext(out_dir=out, gpu=True, budget_s=60, run_dir=tmp_path)


# -- kernels per layer ----------------------------------------------------------------------------------------

def test_layer_count_allows_the_bias_copy_and_one_reduce_and_never_passes_on_zero():
    from gpuprobe.specs import get_model
    from gpuprobe.tools.selftest.checks.engine_kernels import bias_projections
    from gpuprobe.tools.selftest.layer_kernels import fused_layer_limit, judge_layer_count

    assert bias_projections(get_model("qwen2-0.5b")) == 1 and bias_projections(get_model("llama-3.2-1b")) == 0
    limit = fused_layer_limit(1, attention_reduce=False)
    assert limit == 11 and fused_layer_limit(1, attention_reduce=True) == 12
    ops = ["input_norm", "qkv_proj", "kv_write", "attention", "o_proj", "post_attention_norm", "gate_up_proj",
           "act", "down_proj"]
    seen = {op: 1 for op in ops} | {"qkv_proj": 2, "down_proj": 2}  # the bias copy, a cuBLAS split-K reduce
    assert judge_layer_count(seen, limit) == []
    over = judge_layer_count(seen | {"o_proj": 2}, limit, {"o_proj": {"gemm": 1, "splitKreduce": 1}})
    assert len(over) == 1 and "12 kernels (limit 11)" in over[0] and "o_proj 2" in over[0]
    nothing = judge_layer_count({}, limit)
    assert len(nothing) == 1 and "zero is no evidence" in nothing[0]
    assert judge_layer_count({op: 0 for op in ops}, limit) == nothing


def test_kernels_per_layer_check_fails_when_the_profiler_saw_nothing(tmp_path, monkeypatch):
    import torch

    from gpuprobe.tools.selftest import layer_kernels
    from gpuprobe.tools.selftest.checks import engine_kernels as checks

    seen = {"fused": {"qkv_proj": 2, "attention": 1}, "unfused": {"qkv_proj": 3, "attention": 1}}

    def count(model, mode, **kw):
        per_op = seen[mode]
        return {"per_layer": sum(per_op.values()), "per_op": per_op, "names": {}, "step_kernels": 5,
                "device_kernels_seen": 5, "attention": "triton", "kernels": mode, "layer": 1}

    monkeypatch.setattr(checks, "require_cuda", lambda: torch)
    monkeypatch.setattr(checks, "_free", lambda torch: None)
    monkeypatch.setattr(checks, "_splitk_reduce", lambda b, c: 1)
    monkeypatch.setattr(layer_kernels, "count_layer_kernels", count)
    fig = checks.kernels_per_layer(_ctx(tmp_path))
    assert fig["fused_limit"] == 12 and fig["fused_per_op"] == {"qkv_proj": 2, "attention": 1}
    seen["fused"] = {}
    with pytest.raises(CheckFailed, match="zero is no evidence") as e:
        checks.kernels_per_layer(_ctx(tmp_path))
    assert e.value.figures["fused_per_layer"] == 0 and e.value.figures["unfused_over_fused"] is None


def test_kernels_are_attributed_to_the_op_range_they_launch_in():
    """The engine's NVTX ranges opened as profiler ranges (CPU profiler, unfused engine): each aten op starts
    inside its op's range, so the kernels the profiler links to it count for that op."""
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile

    from gpuprobe.engine import Engine
    from gpuprobe.engine.nvtx import use_backend
    from gpuprobe.specs import get_model
    from gpuprobe.tools.selftest.layer_kernels import RANGE_PREFIX, ProfilerRanges, attribute, per_op_of_layer

    spec = dataclasses.replace(get_model("qwen2-0.5b").with_layers(2), hidden_size=128, num_heads=2,
                               num_kv_heads=1, head_dim=64, intermediate_size=160, vocab_size=97)
    eng = Engine.from_spec(spec, dtype="fp32", device="cpu", attention="sdpa-dense", kernels="unfused")
    b = eng.prepare(1, 8)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof, use_backend(ProfilerRanges()):
        eng.step(b, nvtx=True)
    gemms = ("aten::addmm", "aten::mm")
    events = [types.SimpleNamespace(name=e.name, time_range=e.time_range,
                                    kernels=[types.SimpleNamespace(name=e.name)] if e.name in gemms else [])
              for e in prof.events()]
    assert any(e.name == RANGE_PREFIX + "decode/layer1/qkv_proj" for e in events)
    per_op, names = per_op_of_layer(attribute(events), 1)
    assert {op: per_op[op] for op in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")} == \
        {"qkv_proj": 1, "o_proj": 1, "gate_up_proj": 1, "down_proj": 1}
    assert names["qkv_proj"] == ["aten::addmm"]  # the projection with a bias
    assert "attention" not in per_op  # no GEMM-named kernel launched there
    memcpy = types.SimpleNamespace(name="x", time_range=events[0].time_range,
                                   kernels=[types.SimpleNamespace(name="Memcpy DtoD (Device -> Device)")])
    assert attribute([memcpy]) == {}  # copies and sets are not kernels


# -- the counter probe ---------------------------------------------------------------------------------------

#: A profiled program that prints more than the 8 lines the probe once looked at, after ncu's own line.
CHATTY_PROGRAM = "import sys\nfor i in range(12):\n    print('profiled program, line', i)\nsys.exit(1)"


def _stand_in_ncu(folder: Path, marker: str) -> tuple[Path, Path]:
    """An ncu that prints a recorded refusal line, then runs the profiled program for real (its own output
    follows ncu's line) and exits 1, as ncu did under gVisor."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "argv.json"
    exe = folder / "ncu"
    exe.write_text(textwrap.dedent(f'''\
        #!{sys.executable}
        import json, subprocess, sys
        argv = sys.argv[1:]
        if argv[:1] == ["--version"]:
            print("Version 2025.3.1.0 (build 36398880) (public-release)"); sys.exit(0)
        json.dump(argv, open({str(log)!r}, "w"))
        print({marker!r}, flush=True)
        i = argv.index("--export")
        subprocess.call(argv[i + 2:])
        sys.exit(1)
    '''))
    exe.chmod(0o755)
    return exe, log


def test_probe_reads_the_whole_output_and_leaves_the_clocks_alone(tmp_path, monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest.counters import classify, kept_output, probe_counters

    monkeypatch.setattr(runner, "_driver_restricts_profiling", lambda: None)
    monkeypatch.setattr(runner, "TEST_PROGRAM", CHATTY_PROGRAM)
    exe, log = _stand_in_ncu(tmp_path / "bin", LIBRARY_NOT_LOADED)
    status, message, output = probe_counters(str(exe), timeout_s=120)
    lines = output.rstrip().splitlines()
    assert lines[0] == LIBRARY_NOT_LOADED and len(lines) > 8
    assert LIBRARY_NOT_LOADED not in "\n".join(lines[-8:])  # beyond the last 8 lines: missed before
    assert status == "failing" and LIBRARY_NOT_LOADED in message and classify(status, message) == "refused"
    argv = json.loads(log.read_text())
    assert argv[argv.index("--clock-control") + 1] == "none"
    assert kept_output("x" * 50, limit=20).count("left out") == 1


def test_doctor_keeps_the_refusal_for_the_ncu_checks(tmp_path, monkeypatch):
    """The doctor's probe answer (with the marker found deep in the output) makes every ncu check skip."""
    from gpuprobe.ncu import runner
    from gpuprobe.tools import doctor
    from gpuprobe.tools.selftest.counters import counter_probe

    monkeypatch.setattr(runner, "_driver_restricts_profiling", lambda: None)
    monkeypatch.setattr(runner, "TEST_PROGRAM", CHATTY_PROGRAM)
    exe, _ = _stand_in_ncu(tmp_path / "bin", LIBRARY_NOT_LOADED)
    item = doctor._probe_counters(str(exe), True, True, 120)
    assert item.status == "failing" and item.data["probe_output"].startswith(LIBRARY_NOT_LOADED)
    folder = tmp_path / "checks" / "doctor"
    folder.mkdir(parents=True)
    (folder / "doctor.json").write_text(json.dumps({"items": [item.to_dict()]}))
    probe = counter_probe(_ctx(tmp_path))
    assert probe.status == "refused" and "LibraryNotLoaded" in probe.skip_reason()


# -- energy and MPS where the node lacks them ----------------------------------------------------------------

def test_energy_check_skips_on_a_node_without_the_energy_counter(tmp_path, monkeypatch):
    from test_doctor import fake_pynvml

    from gpuprobe.system import telemetry
    from gpuprobe.tools.selftest.checks import advisor

    monkeypatch.setattr(advisor, "require_cuda", lambda: None)
    monkeypatch.setattr(advisor, "_need_engine", lambda what: None)
    nvml = fake_pynvml(energy=False)
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=0, memory=0)
    monkeypatch.setattr(telemetry, "load_nvml", lambda: nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(Skip, match="no total-energy counter"):
        advisor.energy_per_token(_ctx(tmp_path))


def test_mps_check_skips_where_the_daemon_cannot_start(tmp_path, monkeypatch):
    from gpuprobe.specs import gpus
    from gpuprobe.tools.selftest.checks import advisor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text("#!/bin/sh\nexit 1\n")  # present, but no daemon starts
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(advisor, "require_cuda", lambda: None)
    monkeypatch.setattr(advisor, "_need_engine", lambda what: None)
    monkeypatch.setattr(gpus, "detect_gpu", lambda: None)
    with pytest.raises(Skip, match="MPS control daemon cannot start"):
        advisor.replicate_mps_cleanup(_ctx(tmp_path))


# -- ceilings: mma.sync a figure -----------------------------------------------------------------------------

def test_mma_sync_share_of_cublas_is_a_figure(tmp_path, monkeypatch):
    import gpuprobe.ceilings as ceilings
    from test_selftest_judges import _ceilings

    from gpuprobe.tools.selftest.checks import ceilings as check

    result = _ceilings(65.0, 1980.0, 1980.0)
    result.measurements["mma_bf16"].value = 300e12  # 38% of cuBLAS: a miss of the old 60% target
    monkeypatch.setattr(check, "require_cuda", lambda: None)
    monkeypatch.setattr(ceilings, "measure_ceilings", lambda log=None: result)
    monkeypatch.setattr(ceilings, "save_cached", lambda r: tmp_path / "cache.json")
    figures = check.ceilings(_ctx(tmp_path))
    assert figures["mma_bf16_vs_cublas"] == pytest.approx(300 / 788, abs=1e-3)
    assert figures["mma_vs_cublas_judged"] is False


# -- the fused batch-1 step ----------------------------------------------------------------------------------

def _b1_row(step_s: float) -> dict:
    return {"kernels": "fused", "attention": "triton", "step_latency_s": step_s, "step_latency_p90_s": step_s * 1.02,
            "tokens_per_s": 1 / step_s, "kernels_per_step": 270, "weights_bytes": 988_000_000,
            "eager_rel_diff": 0.004, "eager_argmax_equal": True}


@pytest.fixture
def b1_on_h200(monkeypatch):
    import torch

    from gpuprobe.measure import throughput
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.tools.selftest import targets
    from gpuprobe.tools.selftest.checks import engine_kernels as checks

    step = {"s": 0.9e-3}
    monkeypatch.setattr(checks, "require_cuda", lambda: torch)
    monkeypatch.setattr(checks, "_free", lambda torch: None)
    monkeypatch.setattr(throughput, "copy_bandwidth", lambda: (4.3e12, "measured"))
    monkeypatch.setattr(throughput, "measure_throughput_point", lambda *a, **k: _b1_row(step["s"]))
    monkeypatch.setattr(targets, "spec_here", lambda: get_gpu("h200"))
    monkeypatch.setitem(sys.modules, "gpuprobe.calibration", types.ModuleType("gpuprobe.calibration"))
    return step, checks


def test_fused_step_judged_against_the_per_gpu_target_without_a_calibration(tmp_path, b1_on_h200):
    """On the H200 (floor 0.23 ms) 2x the floor is out of reach; the per-GPU target (floor + 38.5 us a layer)
    is not; the ratio to the floor stays a figure."""
    step, checks = b1_on_h200
    fig = checks.throughput_b1_fused(_ctx(tmp_path))
    assert fig["b1_step_over_floor"] == pytest.approx(0.9 / 0.2298, abs=0.01) and fig["predicted_ms"] is None
    assert "no calibrated prediction" in fig["prediction_source"]
    (target,) = fig["targets"]
    assert target["met"] is True and "24 layers x 38.5 us" in target["target"]
    step["s"] = 2.5e-3  # an unfused-like step
    with pytest.raises(CheckFailed, match="fused batch-1 step: 2.5 ms against <= 1.154 ms"):
        checks.throughput_b1_fused(_ctx(tmp_path))


def test_fused_step_judged_against_the_calibrated_prediction(tmp_path, b1_on_h200, monkeypatch):
    step, checks = b1_on_h200
    cal = sys.modules["gpuprobe.calibration"]
    cal.shipped_calibration = lambda gpu, dtype: {"gpu": gpu, "dtype": dtype}
    cal.predict_decode_step = lambda spec, gpu_spec, batch, context, dtype, calibration, kernels="fused": \
        types.SimpleNamespace(floor_s=0.23e-3, predicted_s=0.8e-3, per_op={}, error_median=0.1)
    step["s"] = 1.0e-3  # within 0.8 ms x (1 + 3 x 10%) = 1.04 ms
    fig = checks.throughput_b1_fused(_ctx(tmp_path))
    assert fig["predicted_ms"] == 0.8 and "shipped calibration for h200" in fig["prediction_source"]
    step["s"] = 1.1e-3
    with pytest.raises(CheckFailed, match="calibrated prediction 0.800 ms"):
        checks.throughput_b1_fused(_ctx(tmp_path))


# -- the two-point roofline's fallback -----------------------------------------------------------------------

def test_an_ncu_point_out_of_time_is_told_from_other_failures(tmp_path):
    from gpuprobe.tools.selftest.checks.roofline import _fallback, ncu_ran_out

    assert ncu_ran_out({"status": "timeout", "reason": "over the 63 s limit"})
    assert ncu_ran_out({"status": "failed", "reason": "NcuError: the profiled command ran past --timeout 48 s"})
    assert not ncu_ran_out({"status": "failed", "reason": "NoKernelsProfiled: no kernel matched the filter"})
    assert not ncu_ran_out({"status": "oom", "reason": "CUDA out of memory"})
    for name in ("results.jsonl", "roofline.json", "report.md"):
        (tmp_path / name).write_text("{}")
    _fallback(tmp_path)
    assert sorted(p.name for p in (tmp_path / "ncu_attempt").iterdir()) == ["report.md", "results.jsonl",
                                                                              "roofline.json"]
    assert not (tmp_path / "results.jsonl").exists()


def test_the_measured_roofline_functions_are_found():
    from gpuprobe.tools.selftest.checks.roofline import measured

    mod = measured()
    assert callable(mod.measure_sweep) and callable(mod.make_points) and callable(mod.sweep_config)


def test_roofline_check_falls_back_to_timing_mode_when_an_ncu_point_runs_out(tmp_path, monkeypatch):
    """The check's path on a node where ncu reads counters but a point outruns its cost-sized limit: the ncu
    attempt is set aside, both points are measured again in timing mode (stand-in sweeps here: the points
    themselves need a GPU), and the outcome names what happened."""
    from gpuprobe.tools.selftest.checks import roofline

    calls = []

    def sweep(points, out, *, config, point_timeout_s, **kw):
        mode = config["mode"]
        calls.append((mode, point_timeout_s, [p.get("ncu_timeout_s") for p in points]))
        status = {"ncu": ("timeout", f"over the {point_timeout_s:g} s limit"), "timing": ("failed", "stand-in")}[mode]
        with open(out / "results.jsonl", "a") as f:
            for p in points:
                f.write(json.dumps({"point": p, "status": status[0], "reason": status[1], "result": None,
                                    "seconds": 1.0}) + "\n")
        return 1

    real = roofline.measured()
    monkeypatch.setattr(roofline, "measured", lambda: types.SimpleNamespace(
        make_points=real.make_points, sweep_config=real.sweep_config, measure_sweep=sweep))
    monkeypatch.setattr(roofline, "require_cuda", lambda: None)
    monkeypatch.setattr(roofline, "choose_mode", lambda ctx: ("ncu", "ncu 2025.3.1 read a counter"))
    ctx = _ctx(tmp_path)
    ctx.budget_s = roofline.needed_budget_s()
    with pytest.raises(CheckFailed) as e:
        roofline.roofline_two_points(ctx)
    point_s, ncu_s = roofline.limits(ctx.budget_s)
    assert calls[0] == ("ncu", point_s, [ncu_s, ncu_s]) and calls[1][0] == "timing"
    assert roofline.TIMING_POINT_S <= calls[1][1] <= roofline.TIMING_POINT_LIMIT_S
    fig = e.value.figures
    assert fig["mode"] == "timing" and fig["ncu_ran_out"].startswith("batch 1: timeout")
    assert "fallback" in fig["mode_reason"]
    assert (ctx.out_dir / "ncu_attempt" / "results.jsonl").is_file()  # the ncu attempt's records kept
    assert (ctx.out_dir / "roofline.json").is_file() and (ctx.out_dir / "results.jsonl").is_file()
    records = [json.loads(x) for x in (ctx.out_dir / "results.jsonl").read_text().splitlines()]
    assert {r["point"]["mode"] for r in records} == {"timing"}
