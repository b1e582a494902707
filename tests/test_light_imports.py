"""The light commands stay light: ``--help``, ``models``, ``gpus``, analytic ``roofline``, ``report``, ``diff``
and ``predict`` load no torch, triton or pyplot (checked in ``sys.modules`` of a fresh process), and the
command line's own start-up is fast. Also: Ctrl-C while Python is still importing, and a reader that
closes the pipe (``| head``), end quietly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures"
HEAVY = ("torch", "triton", "matplotlib.pyplot")

_PROBE = r"""
import contextlib, io, json, sys
from gpuprobe.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
print(json.dumps({"rc": rc, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _probe(args: list[str], tmp_path: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


COMMANDS = {
    "help": ["--help"],
    "models": ["models"],
    "gpus": ["gpus"],
    "roofline": ["roofline", "--model", "qwen2-0.5b", "--gpu", "h100-sxm", "--batch", "1"],
    "roofline-detected-gpu": ["roofline", "--model", "qwen2-0.5b", "--batch", "1"],
    "report-nsys": ["report", str(FIX / "nsys" / "gpu4_old_report2.sqlite.xz")],
    "report-ncu": ["report", str(FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv")],
    "diff": ["diff", str(FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv"),
             str(FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv")],
    "predict": ["predict", "--help"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_light_commands_import_no_heavy_library(name, tmp_path):
    got = _probe(COMMANDS[name], tmp_path)
    assert got["heavy"] == [], f"`gpuprobe {' '.join(COMMANDS[name])}` imported {got['heavy']}"


def test_help_is_fast():
    """`python -m gpuprobe --help` within 0.5 s of CPU (best of three: a shared machine's wall time varies)."""
    best = 1e9
    for _ in range(3):
        t0 = os.times()
        r = subprocess.run([sys.executable, "-m", "gpuprobe", "--help"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        t1 = os.times()
        assert r.returncode == 0 and "roofline" in r.stdout
        best = min(best, (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system))
    assert best <= 0.5, f"--help took {best:.2f} s of CPU"


def test_help_lists_every_subcommand_without_importing_them():
    code = ("import sys, contextlib, io\nfrom gpuprobe.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['--help'])\n    except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('gpuprobe.cli.') and not "
            "m.split('.')[-1].startswith('_')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_ctrl_c_while_importing_is_one_line():
    """SIGINT at once after start: no KeyboardInterrupt traceback, whenever it lands."""
    for delay in (0.05, 0.15, 0.3):
        p = subprocess.Popen([sys.executable, "-m", "gpuprobe", "report", str(FIX / "nsys" / "gpu4_old_report2.sqlite.xz")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 1, err


def test_closed_pipe_is_a_quiet_exit_0():
    r = subprocess.run(f"{sys.executable} -m gpuprobe report {FIX / 'nsys' / 'gpu4_old_report2.sqlite.xz'} "
                       "--by kernel --format tsv | head -c 10 > /dev/null; echo ${PIPESTATUS[0]}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.stdout.strip() == "0", (r.stdout, r.stderr)
    assert r.stderr.strip() == "", r.stderr
