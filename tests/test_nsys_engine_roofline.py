"""``gpuprobe roofline --mode nsys`` on a CPU: the sweep, its worker and the assembly run for real; a
stand-in ``nsys`` writes, for the traced command's batch and context, a trace built from the export
schema with what gpuprobe.measure.nsys_target leaves in it (no real node-traced fixture exists yet)."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

FAKE = r'''#!{python}
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
if args[0] == "profile":
    stem = Path(args[args.index("-o") + 1])
    cmd = args[args.index("gpuprobe.measure.nsys_target") - 2:]
    b, c = cmd[cmd.index("--batch") + 1], cmd[cmd.index("--context") + 1]
    stem.with_name(stem.name + ".nsys-rep").write_text(json.dumps({{"batch": int(b), "context": int(c)}}))
elif args[0] == "export":
    from test_nsys_graph import engine_trace
    shape = json.loads(Path(args[-1]).read_text())
    engine_trace(Path(args[args.index("-o") + 1]), shape["batch"], shape["context"])
'''


@pytest.fixture
def fake_nsys(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "nsys.log"
    exe = bindir / "nsys"
    exe.write_text(FAKE.format(python=sys.executable, tests=str(TESTS), log=str(log)))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return log


def test_worker_traces_aligns_and_returns_a_record(fake_nsys, tmp_path):
    from gpuprobe.measure.nsys_point import nsys_point

    rec = nsys_point(model="qwen2-0.5b", batch=8, context=256, out_dir=str(tmp_path))
    call = json.loads(fake_nsys.read_text().splitlines()[0])
    assert "--cuda-graph-trace=node" in call and "gpuprobe.measure.nsys_target" in call
    assert rec["mode"] == "nsys" and rec["batch"] == 8 and rec["context"] == 256
    per_op = rec["timing"]["per_op_s"]
    assert per_op["attention"] == pytest.approx(2 * 19e-6) and per_op["qkv_proj"] == pytest.approx(2 * 16e-6)
    assert per_op["down_proj"] == pytest.approx(2 * 18e-6)
    assert rec["graph"]["steps"] == 4 and rec["eager"] is None
    assert rec["nsys"]["aligned"] == rec["nsys"]["graph_kernels"] == 4 * 2 * 9


def test_nsys_mode_sweep_writes_roofline_json(fake_nsys, tmp_path):
    from gpuprobe.run.measured import run_measured_roofline
    from gpuprobe.run.options import RooflineOptions
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    out = tmp_path / "roof"
    out.mkdir()
    options = RooflineOptions(model="qwen2-0.5b", batches=(8, 32), batches_given=True, context=256, dtype="bf16",
                              mode="nsys", out=str(out))
    rc = run_measured_roofline(options, spec=get_model("qwen2-0.5b"), gpu=get_gpu("h100-sxm"), mode="nsys",
                               why="forced with --mode nsys", out=out)
    assert rc == 0
    d = json.loads((out / "roofline.json").read_text())
    assert d["mode"] == "nsys" and d["batch"] == [8, 32] and d["context"] == 256
    ops = {(p["op"], p["batch"]) for p in d["points"]}
    assert {("attention", 8), ("attention", 32), ("qkv_proj", 32), ("act", 8)} <= ops
    att = next(p for p in d["points"] if p["op"] == "attention" and p["batch"] == 32)
    assert att["time_s"] == pytest.approx(2 * 19e-6)
    assert [r["batch"] for r in d["throughput"]] == [8, 32] and d["throughput"][0]["mode"] == "graph"
    assert (out / "results.jsonl").is_file() and (out / "report.md").is_file()


def test_roofline_mode_nsys_without_a_gpu_is_one_line(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--mode", "nsys", "--model", "qwen2-0.5b",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                                           "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--mode nsys needs a CUDA GPU" in r.stderr
