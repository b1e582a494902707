"""One path from a per-op table to roofline points: the same real H100 report through `gpuprobe report`
and through the sweep (the worker in ncu mode under the stand-in ncu, its record through results.jsonl's
JSON form, then the sweep's assembly) gives the same points."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import _fake_ncu
from _ncu_data import B32_REP, NCU, path
from gpuprobe.cli import main
from gpuprobe.specs.gpus import get_gpu

# one layer, so that the recorded report (layer 0 of qwen2-0.5b) is the whole step for both paths
ONE_LAYER = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 256, "max_position_embeddings": 512,
             "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
COPY_BW = 3.01e12
COMPARED = ("op", "time_s", "dram_bytes", "dram_read_bytes", "dram_write_bytes", "flops_executed",
            "dram_pct_of_measured", "dram_pct_of_ncu_peak", "sm_pct", "tensor_pct", "limiter", "n_kernels",
            "layers_profiled", "scaled")


def _report_points(capsys) -> list[dict]:
    assert main(["report", str(path(B32_REP)), "--json", "--gpu", "h100-sxm", "--dtype", "fp32",
                 "--measured-dram-tbps", str(COPY_BW / 1e12)]) == 0
    return json.loads(capsys.readouterr().out)["points"]


def _sweep_points(tmp_path: Path, monkeypatch) -> list[dict]:
    from gpuprobe.measure.point import measure_point
    from gpuprobe.roofline.assemble import assemble_result
    from gpuprobe.specs.models import load_model_spec

    model = tmp_path / "one-layer"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(ONE_LAYER))
    _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP)
    point = {"model": str(model), "batch": 2, "context": 16, "dtype": "fp32", "attention": "torch", "mode": "ncu",
             "out_dir": str(tmp_path / "out"), "warmup": 1, "graph_iters": 2, "ncu_timeout_s": 120}
    result = measure_point(**point)
    record = json.loads(json.dumps({"point": point, "status": "ok", "result": result}))  # as in results.jsonl
    res = assemble_result([record], spec=load_model_spec(model), gpu=get_gpu("h100-sxm"), dtype="fp32",
                          copy_bw=COPY_BW, copy_source="test")
    return json.loads(json.dumps(res.to_dict()))["points"]


def test_report_and_sweep_give_identical_points(tmp_path, monkeypatch, capsys):
    sweep = _sweep_points(tmp_path, monkeypatch)
    capsys.readouterr()
    report = _report_points(capsys)
    assert [p["op"] for p in report] == ["qkv_proj", "attention", "o_proj", "mlp"]
    assert [{k: p[k] for k in COMPARED} for p in sweep] == [{k: p[k] for k in COMPARED} for p in report]
    att = next(p for p in report if p["op"] == "attention")
    assert att["dram_pct_of_measured"] == pytest.approx(att["dram_bytes"] / att["time_s"] / COPY_BW * 100)
    assert att["limiter"] in ("memory", "latency") and att["n_kernels"] == 1
    # the sweep adds what only it knows (analytic FLOPs, event times), never a second opinion on the above
    assert all(p["flops_useful"] is not None for p in sweep)
    assert {k["kernel_short"] for p in sweep for k in p["kernels"]} == \
        {k["kernel_short"] for p in report for k in p["kernels"]}
