"""scripts/device_selftest.sh on CPU: it always leaves summary.md and summary.json, never installs a
carried gpuprobe wheel, copies the checkout's tree when the build fails, and runs from outside the checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "device_selftest.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _stand_in(bin_dir: Path, body: str) -> None:
    """A stand-in ``python3``, first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "python3"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    exe.chmod(0o755)


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    full = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "OUT": str(out),
            "GPUPROBE_SITE": str(tmp_path / "site"), "GPUPROBE_SELFTEST_DIR": str(tmp_path / "run"),
            "TMPDIR": str(tmp_path), **(env or {})}
    r = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=240)
    return r, out


def _pip_recorder(tmp_path: Path, failing: str = "") -> Path:
    """A stand-in ``python3`` that only runs pip: it notes each call's arguments, one line a call, in the
    file it returns, and fails the calls naming ``failing`` (when given)."""
    record = tmp_path / "pip-args.txt"
    fail = f'case "$*" in *{failing}*) exit 1 ;; esac' if failing else ""
    _stand_in(tmp_path / "bin", f'''
        case "$*" in
          *"-m pip"*) echo "$*" >> {record}
                      {fail}
                      exit 0 ;;
        esac
        exit 1
    ''')
    return record


def _run_with_wheels(tmp_path: Path, *names: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``_run`` with empty wheel files of these names carried in the checkout's .whl/, removed afterwards."""
    whl = REPO / ".whl"
    made = not whl.exists()
    whl.mkdir(exist_ok=True)
    wheels = [whl / name for name in names]
    try:
        for wheel in wheels:
            wheel.write_bytes(b"")
        return _run(tmp_path)
    finally:
        for wheel in wheels:
            wheel.unlink(missing_ok=True)
        if made:
            shutil.rmtree(whl, ignore_errors=True)


def _both_summaries(out: Path) -> tuple[dict, str]:
    data = json.loads((out / "summary.json").read_text())  # strict JSON, whatever the reason says
    return data, (out / "summary.md").read_text()


def test_python_that_exits_early_still_leaves_both_summaries(tmp_path):
    _stand_in(tmp_path / "bin", 'echo "stand-in python3: exiting early" >&2\nexit 1\n')
    r, out = _run(tmp_path, "--check", "doctor")
    assert r.returncode != 0
    data, md = _both_summaries(out)
    assert data["could_not_start"] is True and data["checks"] == [] and data["counts"]["failed"] == 0
    assert "does not import" in data["reason"] and "stand-in python3: exiting early" in data["log_tail"]
    assert data["command"] == "bash scripts/device_selftest.sh --check doctor"
    assert "COULD NOT START" in md and data["reason"] in md
    log = (out / "selftest.log").read_text()
    # the build failed, so the pure-Python tree was copied, and the log says so
    assert "gpuprobe source: copied the checkout's tree" in log
    site = tmp_path / "site" / "gpuprobe"
    assert (site / "kernels" / "paged_attention.py").is_file() and (site / "csrc" / "fma_peak.cu").is_file()


def test_selftest_that_dies_before_its_summary_is_reported(tmp_path):
    """pip and the import check succeed; the selftest itself exits at once without writing anything."""
    _stand_in(tmp_path / "bin", f'''
        case "$*" in
          *"-m pip"*) exit 0 ;;
          *"import gpuprobe"*) echo "{tmp_path}/site/gpuprobe"; exit 0 ;;
          *"-m gpuprobe selftest"*) echo "selftest: crashed at start" >&2; exit 3 ;;
        esac
        exit 1
    ''')
    r, out = _run(tmp_path)
    assert r.returncode == 3
    data, md = _both_summaries(out)
    assert "started but wrote no summary" in data["reason"] and "selftest: crashed at start" in md
    log = (out / "selftest.log").read_text()
    assert "gpuprobe source: built from the checkout with pip" in log


def test_a_carried_gpuprobe_wheel_is_never_installed(tmp_path):
    """A gpuprobe wheel in .whl/ is left out (and said so); the others are installed."""
    record = _pip_recorder(tmp_path)
    _, out = _run_with_wheels(tmp_path, "gpuprobe-0.0.1-py3-none-any.whl", "zz_test_nvtx-0.0-py3-none-any.whl")
    log = (out / "selftest.log").read_text()
    assert "ignoring gpuprobe-0.0.1-py3-none-any.whl" in log
    calls = record.read_text()
    assert "zz_test_nvtx-0.0-py3-none-any.whl" in calls and "gpuprobe-0.0.1" not in calls
    _both_summaries(out)


def test_real_selftest_through_the_script_from_outside_the_checkout(tmp_path):
    """With the real interpreter: gpuprobe (with kernels and csrc) imports from the site, PYTHONPATH is
    extended (what was there stays), the run's own summary lands in $OUT."""
    _stand_in(tmp_path / "bin", f'exec {sys.executable} "$@"\n')
    r, out = _run(tmp_path, "--check", "analytic_vs_fixture", env={"PYTHONPATH": "/nonexistent/keep-me"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data, md = _both_summaries(out)
    assert [c["name"] for c in data["checks"]] == ["analytic_vs_fixture"] and data["counts"]["passed"] == 1
    assert "could_not_start" not in data and (out / "evidence.tar.gz").is_file()
    log = (out / "selftest.log").read_text()
    assert f"gpuprobe imports from {tmp_path / 'site' / 'gpuprobe'} (PYTHONPATH={tmp_path / 'site'}:/nonexistent/keep-me;" \
        in log
    assert "selftest budget" in log


def test_wheels_install_one_by_one(tmp_path):
    """A wheel that does not install (another Python's) fails alone; the others are installed."""
    record = _pip_recorder(tmp_path, failing="zz_test_bad")
    bad = "zz_test_bad-0.0-cp39-cp39-manylinux_2_17_x86_64.whl"
    _, out = _run_with_wheels(tmp_path, bad, "zz_test_good-0.0-py3-none-any.whl")
    calls = [c for c in record.read_text().splitlines() if "zz_test_" in c]
    assert len(calls) == 2 and all(c.count("zz_test_") == 1 for c in calls)  # one pip call per wheel
    log = (out / "selftest.log").read_text()
    assert f"installing {bad} failed" in log and "installed 1 of 2 carried wheel(s)" in log


def test_the_script_ends_everything_the_run_left_running(tmp_path):
    """A process of the run in a session of its own (as an MPS daemon is) does not outlive the script."""
    pid_file = tmp_path / "leftover.pid"
    _stand_in(tmp_path / "bin", f'''
        case "$*" in
          *"-m pip"*) exit 0 ;;
          *"import gpuprobe"*) echo "{tmp_path}/site/gpuprobe"; exit 0 ;;
          *"-m gpuprobe selftest"*) setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}; exit 0 ;;
        esac
        exit 1
    ''')
    r, out = _run(tmp_path)
    pid = int(pid_file.read_text())
    from gpuprobe.system.children import process_alive

    assert not process_alive(pid), "a process of the run outlived the script"
    assert "ending what the run left running" in (out / "selftest.log").read_text()
