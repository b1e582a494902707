"""The ncu code paths end to end on a CPU, with a fake ``ncu`` that runs the real target program and
replays real H100 output (tests/_fake_ncu.py): the roofline worker in ncu mode, the reader fallbacks
(``ncu --import`` CSV when no ``ncu_report`` module loads), and the faults of a run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import _fake_ncu
from _ncu_data import B32_BASE, B32_REP, NCU, path, raw
from gpuprobe.ncu import load_ncu_report, ncu_report_loader
from gpuprobe.ncu.readers import ReportFormatError, read_report
from gpuprobe.ncu.runner import CounterPermissionError, NoKernelsProfiled

TINY_CONFIG = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
               "num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 256,
               "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
               "tie_word_embeddings": True}


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    d = tmp_path / "tiny-qwen2"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_CONFIG))
    return d


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _no_module(monkeypatch):
    monkeypatch.setattr(ncu_report_loader, "_cached", None)
    monkeypatch.setattr(ncu_report_loader, "find_ncu_report", lambda: None)


def test_worker_in_ncu_mode_end_to_end(tmp_path, tiny_model, monkeypatch):
    """measure_point(mode="ncu"): the real ncu command line, the real target run under it (it must exit
    0), the real H100 report read back and reduced to per-op step totals, then the timing phase."""
    from gpuprobe.measure.point import measure_point

    log = _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP)
    rec = measure_point(model=str(tiny_model), batch=2, context=16, dtype="fp32", attention="torch", mode="ncu",
                        out_dir=str(tmp_path / "out"), warmup=1, graph_iters=2, ncu_timeout_s=120)
    (call,) = [c for c in _calls(log) if "target" in c]
    argv = call["argv"]
    includes = [argv[i + 1] for i, a in enumerate(argv) if a == "--nvtx-include"]
    assert includes == ["decode/layer1/", "decode/lm_head/"]  # 3 layers: the middle one, plus lm_head
    for flag, value in (("--clock-control", "none"), ("--cache-control", "all"), ("--replay-mode", "kernel"),
                        ("--target-processes", "all")):
        assert argv[argv.index(flag) + 1] == value
    assert "--nvtx" in argv and call["target"][1:3] == ["-m", "gpuprobe.measure.target"]
    assert call["target_rc"] == 0
    ncu = rec["ncu"]
    assert ncu["ncu"]["version"] == "2025.3.1.0" and ncu["ncu"]["reader"].startswith("ncu_report")
    ops = {o["op"]: o for o in ncu["ops"]}
    assert {"qkv_proj", "attention", "o_proj", "mlp"} <= set(ops)
    # the recorded layer's attention reads, scaled from one profiled layer to the tiny model's three
    att = raw(B32_REP)
    att_read = float(att[[s[-1] == "attention" for s in att["nvtx_stack"]]]["dram__bytes_read.sum"].sum())
    assert ops["attention"]["dram_read_bytes"] == pytest.approx(3 * att_read) and ops["attention"]["scaled"]
    assert Path(ncu["ncu"]["report"]).exists() and rec["timing"]["per_op_s"]


def test_worker_keeps_no_report_when_asked(tmp_path, tiny_model, monkeypatch):
    from gpuprobe.measure.point import profile_point

    _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP)
    out = profile_point(str(tiny_model), 3, 2, 16, "fp32", "torch", "one", tmp_path, warmup=1, keep_report=False)
    assert out["ncu"]["report"] is None and not list((tmp_path / "ncu").glob("*.ncu-rep"))


def test_worker_faults_name_the_cause(tmp_path, tiny_model, monkeypatch):
    from gpuprobe.measure.point import profile_point

    _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP, mode="perm")
    with pytest.raises(CounterPermissionError, match="NVreg_RestrictProfilingToAdminUsers=0"):
        profile_point(str(tiny_model), 3, 2, 16, "fp32", "torch", "one", tmp_path, warmup=1)
    log = _fake_ncu.use(monkeypatch, tmp_path / "bin", rep=NCU / B32_REP, mode="nokernels")
    with pytest.raises(NoKernelsProfiled) as e:
        profile_point(str(tiny_model), 3, 2, 16, "fp32", "torch", "one", tmp_path, warmup=1)
    assert "--nvtx-include decode/layer1/" in str(e.value) and "measure.target pushes" in str(e.value)
    assert len([c for c in _calls(log) if "target" in c]) == 1  # no second (diagnostic) run of the target


def test_rep_without_ncu_report_module_is_read_through_ncu_import(tmp_path, monkeypatch):
    """No loadable ncu_report: the .ncu-rep goes through `ncu --import --csv --page raw --print-units base`."""
    log = _fake_ncu.use(monkeypatch, tmp_path / "bin", csv=path(B32_BASE))
    _no_module(monkeypatch)
    df = load_ncu_report(NCU / B32_REP)
    (call,) = _calls(log)[-1:]
    assert call["argv"][:1] == ["--import"] and call["argv"][-5:] == ["--csv", "--page", "raw", "--print-units",
                                                                       "base"]
    assert df.attrs["reader"].startswith("ncu --import") and len(df) == 10
    ref = raw(B32_BASE)
    assert df["dram__bytes_read.sum"].tolist() == ref["dram__bytes_read.sum"].tolist()
    assert list(df["op"]) == ["qkv_proj", "attention", "o_proj", "o_proj"] + ["mlp"] * 6


def test_module_that_cannot_find_its_library_falls_back_to_csv(tmp_path, monkeypatch):
    class Broken:
        __file__ = "/opt/nvidia/nsight-compute/extras/python/ncu_report.py"

        @staticmethod
        def load_ncu_report(name):
            raise FileNotFoundError("Could not deduce NVIDIA Nsight Compute library directory.")

    _fake_ncu.use(monkeypatch, tmp_path / "bin", csv=path(B32_BASE))
    monkeypatch.setattr(ncu_report_loader, "find_ncu_report", lambda: Broken)
    df = read_report(NCU / B32_REP)
    assert df.attrs["reader"].startswith("ncu --import") and len(df) == 10


def test_bad_rep_without_module_is_one_line(tmp_path, monkeypatch):
    _fake_ncu.use(monkeypatch, tmp_path / "bin", csv=path(B32_BASE))
    _no_module(monkeypatch)
    bad = tmp_path / "x.ncu-rep"
    bad.write_bytes(b"not a report")
    with pytest.raises(ReportFormatError, match="not an Nsight Compute"):
        read_report(bad)
    empty = tmp_path / "e.ncu-rep"
    empty.write_bytes(b"")
    with pytest.raises(ReportFormatError, match="empty"):
        read_report(empty)
    log = tmp_path / "bin" / "calls.jsonl"
    assert not any("--import" in c["argv"] for c in (_calls(log) if log.exists() else []))  # never reached ncu


def test_extras_of_a_cuda_toolkit_install_are_found(tmp_path, monkeypatch):
    """CUDA's bin/ncu (a script) -> <cuda>/nsight-compute-<version>/extras/python/ncu_report.py."""
    from gpuprobe.ncu import runner

    cuda = tmp_path / "cuda-13.0"
    ncu = _fake_ncu.install(cuda / "bin")
    extras = cuda / "nsight-compute-2025.3.1" / "extras" / "python" / "ncu_report.py"
    extras.parent.mkdir(parents=True)
    extras.write_text("")
    monkeypatch.setattr(runner, "find_ncu", lambda: runner.NcuInstall(ncu, "2025.3.1.0"))
    monkeypatch.setattr(runner, "install_roots", lambda: [])
    assert extras in ncu_report_loader._extras_candidates()
