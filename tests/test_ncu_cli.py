"""`gpuprobe report` on every shared fixture, and the profile command's faults without ncu."""
from __future__ import annotations

import json

import pytest

from _ncu_data import B32_BASE, B32_REP, B32_SOL, B64_DETAILS, B64_RAW, path
from gpuprobe.cli import main


@pytest.mark.parametrize("name", [B64_RAW, B64_DETAILS, B32_BASE, B32_REP, B32_SOL])
def test_report_table(name, capsys):
    assert main(["report", str(path(name))]) == 0
    out = capsys.readouterr().out
    for op in ("qkv_proj", "attention", "o_proj", "mlp"):
        assert op in out


def test_report_json_contract(capsys, tmp_path):
    assert main(["report", str(path(B64_RAW)), "--json", "--out", str(tmp_path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1 and d["mode"] == "ncu" and d["model"] is None
    assert {r["source"] for r in d["roofs"]} >= {"datasheet", "ncu_peak"}
    pts = {p["op"]: p for p in d["points"]}
    assert list(pts) == ["qkv_proj", "attention", "o_proj", "mlp"]
    a = pts["attention"]
    assert a["flops"] == a["flops_executed"] and a["flops_useful"] is None
    assert a["dram_read_bytes"] == 67_384_064 and a["dram_write_bytes"] > 0
    assert a["bound"] == "memory" and a["limiter"] == "memory" and a["n_kernels"] == 2 and a["layers_profiled"] == 2
    assert len(a["kernels"]) == 2 and d["limiter_rule"]["threshold_pct"] == 60
    assert (tmp_path / "roofline.json").exists() and (tmp_path / "roofline.csv").exists()
    from gpuprobe.roofline.schema import RooflineResult

    assert RooflineResult.from_json(tmp_path / "roofline.json").points[1].op == "attention"


def test_report_json_keeps_missing_counters_null(capsys):
    assert main(["report", str(path(B32_BASE)), "--json", "--by", "kernel"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["points"]) == 10
    assert all(p["flops"] is None and p["bound"] is None for p in d["points"])
    assert all(p["dram_bytes"] > 0 for p in d["points"])


def test_report_plot(tmp_path):
    png = tmp_path / "roofline.png"
    assert main(["report", str(path(B64_RAW)), "--plot", str(png), "--measured-dram-tbps", "3.01"]) == 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_report_bad_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "empty.ncu-rep"
    bad.write_bytes(b"")
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty.ncu-rep" in err and len(err.splitlines()) == 1
    assert main(["report", str(tmp_path / "missing.csv")]) == 2


def test_profile_without_ncu_says_how_to_get_it(monkeypatch, capsys):
    from gpuprobe.ncu import runner

    monkeypatch.setattr(runner, "find_ncu", lambda: None)
    assert main(["profile", "--", "python", "-c", "pass"]) == 2
    err = capsys.readouterr().err
    assert "Nsight Compute is not installed" in err and "gpuprobe report" in err
    assert main(["profile", "--nvtx-include", "decode/layer0", "--", "python", "x.py"]) == 2
    assert "trailing slash" in capsys.readouterr().err
