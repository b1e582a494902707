"""``gpuprobe profile --nsys`` and the nsys runner, with a stand-in ``nsys`` that replays a real export
(tests/fixtures/nsys/sc23_openmp_report3.sqlite.xz) as the trace it was asked to make."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.errors import UserError
from gpuprobe.nsys.runner import profile_command

FIX = Path(__file__).resolve().parent / "fixtures" / "nsys"

FAKE_NSYS = r'''#!{python}
import json, lzma, shutil, sys
from pathlib import Path
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
if args[0] == "profile":
    stem = Path(args[args.index("-o") + 1])
    stem.with_name(stem.name + ".nsys-rep").write_bytes(b"fake report: the export replays a real one")
elif args[0] == "export":
    out = Path(args[args.index("-o") + 1])
    with lzma.open({fixture!r}) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
'''


@pytest.fixture
def fake_nsys(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "nsys.log"
    exe = bindir / "nsys"
    exe.write_text(FAKE_NSYS.format(python=sys.executable, log=str(log),
                                    fixture=str(FIX / "sc23_openmp_report3.sqlite.xz")))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="200")
    return env, log


def test_profile_command_traces_graph_nodes():
    cmd = profile_command("/x/nsys", ["python", "serve.py"], "out/run", capture_range="nvtx", nvtx_capture="decode")
    assert cmd[:2] == ["/x/nsys", "profile"]
    assert "--trace=cuda,nvtx" in cmd and "--cuda-graph-trace=node" in cmd
    assert "--capture-range=nvtx" in cmd and "--nvtx-capture=decode" in cmd and "--capture-range-end=stop" in cmd
    assert cmd[-2:] == ["python", "serve.py"] and cmd[cmd.index("-o") + 1] == "out/run"
    with pytest.raises(UserError):
        profile_command("/x/nsys", ["a"], "o", capture_range="nvtx")


def test_profile_nsys_runs_exports_and_reports(fake_nsys, tmp_path):
    env, log = fake_nsys
    out = tmp_path / "prof"
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "profile", "--nsys", "--out", str(out), "--name", "run",
                        "--", "python", "decode.py"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["profile", "export"]
    assert "--cuda-graph-trace=node" in calls[0] and calls[0][-2:] == ["python", "decode.py"]
    assert calls[1][calls[1].index("--type") + 1] == "sqlite" and calls[1][-1] == str(out / "run.nsys-rep")
    assert (out / "run.sqlite").is_file()
    meta = json.loads((out / "run.gpuprobe.json").read_text())
    assert meta["tool"] == "nsys" and meta["command"][0].endswith("nsys")
    assert meta["command"][1:] == calls[0]
    rows = [line.split("\t") for line in r.stdout.splitlines()]  # piped: the report's rows as TSV
    assert rows[0][:3] == ["op", "kernels", "time_s"] and sum(int(row[1]) for row in rows[1:]) == 50
    assert "traced in" in r.stderr


def test_nsys_rep_is_exported_then_read(fake_nsys, tmp_path):
    env, log = fake_nsys
    rep = tmp_path / "r.nsys-rep"
    rep.write_bytes(b"x")
    code = ("import sys; from gpuprobe import load_report; df = load_report(sys.argv[1]); "
            "print(len(df), df.attrs['format'], df.attrs['source'])")
    r = subprocess.run([sys.executable, "-c", code, str(rep)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["50", "nsys-sqlite", str(rep)]


def test_nsys_rep_without_nsys_says_how_to_export(tmp_path):
    rep = tmp_path / "r.nsys-rep"
    rep.write_bytes(b"x")
    env = dict(os.environ, PATH=str(tmp_path), CUDA_HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "report", str(rep)], capture_output=True, text=True,
                       env=env)
    if r.returncode == 0:
        pytest.skip("an nsys is installed in a standard place on this machine")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "nsys export --type sqlite -o r.sqlite r.nsys-rep" in r.stderr


def test_profile_nsys_without_nsys_is_one_line(tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), CUDA_HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "profile", "--nsys", "--out", str(tmp_path / "o"), "--",
                        "true"], capture_output=True, text=True, env=env)
    if r.returncode == 0:
        pytest.skip("an nsys is installed in a standard place on this machine")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nsys" in r.stderr
    assert not (tmp_path / "o").exists()
