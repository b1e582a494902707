"""A sweep stopped by SIGINT, SIGTERM, SIGHUP or a SIGKILL of its parent leaves no process behind, and
``--resume`` continues it. The point runs a grandchild through the project's child runner, as a measured
point runs ncu and ncu the profiled program."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gpuprobe.system.children import process_alive
from gpuprobe.measure.sweep import LOCK_FILE, run_sweep

WORKER = '''
import os, sys
from gpuprobe.system.children import run_child

def work(tag, hold=0.0, pids=None):
    if pids:
        open(pids, "a").write(f"{os.getpid()}\\n")
    if hold:  # a grandchild in its own process group, like ncu under a measured point
        code = f"import os, time; open({pids!r}, 'a').write(str(os.getpid()) + '\\\\n'); time.sleep({hold})"
        run_child([sys.executable, "-c", code], None)
    return {"tag": tag}
'''

DRIVER = '''
import sys
from gpuprobe.cli._signals import interrupt_on_termination
from gpuprobe.measure.sweep import run_sweep

with interrupt_on_termination():
    try:
        run_sweep([{"tag": "slow", "hold": 120, "pids": sys.argv[2]}], "sig_workers:work", sys.argv[1],
                  progress=False)
    except KeyboardInterrupt:
        sys.exit(130)
'''


@pytest.fixture()
def env(tmp_path, monkeypatch):
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "sig_workers.py").write_text(WORKER)
    (mod / "driver.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(mod))
    path = os.pathsep.join([str(mod), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    return mod


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals and /proc are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_no_process_of_the_run_outlives_it(env, tmp_path, sig):
    out, pids = tmp_path / "run", tmp_path / "pids.txt"
    scratch = tmp_path / "tmp"  # a SIGKILLed parent cannot remove its point's temporary folder: keep it here
    scratch.mkdir()
    driver = subprocess.Popen([sys.executable, str(env / "driver.py"), str(out), str(pids)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
            time.sleep(0.1)
        started = [int(x) for x in pids.read_text().split()]
        assert len(started) == 2 and all(process_alive(p) for p in started)
        driver.send_signal(sig)
        driver.wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(process_alive(p) for p in started):
            time.sleep(0.1)
        assert not [p for p in started if process_alive(p)], f"left running after {signal.Signals(sig).name}"
        if sig != signal.SIGKILL:
            assert driver.returncode == 130 and not (out / LOCK_FILE).exists()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    # the interrupted point is not recorded as finished; --resume runs it
    recs = run_sweep([{"tag": "slow", "hold": 0, "pids": str(pids)}], "sig_workers:work", out, resume=True,
                     progress=False)
    assert [r["status"] for r in recs] == ["ok"]


def test_a_folder_in_use_is_refused(env, tmp_path):
    from gpuprobe.errors import UserError

    (tmp_path / LOCK_FILE).write_text(f"{os.getppid()}\n")  # a live process holds the folder
    with pytest.raises(UserError, match="still running"):
        run_sweep([{"tag": "x"}], "sig_workers:work", tmp_path, progress=False)
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # a stale claim: taken over
    assert run_sweep([{"tag": "x"}], "sig_workers:work", tmp_path, isolate=False, progress=False)[0]["status"] == "ok"
