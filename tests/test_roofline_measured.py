"""The measured roofline's orchestration on a CPU machine, driven by recorded real H100 results.

The sweep's measuring step is replaced by ``tests/fixtures/measured/replay_worker.py``, which returns
recorded points (see that folder's README); everything else (child processes, results.jsonl, resume,
failures, Ctrl-C, assembly, figures, report.md) is the real code. The real worker runs too, on the
CPU in timing mode with a tiny model.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.roofline.schema import RooflineResult
from gpuprobe.specs.gpus import get_gpu
from gpuprobe.specs.models import get_model
from gpuprobe.measure.sweep import read_results

MEASURED = Path(__file__).resolve().parent / "fixtures" / "measured"
SPEC, GPU = get_model("qwen2-0.5b"), get_gpu("h100-sxm")
COPY_BW = 3.01e12  # the copy bandwidth measured on the same H100 (shared reference measurements)
TINY_CONFIG = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
               "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256,
               "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
               "tie_word_embeddings": True}


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture
def replay_env(monkeypatch):
    """Child processes import the replay worker and read the recorded timing sweep."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(MEASURED), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("GPUPROBE_REPLAY", str(MEASURED / "timing" / "results.jsonl"))
    monkeypatch.delenv("GPUPROBE_REPLAY_FAIL", raising=False)
    monkeypatch.delenv("GPUPROBE_REPLAY_SLEEP", raising=False)
    return monkeypatch


