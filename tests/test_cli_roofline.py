"""`python -m gpuprobe roofline` end to end on a CPU machine, and every bad input."""
import json
import os
import subprocess
import sys

import pytest

CONTRACT_POINT_FIELDS = {"op", "batch", "flops", "dram_bytes", "time_s", "intensity", "bound"}


def gp(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def analytic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("roofline")
    r = gp("roofline", "--model", "qwen2-0.5b", "--out", str(out))
    return r, out


def test_analytic_mode_banner_first_line(analytic_run):
    """The banner is the first line a terminal shows: on stderr, so that stdout holds the table alone."""
    r, _ = analytic_run
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert "ANALYTIC mode" in first and "no GPU" in first
    assert "ANALYTIC" not in r.stdout and r.stdout.splitlines()[0].split("\t")[:3] == ["op", "batch", "time_s"]


def test_three_files_and_json_contract(analytic_run):
    _, out = analytic_run
    data = json.loads((out / "roofline.json").read_text())
    assert data["schema_version"] == 1
    assert data["mode"] == "analytic" and data["model"] == "qwen2-0.5b" and data["gpu"] == "h100-sxm"
    assert data["context"] == 1024 and data["dtype"] == "bf16" and data["layers"] == 24
    assert set(data["ceilings"]) >= {"dram_bytes_per_s", "flops_per_s"}
    assert {r["source"] for r in data["roofs"]} == {"datasheet"}
    assert "git_sha" in data["provenance"] and "command" in data["provenance"]
    pts = data["points"]
    assert {p["batch"] for p in pts} == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}
    for p in pts:
        assert CONTRACT_POINT_FIELDS <= set(p)
        assert p["bound"] in ("memory", "compute")
        assert p["flops_executed"] is None and p["flops"] == p["flops_useful"]
    att = [p for p in pts if p["op"] == "attention"]
    assert len(att) == 10 and all(p["bound"] == "memory" for p in att)
    lm = sorted((p for p in pts if p["op"] == "lm_head"), key=lambda p: p["batch"])
    assert lm[-1]["intensity"] > 100 * lm[0]["intensity"]
    pred = {r["batch"]: r for r in data["predicted"]}
    assert set(pred) == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512} and all(r["fits"] for r in pred.values())
    step1 = sum(p["time_s"] for p in pts if p["batch"] == 1)
    assert pred[1]["tokens_per_s"] == pytest.approx(1 / step1)
    assert pred[512]["tokens_per_s"] > 20 * pred[1]["tokens_per_s"]
    assert pred[512]["kv_cache_bytes"] == 512 * 1024 * 24 * 2 * 128 * 2
    assert "throughput" not in data  # predictions never pose as measurements
    csv_lines = (out / "roofline.csv").read_text().splitlines()
    assert csv_lines[0].startswith("op,batch,flops,dram_bytes,time_s,intensity,bound")
    assert len(csv_lines) == 1 + len(pts)


def test_png_is_a_valid_image(analytic_run):
    _, out = analytic_run
    import matplotlib.image as mpimg

    raw = (out / "roofline.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out / "roofline.png")
    assert img.shape[0] > 400 and img.shape[1] > 600
    assert img.std() > 0.05  # not a blank canvas


def test_custom_options(tmp_path):
    r = gp("roofline", "--model", "llama-3.2-1b", "--gpu", "a100-80gb", "--batch", "1,16", "--context", "512",
           "--dtype", "fp16", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "roofline.json").read_text())
    assert data["gpu"] == "a100-80gb" and data["dtype"] == "fp16" and data["batch"] == [1, 16]
    assert data["ceilings"]["compute_roof"] == "tensor_fp16"


