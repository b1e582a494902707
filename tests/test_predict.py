"""`gpuprobe predict` and `gpuprobe calibrate` end to end (in process), and their one-line errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from gpuprobe.cli import main
from gpuprobe.calibration import load_calibration
from gpuprobe.calibration.store import shipped_path

SHAPES = """op,m,n,k,batch,context,heads,kv_heads,head_dim,bytes,note
gemm,1,4096,4096,,,,,,,qkv
decode_attention,,,,32,4096,32,8,128,,attn
elementwise,,,,,,,,,1048576,norm
"""


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_json_keeps_input_columns(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "predict", "--gpu", "h200", "--shapes", write(tmp_path, "s.csv", SHAPES),
                           "--format", "json")
    assert rc == 0 and err == ""
    rows = json.loads(out)
    assert [r["note"] for r in rows] == ["qkv", "attn", "norm"]
    for r in rows:
        assert r["predicted_s"] >= r["floor_s"] > 0 and "H200" in r["calibration"]
    assert rows[0]["floor_s"] == pytest.approx((4096 + 4096 * 4096 + 4096) * 2 / 4.8e12)
    assert 1.2 < rows[0]["predicted_s"] / rows[0]["floor_s"] < 3  # an M=1 GEMM reaches well under the datasheet


def test_predict_without_calibration_gives_the_floor_and_says_so(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "predict", "--gpu", "a10", "--shapes", write(tmp_path, "s.csv", SHAPES),
                           "--format", "csv")
    assert rc == 0 and "ships no calibration for a10" in err and len(err.splitlines()) == 1
    df = pd.read_csv(pd.io.common.StringIO(out))
    assert (df["predicted_s"] == df["floor_s"]).all() and set(df["calibration"]) == {"none (floor)"}


def test_predict_table_fits_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run_cli(capsys, "predict", "--gpu", "h100-sxm", "--dtype", "fp16", "--shapes",
                         write(tmp_path, "s.csv", SHAPES), "--format", "table")
    assert rc == 0 and max(len(line) for line in out.splitlines()) <= 80 and "serving fp16" in out


VIDUR = ("time_stats.attn_pre_proj.median,time_stats.mlp_up_proj.median,time_stats.mlp_act.median,"
         "time_stats.add.median,n_head,n_kv_head,n_embd,n_expanded_embd,vocab_size,use_gated_mlp,num_tokens,"
         "num_tensor_parallel_workers\n"
         "0.020,0.035,0.004,0.003,32,32,4096,11008,32000,True,8,1\n"
         "0.023,0.041,0.005,0.003,32,32,4096,11008,32000,True,64,2\n")


def test_predict_reads_vidur_layout_and_keeps_measured_times(tmp_path, capsys):
    rc, out, _ = run_cli(capsys, "predict", "--gpu", "h100-sxm", "--dtype", "fp16", "--shapes",
                         write(tmp_path, "mlp.csv", VIDUR), "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 8
    up = [r for r in rows if r["op"] == "mlp_up_proj"]
    assert [(r["m"], r["n"], r["k"]) for r in up] == [(8, 22016, 4096), (64, 11008, 4096)]  # gated, TP 2
    assert up[0]["measured_s"] == pytest.approx(35e-6)
    assert {r["op_class"] for r in rows} == {"gemm", "elementwise"}


def test_calibrate_from_a_measurement_csv(tmp_path, capsys):
    lines = ["op,m,n,k,measured_s"]
    for n, k in [(1024, 1024), (4096, 4096), (4096, 11008), (11008, 4096), (2048, 2048)]:
        for m in (1, 8, 64, 512):
            floor = max(2 * m * n * k / 989.4e12, (m * k + n * k + m * n) * 2 / 3.35e12)
            lines.append(f"gemm,{m},{n},{k},{3e-6 + floor / 0.7}")
    out_file = tmp_path / "cal.json"
    rc, out, err = run_cli(capsys, "calibrate", "--from", write(tmp_path, "m.csv", "\n".join(lines)), "--gpu",
                           "h100-sxm", "--out", str(out_file), "--format", "json")
    assert rc == 0 and "wrote" in err
    (row,) = json.loads(out)
    assert row["op_class"] == "gemm" and row["rows"] == 20 and row["heldout_shapes"] == 1
    assert row["median_abs_err"] < 0.02 < row["floor_median_abs_err"]
    cal = load_calibration(out_file)
    assert cal.gpu == "h100-sxm" and cal.source["kind"] == "measurements"
    rc, out, _ = run_cli(capsys, "predict", "--gpu", "h100-sxm", "--shapes", write(tmp_path, "s.csv", SHAPES),
                         "--calibration", str(out_file), "--format", "json")
    rows = json.loads(out)
    assert rows[0]["predicted_s"] == pytest.approx(3e-6 + rows[0]["floor_s"] / 0.7, rel=0.05)
    assert rows[1]["predicted_s"] == rows[1]["floor_s"]  # no attention rows were measured: the floor


def test_calibrate_from_the_published_tables(tmp_path, capsys):
    pytest.importorskip("aiconfigurator_core")
    out_file = tmp_path / "l40s.json"
    rc, out, _ = run_cli(capsys, "calibrate", "--from", "aiconfigurator", "--gpu", "l40s", "--holdout", "0.25",
                         "--out", str(out_file), "--format", "json")
    rows = {r["op_class"]: r for r in json.loads(out)}
    assert rc == 0 and set(rows) == {"gemm", "decode_attention"}
    assert rows["gemm"]["median_abs_err"] < rows["gemm"]["floor_median_abs_err"] / 3


BAD = [
    ("op,m,n,k\nconv,1,2,3\n", "unknown op class 'conv'"),
    ("op,m,n\ngemm,1,2\n", "needs a number in column 'k'"),
    ("op,m,n,k\ngemm,-1,2,3\n", "must be positive"),
    ("m,n,k\n1,2,3\n", "no 'op' column"),
    ("op,batch,context,heads,kv_heads,head_dim\ndecode_attention,1,8,6,4,64\n", "multiple of kv_heads"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_shapes_exit_2_with_one_line(tmp_path, capsys, text, message):
    rc, out, err = run_cli(capsys, "predict", "--gpu", "h200", "--shapes", write(tmp_path, "bad.csv", text))
    assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_bad_calibration_files_exit_2_with_one_line(tmp_path, capsys):
    shapes = write(tmp_path, "s.csv", SHAPES)
    cases = [(str(shipped_path("h200", "bf16")), "calibration of h200, not h100-sxm"),
             (write(tmp_path, "v9.json", json.dumps({"schema_version": 9})), "schema_version 9"),
             (write(tmp_path, "junk.json", "{not json"), "cannot read calibration"),
             (str(tmp_path / "missing.json"), "no such calibration file")]
    for path, message in cases:
        rc, out, err = run_cli(capsys, "predict", "--gpu", "h100-sxm", "--shapes", shapes, "--calibration", path)
        assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err


def test_bad_calibrate_sources_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "c.json")
    cases = [(["--from", write(tmp_path, "m.csv", "op,m,n,k\ngemm,1,2,3\n"), "--gpu", "h200"], "no 'measured_s' column"),
             (["--from", write(tmp_path, "m2.csv", "op,m,n,k,measured_s\ngemm,1,2,3,-1\n"), "--gpu", "h200"],
              "measured_s must be a positive"),
             (["--from", "aiconfigurator", "--gpu", "a10"], "publishes no tables"),
             (["--from", "aiconfigurator"], "needs --gpu"),
             (["--from", str(tmp_path)], "no roofline.json or results.jsonl")]
    for argv, message in cases:
        rc, stdout, err = run_cli(capsys, "calibrate", *argv, "--out", out)
        assert rc == 2 and stdout == "" and message in err and len(err.strip().splitlines()) == 1, err


def test_a_table_without_the_columns_exits_2(tmp_path, capsys, monkeypatch):
    """A published table of another layout (here: no latency column) is refused with one line."""
    from gpuprobe.calibration import sources

    folder = tmp_path / "h200_sxm" / "gemm" / "vllm" / "9.9"
    folder.mkdir(parents=True)
    pd.DataFrame({"gemm_dtype": ["bfloat16"], "m": [1], "n": [2], "k": [3]}).to_parquet(folder / "gemm_perf.parquet")
    monkeypatch.setattr(sources, "aiconfigurator_root", lambda: tmp_path)
    rc, out, err = run_cli(capsys, "calibrate", "--from", "aiconfigurator", "--gpu", "h200", "--out",
                           str(tmp_path / "c.json"))
    assert rc == 2 and "no column(s) latency" in err and len(err.strip().splitlines()) == 1
