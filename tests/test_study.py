"""`gpuprobe sweep`: a study over 2 models x 2 GPUs (the two partitions of the test Slurm, tests/slurm_cluster.py)
with the real point worker in timing mode on the CPU; its folders, index, comparison table and figure; its
status; and bad input refused with one line before anything is submitted."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gpuprobe.cli import main
from gpuprobe.errors import UserError

pytest_plugins = ("slurm_cluster",)  # its fixtures: one test Slurm for the session

TINY = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def _model(root: Path, name: str, **changes) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({**TINY, **changes}))
    return d


def _study(tmp_path: Path, extra: str = "", models=None) -> Path:
    models = models or [_model(tmp_path / "models", "tiny-a"), _model(tmp_path / "models", "tiny-b", hidden_size=128,
                                                                         intermediate_size=256)]
    text = (f"models = {json.dumps([str(m) for m in models])}\n"
            "contexts = [16]\nbatches = [2]\nmodes = [\"timing\"]\ndtype = \"fp32\"\nattention = \"torch\"\n"
            + extra +
            "[[gpus]]\nname = \"h100-sxm\"\npartition = \"h100\"\n"
            "[[gpus]]\nname = \"h200\"\npartition = \"h200\"\n")
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_study_over_two_models_and_two_gpus(slurm, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPUPROBE_SLURM_POLL_S", "0.3")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the jobs' engines run PyTorch's ops, not interpreted Triton
    out = tmp_path / "study"
    rc = main(["sweep", str(_study(tmp_path)), "--executor", "slurm", "--max-parallel", "2", "--out", str(out),
               "--format", "tsv"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "h100-sxm on partition h100, h200 on partition h200" in cap.err
    index = json.loads((out / "study.json").read_text())
    folders = {(f["model_name"], f["gpu"]): f for f in index["folders"]}
    assert set(folders) == {(m, g) for m in ("tiny-a", "tiny-b") for g in ("h100-sxm", "h200")}
    for (model, gpu), f in folders.items():
        d = out / f["folder"]
        assert f["placement"] == {"partition": "h100" if gpu == "h100-sxm" else "h200"}
        recs = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines()]
        assert [r["point"]["batch"] for r in recs] == [2] and all(r["status"] == "ok" for r in recs)
        assert all(r["job"]["job_id"] for r in recs)
        roof = json.loads((d / "roofline.json").read_text())
        assert roof["gpu"] == gpu and roof["mode"] == "timing" and roof["batch"] == [2]
        for name in ("report.md", "roofline.png", "time_breakdown.png"):
            assert (d / name).stat().st_size > 500, name
        scripts = list((d / "slurm").glob("*/*/*submission.sh"))
        assert scripts and all(f"#SBATCH --partition={f['placement']['partition']}" in s.read_text() for s in scripts)
    # the comparison: every op of every model on both GPUs, in the table and the CSV
    rows = list(csv.DictReader(io.StringIO((out / "comparison.csv").read_text())))
    assert {r["gpu"] for r in rows} == {"h100-sxm", "h200"} and {r["model"] for r in rows} == {"tiny-a", "tiny-b"}
    assert all(float(r["time_us"]) > 0 and float(r["dram_pct_of_peak"]) >= 0 for r in rows)
    assert {r["dram_peak"] for r in rows} == {"datasheet"}  # no counters, no measured copy bandwidth on a CPU
    table = list(csv.DictReader(io.StringIO(cap.out), delimiter="\t"))
    assert set(table[0]) == {"model", "context", "mode", "batch", "op", "time_us_h100-sxm", "time_us_h200",
                             "dram_pct_of_peak_h100-sxm", "dram_pct_of_peak_h200"}
    att = [r for r in table if r["op"] == "attention" and r["model"] == "tiny-b" and r["batch"] == "2"]
    assert len(att) == 1 and float(att[0]["time_us_h100-sxm"]) > 0 and float(att[0]["time_us_h200"]) > 0
    assert len(table) == len(rows) / 2
    assert (out / "comparison.png").stat().st_size > 5000
    # the same state at any time, from the folder
    assert main(["sweep", "--status", str(out), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert len(status) == 4 and all((s["points"], s["done"], s["failed"], s["queued"]) == (1, 1, 0, 0)
                                    for s in status)


def _one_line_exit_2(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_partition_that_does_not_exist_is_refused_before_submitting(slurm, tmp_path, capsys):
    out = tmp_path / "study"
    study = _study(tmp_path).read_text().replace('partition = "h200"', 'partition = "b200"')
    (tmp_path / "bad.toml").write_text(study)
    err = _one_line_exit_2(capsys, ["sweep", str(tmp_path / "bad.toml"), "--executor", "slurm", "--out", str(out)])
    assert "b200" in err and "h100, h200" in err
    err = _one_line_exit_2(capsys, ["sweep", str(_study(tmp_path / "s2")), "--executor", "slurm",
                                    "--slurm-partition", "nope", "--out", str(out)])
    assert "nope" in err
    assert not out.exists() and slurm.jobs() == []


@pytest.mark.parametrize("extra, words", [
    ("colour = \"red\"\n", "unknown key colour"),
    ("modes = [\"ncu\", \"guess\"]\n", "mode guess"),
    ("[executor]\nkind = \"slurm\"\nnodes = 3\n", "unknown key nodes"),
])
def test_bad_study_files_are_one_line(tmp_path, capsys, extra, words):
    path = _study(tmp_path)
    text = path.read_text()
    if extra.startswith("modes"):
        text = text.replace('modes = ["timing"]\n', extra)
    elif extra.startswith("[executor]"):
        text = text.replace("[[gpus]]", extra + "[[gpus]]", 1)
    else:
        text = extra + text
    path.write_text(text)
    assert words in _one_line_exit_2(capsys, ["sweep", str(path), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_unknown_models_gpus_and_executors_are_one_line(tmp_path, capsys):
    path = _study(tmp_path)
    assert "no-such-model" in _one_line_exit_2(capsys, ["sweep", str(path), "--model", "no-such-model",
                                                        "--out", str(tmp_path / "o")])
    assert "zz-9000" in _one_line_exit_2(capsys, ["sweep", str(path), "--gpu", "zz-9000:partition=h100",
                                                  "--out", str(tmp_path / "o")])
    assert "pbs" in _one_line_exit_2(capsys, ["sweep", str(path), "--executor", "pbs", "--out", str(tmp_path / "o")])
    # two GPUs cannot both be this machine's
    assert "--executor slurm" in _one_line_exit_2(capsys, ["sweep", str(path), "--out", str(tmp_path / "o")])
    assert "not valid TOML" in _one_line_exit_2(capsys, ["sweep", str(tmp_path / "models" / "tiny-a" / "config.json"),
                                                         "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_slurm_without_its_tools_and_a_study_without_models_are_one_line(tmp_path, capsys, monkeypatch):
    path = _study(tmp_path)
    assert "give a study file" in _one_line_exit_2(capsys, ["sweep", "--out", str(tmp_path / "o")])
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel, sinfo
    err = _one_line_exit_2(capsys, ["sweep", str(path), "--executor", "slurm", "--out", str(tmp_path / "o")])
    assert "sbatch, squeue, scancel, sinfo are not on PATH" in err
    assert not (tmp_path / "o").exists()


def test_status_of_a_folder_that_holds_nothing_is_one_line(tmp_path, capsys):
    assert "holds no study" in _one_line_exit_2(capsys, ["sweep", "--status", str(tmp_path)])


def test_a_point_that_fell_back_to_timing_joins_its_ncu_roofline_flagged():
    """A node that refused the counters measured its point in timing mode: the point stays in the folder's
    ncu roofline, with its timing figures and the fallback named on the point and its step."""
    from gpuprobe.measure.sweep import read_results
    from gpuprobe.roofline.assemble import assemble_result
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    recs = read_results(Path(__file__).parent / "fixtures" / "measured" / "timing" / "results.jsonl")
    fb = {"requested_mode": "ncu", "mode": "timing", "node": "gpu-017", "kernel": "4.4.0",
          "reason": "the GPU performance counters are restricted to administrators (ERR_NVGPUCTRPERM)."}
    flagged = [{**r, "result": {**r["result"], "fallback": fb}} for r in recs]
    kw = dict(spec=get_model("qwen2-0.5b"), gpu=get_gpu("h100-sxm"), dtype="bf16", copy_bw=3.01e12)
    res = assemble_result(flagged, **kw)
    plain = assemble_result(recs, **kw)
    assert res.mode == "ncu" and plain.mode == "timing" and len(res.points) == len(plain.points)
    assert all(p.extra["fallback"]["node"] == "gpu-017" for p in res.points)
    assert [p.time_s for p in res.points] == [p.time_s for p in plain.points]
    assert all(s["fallback"] == fb for s in res.extra["steps"] if s["status"] == "ok")
    with pytest.raises(UserError, match="mix modes"):  # an ncu fallback inside a timing sweep is another sweep
        assemble_result(recs[:1] + flagged[1:], **kw)


def test_a_calibration_per_gpu_from_the_recorded_h100_sweep(tmp_path, capsys):
    """``calibrate = true``: the folders of a GPU -> calibration-<gpu>.json (docs/contracts.md section 11), here
    from the recorded real H100 timing sweep (tests/fixtures/measured)."""
    from gpuprobe.measure.sweep import read_results
    from gpuprobe.roofline.assemble import assemble_result
    from gpuprobe.run.study import Cell, StudyGpu, write_calibrations
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    recs = read_results(Path(__file__).parent / "fixtures" / "measured" / "timing" / "results.jsonl")
    result = assemble_result(recs, spec=get_model("qwen2-0.5b"), gpu=get_gpu("h100-sxm"), dtype="bf16",
                             copy_bw=3.01e12)
    cell = Cell("qwen2-0.5b__h100-sxm__c1024", "qwen2-0.5b", "qwen2-0.5b", StudyGpu("h100-sxm", "h100"), 1024,
                "timing", tuple(result.batch))
    (path,) = write_calibrations(tmp_path, [(cell, result)], "bf16")
    cal = json.loads(path.read_text())
    assert path.name == "calibration-h100-sxm.json" and cal["gpu"] == "h100-sxm" and cal["schema_version"] == 1
    assert {"gemm", "decode_attention"} <= set(cal["classes"]) and cal["source"]["kind"] == "gpuprobe"
    assert cal["classes"]["gemm"]["heldout"]["rows"] > 0  # its error measured on shapes held out of the fit