@pytest.mark.parametrize("args,needle", [
    (["--model", "qwen2-05b"], "qwen2-0.5b"),
    (["--model", "qwen2-0.5b", "--batch", "1,x,4"], "malformed batch"),
    (["--model", "qwen2-0.5b", "--batch", "0,2"], "positive"),
    (["--model", "qwen2-0.5b", "--context", "0"], "--context"),
    (["--model", "qwen2-0.5b", "--context", "-3"], "--context"),
    (["--model", "qwen2-0.5b", "--gpu", "h1000"], "unknown GPU"),
    (["--model", "qwen2-0.5b", "--dtype", "int3"], "unknown dtype"),
])
def test_bad_input_one_line_exit_2(args, needle):
    r = gp("roofline", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = gp("roofline", "--model", "qwen2-0.5b", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--out" in r.stderr


def test_models_and_gpus_commands():
    r = gp("models", "--json")
    assert r.returncode == 0
    models = {m["name"]: m for m in json.loads(r.stdout)}
    assert models["qwen2-0.5b"]["num_params"] == 494_032_768
    r = gp("gpus", "--json")
    data = json.loads(r.stdout)
    assert data["detected"] is None and len(data["gpus"]) >= 9
    r = gp("models", "--format", "table")
    assert r.returncode == 0 and "494.0 M" in r.stdout


def test_every_subcommand_has_help(capsys):
    from gpuprobe.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"roofline", "models", "gpus"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert f"usage: gpuprobe {name}" in capsys.readouterr().out, name
    r = gp("--help")  # the console entry point, once, in a real process
    assert r.returncode == 0 and "roofline" in r.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_analytic_table_fits_the_terminal(tmp_path, columns):
    env = {**os.environ, "COLUMNS": str(columns)}
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--model", "qwen2-0.5b", "--out", str(tmp_path),
                        "--format", "table", "--context", "32768"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    table = [line for line in r.stdout.splitlines()[1:] if not line.startswith("wrote ")]
    assert max(len(line) for line in table) <= columns
    assert "189,876" not in r.stdout  # a different context than the default: the numbers are this run's
    assert "B=512*" in r.stdout and "does not fit in memory" in r.stdout  # batches that cannot be held
    assert "…" not in "\n".join(line for line in table if "µs" in line or "ms" in line)  # no cell cut


def test_piped_table_is_tab_separated_and_json_is_strict(tmp_path):
    r = gp("roofline", "--model", "qwen2-0.5b", "--batch", "1,64", "--out", str(tmp_path / "a"))
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    head = rows[0]
    assert head[:3] == ["op", "batch", "time_s"] and all(len(row) == len(head) for row in rows)
    att = {int(row[1]): float(row[2]) for row in rows[1:] if row[0] == "attention"}
    assert set(att) == {1, 64} and att[64] > att[1] > 0  # one row per op and batch, seconds as named
    j = gp("roofline", "--model", "qwen2-0.5b", "--batch", "1,64", "--json", "--out", str(tmp_path / "b"))
    data = json.loads(j.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert {p["batch"] for p in data["points"]} == {1, 64} and "ANALYTIC" in j.stderr


def test_resume_in_analytic_mode_is_refused(tmp_path):
    r = gp("roofline", "--model", "qwen2-0.5b", "--resume", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "resume" in r.stderr


def test_models_piped_is_greppable_and_fits_80_columns():
    r = gp("models")
    head, *rows = [line.split("\t") for line in r.stdout.splitlines()]
    row = dict(zip(head, next(row for row in rows if row[0] == "llama-3.2-1b")))
    assert row["num_params"] == "1235814400" and row["num_layers"] == "16"  # raw values, named with what they count
    for cmd in (["models"], ["gpus"]):
        t = subprocess.run([sys.executable, "-m", "gpuprobe", *cmd, "--format", "table"], capture_output=True,
                           text=True, env={**os.environ, "COLUMNS": "80"}, timeout=120)
        assert t.returncode == 0 and max(len(l) for l in t.stdout.splitlines()) <= 80
        assert "…" not in t.stdout and "..." not in t.stdout  # nothing cut at 80 columns
        assert ("llama-3.2-1b" if cmd == ["models"] else "NVIDIA H100 SXM5 80GB") in t.stdout
