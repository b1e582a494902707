"""The real point worker as Slurm jobs, in ncu mode under the project's stand-in ncu (tests/_fake_ncu.py: it runs
the real target program and replays a real H100 report): a node that grants counters gives the ncu record;
a node that refuses them (ERR_NVGPUCTRPERM, as recorded from a real ncu) falls back to timing mode for that
point and says so in its record."""
from __future__ import annotations

import json

import _fake_ncu
from _ncu_data import B32_REP, NCU
from gpuprobe.measure.executors import SlurmExecutor, SlurmSettings
from gpuprobe.measure.sweep import Sweep, run_sweeps
from gpuprobe.run.measured import WORKERS
from gpuprobe.run.plan import make_points

pytest_plugins = ("slurm_cluster",)  # its fixtures: one test Slurm for the session

TINY = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def test_ncu_points_as_jobs_and_the_fallback_of_a_node_without_counters(slurm, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # PyTorch's ops on the CPU: fast points
    model = tmp_path / "tiny-qwen2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    log = _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP)
    sweeps = []
    for name, ncu_mode in (("granted", "ok"), ("refused", "perm")):
        out = tmp_path / name
        points = make_points(str(model), [2], context=16, dtype="fp32", attention="torch", mode="ncu", layers="one",
                             out_dir=out, graph_iters=2, ncu_timeout_s=120)
        sweeps.append(Sweep(points=points, worker=WORKERS["ncu"], out=out, timeout_s=300,
                            env={"FAKE_NCU_MODE": ncu_mode}, name=name))
    (granted,), (refused,) = run_sweeps(sweeps, executor=SlurmExecutor(SlurmSettings(poll_s=0.3)), progress=False)
    assert granted["status"] == "ok", granted["reason"]
    res = granted["result"]
    assert res["mode"] == "ncu" and "fallback" not in res
    ops = {o["op"] for o in res["ncu"]["ops"]}
    assert {"qkv_proj", "attention", "o_proj", "mlp"} <= ops and res["ncu"]["ncu"]["version"] == "2025.3.1.0"
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    assert [c["target_rc"] for c in calls if "target" in c] == [0]  # the real target ran under ncu, in the job
    assert granted["job"]["job_id"] and refused["job"]["job_id"]
    # the refusing node: the point is measured in timing mode, and its record says so and why
    assert refused["status"] == "ok", refused["reason"]
    res = refused["result"]
    assert refused["point"]["mode"] == "ncu" and res["mode"] == "timing" and "ncu" not in res
    fb = res["fallback"]
    assert fb["requested_mode"] == "ncu" and fb["mode"] == "timing" and fb["node"]
    assert "ERR_NVGPUCTRPERM" in fb["reason"]
    assert set(res["timing"]["per_op_s"]) >= {"qkv_proj", "attention", "lm_head"}


def test_which_ncu_failures_are_a_refusal_of_the_counters():
    from gpuprobe.measure.point import counters_refused
    from gpuprobe.ncu.runner import PERMISSION_FIX, CounterPermissionError, NcuError

    assert counters_refused(CounterPermissionError(PERMISSION_FIX))
    # gVisor (docs/contracts.md section 7): ncu's own words, through the runner's NcuError
    assert counters_refused(NcuError("the profiled command failed under ncu (exit status 1); last output:\n"
                                     "==ERROR== Failed to initialize the profiler: LibraryNotLoaded"))
    assert not counters_refused(NcuError("the profiled command failed under ncu (exit status 9)"))