def _sweep(out: Path, batches, *, resume=False, mode="timing"):
    from gpuprobe.run.measured import measure_sweep
    from gpuprobe.run.plan import make_points, sweep_config

    config = sweep_config("qwen2-0.5b", context=1024, dtype="bf16", attention=None, mode=mode, layers="one",
                          batches=batches)
    points = make_points("qwen2-0.5b", batches, context=1024, dtype="bf16", attention=None, mode=mode,
                         layers="one", out_dir=out)
    return measure_sweep(points, out, spec=SPEC, gpu=GPU, dtype="bf16", config=config, resume=resume,
                         worker="replay_worker:replay", copy_bw=COPY_BW, copy_source="test", progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


# ---- the sweep ---------------------------------------------------------------------------------------
def test_sweep_of_recorded_points_writes_every_output(tmp_path, replay_env, capsys):
    rc = _sweep(tmp_path, [1, 64, 512])
    assert rc == 0
    recs = _lines(tmp_path / "results.jsonl")
    assert [r["point"]["batch"] for r in recs] == [1, 64, 512] and all(r["status"] == "ok" for r in recs)
    for name in ("roofline.json", "roofline.csv", "roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png",
                 "throughput.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 500, name
    res = RooflineResult.from_json(tmp_path / "roofline.json")
    assert res.mode == "timing" and res.batch == [1, 64, 512] and res.context == 1024
    att = {p.batch: p for p in res.points if p.op == "attention"}
    # the reference table's own figure at batch 512: 95% of the copy bandwidth
    assert att[512].dram_pct_of_measured == pytest.approx(95, abs=1.5)
    assert att[512].limiter == "memory" and att[1].limiter == "latency"
    assert all(p.flops_executed is None and p.flops == p.flops_useful for p in res.points)
    captured = capsys.readouterr()
    assert "attention: DRAM 95% of peak" in captured.err and "memory-bound" in captured.err
    assert "sweep wall time" in captured.err
    assert captured.out.splitlines()[0].startswith("op\tbatch\ttime_s")  # stdout: the table alone


def test_failed_point_costs_that_point_only(tmp_path, replay_env):
    replay_env.setenv("GPUPROBE_REPLAY_FAIL", "64:torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB")
    assert _sweep(tmp_path, [1, 64, 512]) == 0
    status = {r["point"]["batch"]: r["status"] for r in _lines(tmp_path / "results.jsonl")}
    assert status == {1: "ok", 64: "oom", 512: "ok"}
    data = json.loads((tmp_path / "roofline.json").read_text())
    assert data["batch"] == [1, 512]
    assert data["failed_points"][0]["batch"] == 64 and "out of memory" in data["failed_points"][0]["reason"]
    assert "## Points that did not finish" in (tmp_path / "report.md").read_text()


def test_resume_runs_only_unfinished_points(tmp_path, replay_env):
    replay_env.setenv("GPUPROBE_REPLAY_FAIL", "64:RuntimeError: ncu exit status 9")
    _sweep(tmp_path, [1, 64, 512])
    first = _lines(tmp_path / "results.jsonl")
    replay_env.delenv("GPUPROBE_REPLAY_FAIL")
    assert _sweep(tmp_path, [1, 64, 512], resume=True) == 0
    after = _lines(tmp_path / "results.jsonl")
    assert after[:3] == first and len(after) == 4  # only batch 64 ran again
    assert after[3]["point"]["batch"] == 64 and after[3]["status"] == "ok"
    assert json.loads((tmp_path / "roofline.json").read_text())["batch"] == [1, 64, 512]


def test_all_points_failing_exits_1(tmp_path, replay_env, capsys):
    replay_env.setenv("GPUPROBE_REPLAY_FAIL", "1:boom;8:boom")
    assert _sweep(tmp_path, [1, 8]) == 1
    assert "no point finished" in capsys.readouterr().err
    assert not (tmp_path / "roofline.json").exists()


def test_ctrl_c_between_points_keeps_finished_points(tmp_path, replay_env):
    replay_env.setenv("GPUPROBE_REPLAY_SLEEP", "0.8")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_roofline_measured import _sweep
        sys.exit(_sweep(Path({str(tmp_path)!r}), [1, 8, 64, 512]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    results = tmp_path / "results.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "--resume" in out
    done = _lines(results)
    assert 1 <= len(done) < 4 and all(r["status"] == "ok" for r in done)
    data = json.loads((tmp_path / "roofline.json").read_text())  # outputs of what finished
    assert data["batch"] == [r["point"]["batch"] for r in done] and data["sweep"]["interrupted"] is True
    assert _sweep(tmp_path, [1, 8, 64, 512], resume=True) == 0
    assert sorted(r["point"]["batch"] for r in _lines(results)) == [1, 8, 64, 512]


# ---- ncu records: assembly and cross-checks --------------------------------------------------------
def _ncu_result():
    from gpuprobe.roofline.assemble import assemble_result

    return assemble_result(read_results(MEASURED / "ncu" / "results.jsonl"), spec=SPEC, gpu=GPU, dtype="bf16",
                           copy_bw=COPY_BW, copy_source="test")


def test_ncu_records_assemble_to_the_contract(tmp_path):
    res = _ncu_result()
    assert res.mode == "ncu" and res.batch == [32, 64] and res.context is None  # two contexts recorded
    assert res.limiter_rule["threshold_pct"] == 60.0
    assert {r.source for r in res.roofs if r.name == "dram"} == {"datasheet", "measured", "ncu_peak"}
    assert res.ceilings.dram_source == "measured"
    att = {p.batch: p for p in res.points if p.op == "attention"}
    a = att[64]
    assert a.scaled and a.layers_profiled == 2 and a.n_kernels == 2
    # two layers' attention reads (33.69 MB each) scaled to 24 layers
    assert a.dram_read_bytes == pytest.approx((33692416 + 33691648) * 12)
    assert a.flops_useful == pytest.approx(4 * 64 * 14 * 1024 * 64 * 24)
    assert a.flops_executed / a.flops_useful == pytest.approx(2.35, abs=0.01)  # cuDNN pads the GQA group
    assert a.flops == a.flops_executed
    assert a.dram_pct_of_measured == pytest.approx(a.dram_bytes / a.time_s / COPY_BW * 100)
    assert a.limiter == "memory" and a.bound == "memory" and a.sm_pct < 15
    assert att[32].flops_executed is None and att[32].extra["flops_source"].startswith("analytic")
    jpath, _ = res.write(tmp_path)
    back = RooflineResult.from_json(jpath)
    assert back.to_dict()["points"] == json.loads(json.dumps(res.to_dict()["points"]))
    assert json.loads(jpath.read_text())["limiter_rule"]["threshold_pct"] == 60.0


def test_ncu_crosschecks_match_the_ratios_seen_on_the_h100():
    checks = {(c["name"], c["op"], c["batch"]): c for c in _ncu_result().extra["crosschecks"]}
    assert checks[("attention_dram_read", "attention", 64)]["ratio"] == pytest.approx(1.004, abs=0.001)
    assert checks[("attention_dram_read", "attention", 32)]["ratio"] == pytest.approx(1.009, abs=0.001)
    assert not checks[("attention_dram_read", "attention", 64)]["flagged"]
    assert checks[("gemm_flops", "qkv_proj", 64)]["ratio"] == pytest.approx(1.00, abs=0.005)
    assert checks[("gemm_flops", "mlp", 64)]["ratio"] == pytest.approx(1.075, abs=0.005)
    assert checks[("attention_dram_write", "attention", 64)]["flagged"]  # L2 write-backs: flagged, not hidden
    assert checks[("gemm_flops", "o_proj", 32)]["flagged"] and checks[("gemm_flops", "o_proj", 32)]["ratio"] is None


def test_ncu_report_md_from_recorded_results(tmp_path):
    from gpuprobe.render.outputs import write_outputs

    files = write_outputs(_ncu_result(), tmp_path)
    assert "throughput" not in files  # no step times were recorded with these reports
    md = files["report"].read_text()
    assert "attention: DRAM 69% of peak, SM 11%, tensor 5%, at batch 64: memory-bound" in md
    assert "Holds in this run" in md
    assert "| attention_dram_read | attention | 64 |" in md and "1.004" in md and "**FLAGGED**" in md
    assert "`--cache-control all` (caches flushed before each kernel: DRAM bytes are cold-cache figures)" in md
    assert "Nsight Compute: 2025.3.1" in md and "driver: 580.159.04" in md
    for fig in ("bandwidth_vs_batch.png", "roofline.png", "time_breakdown.png"):
        assert f"]({fig})" in md and (tmp_path / fig).exists()


def test_summarize_report_and_recorded_records_agree():
    """results.jsonl was made from the CSVs by today's summarize_report (guards against drift)."""
    from gpuprobe.measure.point import summarize_report
    from gpuprobe.ncu import load_ncu_report

    recs = {r["result"]["batch"]: r["result"]["ncu"] for r in read_results(MEASURED / "ncu" / "results.jsonl")}
    for name, batch in (("ncu_b32_c512_layer0.csv", 32), ("ncu_b64_c1024_2layers.csv", 64)):
        s = json.loads(json.dumps(summarize_report(load_ncu_report(MEASURED / name), 24)))
        assert s["ops"] == recs[batch]["ops"] and s["peaks"] == recs[batch]["peaks"]
    ops = {o["op"]: o for o in recs[32]["ops"]}
    assert ops["attention"]["layers_profiled"] == 1 and ops["attention"]["scaled"]
    assert ops["attention"]["dram_read_bytes"] == 8467456 * 24
    assert ops["mlp"]["n_kernels"] == 6


# ---- planning ----------------------------------------------------------------------------------------
def test_choose_measured_mode():
    from gpuprobe.run.plan import choose_measured_mode

    assert choose_measured_mode("auto", (True, "ncu 2025.3.1 can read the counters"))[0] == "ncu"
    mode, why = choose_measured_mode("auto", (False, "Nsight Compute is not installed"))
    assert mode == "timing" and "not installed" in why
    assert choose_measured_mode("timing", (True, "ok"))[0] == "timing"
    with pytest.raises(NotAvailable, match="--mode ncu needs Nsight Compute"):
        choose_measured_mode("ncu", (False, "ERR_NVGPUCTRPERM"))


def test_plan_batches_cuts_the_default_list_at_what_fits():
    from gpuprobe.analytic import max_batch_that_fits
    from gpuprobe.run.options import DEFAULT_BATCHES
    from gpuprobe.run.plan import plan_batches

    kept, note = plan_batches(DEFAULT_BATCHES, SPEC, GPU, 1024, "bf16", explicit=False)
    assert kept == list(DEFAULT_BATCHES) and note is None
    big = get_model("qwen2-7b")
    fits = max_batch_that_fits(big, GPU, 32768, "bf16")
    kept, note = plan_batches(DEFAULT_BATCHES, big, GPU, 32768, "bf16", explicit=False)
    assert kept[-1] == fits and all(b <= fits for b in kept) and str(fits) in note
    assert plan_batches([1, 4096], big, GPU, 32768, "bf16", explicit=True)[0] == [1, 4096]


def test_resume_with_other_settings_is_refused(tmp_path):
    from gpuprobe.run.plan import SWEEP_FILE, check_resume, sweep_config

    cfg = sweep_config("qwen2-0.5b", context=1024, dtype="bf16", attention=None, mode="ncu", layers="one",
                       batches=[1, 2])
    (tmp_path / SWEEP_FILE).write_text(json.dumps(cfg))
    check_resume(tmp_path, {**cfg, "batches": [1, 2, 4]})  # more batches: fine
    with pytest.raises(UserError, match="context 1024 there, 2048 now"):
        check_resume(tmp_path, {**cfg, "context": 2048})
    with pytest.raises(UserError, match="no sweep there"):
        check_resume(tmp_path / "nothing", cfg)


def test_nvtx_filters_select_one_layer_and_lm_head():
    from gpuprobe.measure.point import nvtx_includes, target_command
    from gpuprobe.ncu.nvtx_filter import check_expression

    assert nvtx_includes("one", 24) == ["decode/layer12/", "decode/lm_head/"]
    assert nvtx_includes("all", 24) == ["decode/"]
    for e in nvtx_includes("one", 24):
        assert check_expression(e) == e
    cmd = target_command("qwen2-0.5b", 64, 1024, "bf16", "triton", "one", 3)
    assert cmd[1:3] == ["-m", "gpuprobe.measure.target"] and cmd[cmd.index("--attention") + 1] == "triton"


# ---- the real worker and target, on the CPU ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-qwen2")
    (d / "config.json").write_text(json.dumps(TINY_CONFIG))
    return d


def test_target_annotates_only_the_profiled_layer(tiny_model):
    """The profiled step's ranges: decode/ + every op of the representative layer + the step ops; the ncu
    filters of the point match exactly those ranges, and the warm-up steps push none."""
    from gpuprobe.engine.nvtx import RecordingBackend, use_backend
    from gpuprobe.measure.point import nvtx_includes
    from gpuprobe.measure.target import main
    from gpuprobe.ncu.nvtx_filter import stack_matches

    with use_backend(RecordingBackend()) as rec:
        assert main(["--model", str(tiny_model), "--batch", "2", "--context", "16", "--dtype", "fp32",
                     "--attention", "torch", "--warmup", "2"]) == 0
    assert rec.balanced
    paths = set(rec.paths)
    assert "decode/layer1/attention/" in paths and "decode/lm_head/" in paths
    assert not any(p.startswith(("decode/layer0/", "decode/layer2/")) for p in paths)
    stacks = [p.rstrip("/").split("/") for p in paths]
    selected = {"/".join(s) + "/" for s in stacks if any(stack_matches(e, s) for e in nvtx_includes("one", 3))}
    assert selected == {p for p in paths if p.startswith("decode/layer1/") or p == "decode/lm_head/"}
    assert {p.split("/")[2] for p in selected if p.count("/") == 3} >= {"qkv_proj", "attention", "o_proj",
                                                                       "gate_up_proj", "down_proj"}


def test_real_worker_in_timing_mode_on_the_cpu(tmp_path, tiny_model, capsys):
    """One point through the real worker in a child process, then assembly and every output."""
    from gpuprobe.run.measured import measure_sweep
    from gpuprobe.run.plan import make_points, sweep_config
    from gpuprobe.specs.models import load_model_spec

    spec = load_model_spec(tiny_model)
    config = sweep_config(str(tiny_model), context=16, dtype="fp32", attention="torch", mode="timing",
                          layers="one", batches=[2])
    points = make_points(str(tiny_model), [2], context=16, dtype="fp32", attention="torch", mode="timing",
                         layers="one", out_dir=tmp_path)
    rc = measure_sweep(points, tmp_path, spec=spec, gpu=GPU, dtype="fp32", config=config, copy_bw=COPY_BW,
                       copy_source="test", progress=False)
    assert rc == 0, (tmp_path / "logs" / "point0.log").read_text()
    rec = _lines(tmp_path / "results.jsonl")[0]
    assert rec["status"] == "ok"
    res = rec["result"]
    assert res["attention"] == "torch"
    if _cuda():
        assert res["graph"]["tokens_per_s"] > 0
    else:
        assert res["graph"] is None  # no CUDA graphs on a CPU
        assert res["telemetry"]["throttled"] is False and res["telemetry"]["before"]["available"] is False
    assert set(res["timing"]["per_op_s"]) >= {"embed", "qkv_proj", "attention", "lm_head", "sample"}
    assert res["memory"]["kv_cache_bytes"] > 0
    data = json.loads((tmp_path / "roofline.json").read_text())
    assert data["mode"] == "timing" and {p["op"] for p in data["points"]} >= {"attention", "lm_head"}
    assert (tmp_path / "report.md").exists() and (tmp_path / "throughput.png").exists()


# ---- the CLI without a GPU ---------------------------------------------------------------------------
@pytest.mark.skipif(_cuda(), reason="this machine has a GPU")
def test_cli_ncu_mode_without_gpu_is_one_line_exit_2(tmp_path):
    mode = "ncu"
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--model", "qwen2-0.5b", "--mode", mode,
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--mode {mode} needs a CUDA GPU" in lines[0]


@pytest.mark.gpu
def test_two_point_sweep_end_to_end_on_the_gpu(tmp_path):
    """Device: batch 1 and 64 of qwen2-0.5b through the CLI in timing mode (about 30 s).

    The ncu-mode sweep is the selftest check ``roofline_two_points``; running it here as well would
    spend two to three minutes of the ``gpu_tests`` check's budget on the same claim."""
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--model", "qwen2-0.5b", "--batch", "1,64",
                        "--context", "512", "--mode", "timing", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads((tmp_path / "roofline.json").read_text())
    assert data["mode"] == "timing" and data["batch"] == [1, 64]
    att = {p["batch"]: p for p in data["points"] if p["op"] == "attention"}
    assert att[64]["dram_pct_of_measured"] > att[1]["dram_pct_of_measured"]
    for name in ("roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png", "report.md"):
        assert (tmp_path / name).exists(), name


def test_selftest_limits_fit_the_budget():
    """roofline_two_points: ncu stops before the sweep's per-point limit (ncu runs in its own process
    group, which that limit does not reach), and one point never gets more than the budget leaves."""
    from gpuprobe.tools.selftest.checks.roofline import OVERHEAD_S, limits
    from gpuprobe.tools.selftest.registry import all_checks

    budget = all_checks()["roofline_two_points"].budget_s
    assert budget <= 180
    for b in (budget, 120.0, 60.0):
        point, ncu = limits(b)
        assert ncu <= point - 15 and point <= max(30.0, b - OVERHEAD_S)
    points = __import__("gpuprobe.run.plan", fromlist=["make_points"]).make_points(
        "qwen2-0.5b", [1], context=8, dtype="bf16", attention=None, mode="ncu", layers="one", out_dir=".",
        keep_reports=False, ncu_timeout_s=40, graph_iters=5)
    assert points[0]["ncu_timeout_s"] == 40.0 and points[0]["graph_iters"] == 5 and points[0]["keep_report"] is False


def test_selftest_skips_without_ncu(monkeypatch):
    from gpuprobe.ncu import runner
    from gpuprobe.tools.selftest.checks.roofline import ncu_usable

    monkeypatch.setattr(runner, "find_ncu", lambda: None)
    assert ncu_usable() == (False, "ncu is not installed")
    monkeypatch.setattr(runner, "find_ncu", lambda: runner.NcuInstall(Path("/x/ncu"), "2025.3.1.0"))
    monkeypatch.setattr(runner, "_driver_restricts_profiling", lambda: None)
    ok, why = ncu_usable()
    assert ok and "2025.3.1.0" in why
