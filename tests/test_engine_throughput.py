"""The throughput sweep: worker, rows, files, plot, the CLI on a CPU, and the engine's selftest checks."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from engine_helpers import assert_checks_skip_without_cuda, save_hf  # noqa: E402
from gpuprobe.cli import main  # noqa: E402
from gpuprobe.measure.throughput import COLUMNS, measure_throughput_point, rows_from_records  # noqa: E402
from gpuprobe.render.throughput import write_results  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_hf("qwen2", tmp_path_factory.mktemp("tinyq"))


def test_measure_point_on_cpu(tiny_dir):
    row = measure_throughput_point(str(tiny_dir), batch=3, context=20, attention="torch", dtype="fp32", steps=3,
                                   warmup=1, graphs=True, device="cpu", page_size=8)
    assert set(COLUMNS) <= set(row)
    assert row["status"] == "ok" and row["mode"] == "eager"  # no graphs on a CPU, and the row says so
    assert row["tokens_per_s"] == pytest.approx(3 / row["step_latency_s"])
    assert row["step_latency_p90_s"] >= row["step_latency_s"] > 0
    assert row["kv_cache_bytes"] == 3 * 3 * 8 * 2 * 2 * 2 * 16 * 4  # 3 seqs x 3 pages x 8 slots x (L, K/V, Hkv, D) fp32
    assert row["weights_bytes"] > 0 and row["peak_memory_bytes"] is None and row["dtype"] == "fp32"


def test_rows_keep_failed_batches_and_plot(tmp_path):
    ok = {"point": {"batch": 1, "graphs": True}, "status": "ok", "reason": None,
          "result": {"batch": 1, "tokens_per_s": 100.0, "step_latency_s": 0.01, "step_latency_p90_s": 0.011,
                     "status": "ok", "mode": "graph", "model": "m", "context": 8, "dtype": "bf16",
                     "attention": "triton"}}
    oom = {"point": {"batch": 4096, "graphs": True, "model": "m", "context": 8, "dtype": "bf16",
                     "attention": "triton"},
           "status": "oom", "reason": "torch.OutOfMemoryError: CUDA out of memory", "result": None}
    rows = rows_from_records([oom, ok])
    assert [r["batch"] for r in rows] == [1, 4096]
    assert rows[1]["status"] == "oom" and rows[1]["tokens_per_s"] is None and rows[1]["mode"] == "graph"
    paths = write_results(rows, tmp_path, {"model": "m"})
    df = pd.read_csv(paths["csv"])
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS) and list(df["status"]) == ["ok", "oom"]
    assert json.loads(paths["json"].read_text())["rows"][1]["reason"].startswith("torch.OutOfMemoryError")
    assert paths["png"].stat().st_size > 1000


def test_cli_on_cpu_writes_files_and_resumes(tiny_dir, tmp_path, capsys):
    out = tmp_path / "tp"
    args = ["throughput", "--device", "cpu", "--model", str(tiny_dir), "--batch", "1,2", "--context", "12",
            "--steps", "2", "--warmup", "1", "--dtype", "fp32", "--inline"]
    assert main(args + ["--out", str(out)]) == 0
    for name in ("throughput.csv", "throughput.json", "results.jsonl", "throughput.png"):
        assert (out / name).is_file()
    df = pd.read_csv(out / "throughput.csv")
    assert list(df["batch"]) == [1, 2] and set(df["status"]) == {"ok"} and set(df["mode"]) == {"eager"}
    lines = (out / "results.jsonl").read_text().splitlines()
    assert main(args + ["--resume", str(out)]) == 0  # nothing left to run
    assert (out / "results.jsonl").read_text().splitlines() == lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_without_gpu_says_so_in_one_line(capsys):
    assert main(["throughput", "--model", "qwen2-0.5b"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA GPU" in err and "gpuprobe roofline" in err


def test_cli_bad_input_is_one_line(tiny_dir, capsys):
    assert main(["throughput", "--device", "cpu", "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["throughput", "--device", "cpu", "--model", str(tiny_dir), "--batch", "1,x"]) == 2
    assert "batch" in capsys.readouterr().err


# ---- selftest checks ----------------------------------------------------------------------------
def test_engine_checks_registered_and_skip_without_gpu(tmp_path):
    from gpuprobe.tools.selftest.checks import engine as checks
    from gpuprobe.tools.selftest.registry import all_checks

    registered = all_checks()
    assert registered["graph_vs_eager_tokens"].owner == "engine"
    assert registered["throughput_b1_b256"].owner == "engine"
    assert_checks_skip_without_cuda(tmp_path, checks.graph_vs_eager_tokens, checks.throughput_b1_b256)


def test_check_helpers():
    from gpuprobe.tools.selftest.checks.engine import compare_tokens, ragged_prompts, weight_read_floor_s

    assert compare_tokens([[1, 2], [3]], [[1, 2], [3]])["match"]
    got = compare_tokens([[1, 2], [3, 4]], [[1, 2], [3, 5]])
    assert not got["match"] and got["first_mismatch"] == (1, 1) and got["equal"] == 3
    # the reference H100 figures: ~0.99 GB of weights at 3.01 TB/s -> 0.33 ms
    assert weight_read_floor_s(988_065_536, 3.01e12) == pytest.approx(3.28e-4, rel=1e-2)
    prompts = ragged_prompts(100)
    assert [len(p) for p in prompts] == [5, 17, 33, 64] and max(max(p) for p in prompts) < 100


def test_throughput_check_body_on_cpu(tiny_dir, tmp_path, monkeypatch):
    """The check's body end to end on a CPU (tiny model, eager): its figures and evidence file, the
    unfused floor ratio recorded as a figure (never judged against 2x), a step faster than the floor
    failed, and a profiler that cannot start (no CUDA here) reported rather than fatal."""
    import json

    from engine_helpers import engine_checks_on_cpu
    from gpuprobe.measure import throughput as tp
    from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed

    checks = engine_checks_on_cpu(monkeypatch, tiny_dir, 1e15)  # floor ~0: far above 2x, still a pass
    ctx = CheckContext(out_dir=tmp_path, gpu=True, budget_s=60)
    fig = checks.throughput_b1_b256(ctx)
    assert fig["b1_unfused_step_over_floor"] > checks.FLOOR_FACTOR_TARGET and fig["copy_bandwidth_source"] == "test figure"
    assert fig["kernels_per_step"] is None and fig["kernels_per_step_error"]  # torch.cuda.* raises on a CPU
    assert fig["b1_op_shares_eager"] and sum(fig["b1_op_shares_eager"].values()) <= 1.0 + 1e-6
    saved = json.loads((tmp_path / "throughput_b1_b256.json").read_text())
    assert set(saved) == {"figures", "rows"} and saved["rows"]["256"]["batch"] == 256
    monkeypatch.setattr(tp, "copy_bandwidth", lambda: (1.0, "test figure"))  # floor huge: faster than possible
    with pytest.raises(CheckFailed, match="cannot have read its weights") as err:
        checks.throughput_b1_b256(ctx)
    assert err.value.figures["b1_unfused_step_over_floor"] < 1