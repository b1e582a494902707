"""Replica orchestration with a short-lived real child process in place of the engine, and the MPS
daemon's start/stop logic with a stand-in control binary (a script that records its calls: process
control only, it produces no measurement)."""
from __future__ import annotations

import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpuprobe.cli import main
from gpuprobe.errors import GpuprobeError, NotAvailable
from gpuprobe.system.children import process_alive as _alive
from gpuprobe.measure.replicas import MPSDaemon, memory_share, processes_with_env, run_replicas
from gpuprobe.system.telemetry import Telemetry

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gpuprobe.measure.replicas import wait_for_go, write_result

    i = int(os.environ["GPUPROBE_REPLICA_INDEX"])
    mode = sys.argv[1]
    Path(os.environ["PID_DIR"], f"pid{i}").write_text(str(os.getpid()))
    time.sleep(0.15 * i)  # replicas take different times to set up
    if mode == f"fail-setup-{i}":
        print("replica could not allocate its KV cache", file=sys.stderr)
        sys.exit(3)
    if mode == f"hang-setup-{i}":
        time.sleep(60)
    wait_for_go()
    t0 = time.time()
    time.sleep(0.3)  # the decode loop
    if mode == f"fail-run-{i}":
        raise RuntimeError("step failed")
    write_result({"tokens": 100 * (i + 1), "t_start": t0, "t_end": time.time(), "step_latency_mean_s": 0.01})
""")


@pytest.fixture
def worker(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("PID_DIR", str(pids))
    return lambda mode="ok": [sys.executable, str(script), mode]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_replicas_start_together_and_aggregate(worker, tmp_path):
    run = run_replicas(worker(), 3, work_dir=tmp_path / "w")
    assert [r.ok for r in run.results] == [True, True, True]
    starts = [r.t_start for r in run.results]
    assert max(starts) - min(starts) < 0.15  # setups differ by 0.3 s; the barrier releases them together
    assert run.aggregate_tokens_per_s == pytest.approx(600 / run.window_s)
    assert run.sum_tokens_per_s == pytest.approx(sum(r.tokens_per_s for r in run.results))
    assert run.results[2].result["step_latency_mean_s"] == 0.01


def test_a_replica_failing_in_setup_is_reported_and_the_others_stand(worker, tmp_path):
    run = run_replicas(worker("fail-setup-1"), 3, work_dir=tmp_path / "w")
    assert [r.ok for r in run.results] == [True, False, True]
    bad = run.results[1]
    assert bad.returncode == 3 and "could not allocate its KV cache" in bad.reason
    assert run.aggregate_tokens_per_s == pytest.approx((100 + 300) / run.window_s)


def test_a_replica_failing_in_its_loop_is_reported(worker, tmp_path):
    run = run_replicas(worker("fail-run-0"), 2, work_dir=tmp_path / "w")
    assert [r.ok for r in run.results] == [False, True]
    assert "RuntimeError: step failed" in run.results[0].reason


def test_a_hung_replica_is_ended_after_the_setup_timeout(worker, tmp_path):
    t = time.monotonic()
    run = run_replicas(worker("hang-setup-1"), 2, work_dir=tmp_path / "w", setup_timeout_s=1.0)
    assert time.monotonic() - t < 10
    assert run.results[0].ok and not run.results[1].ok and "not set up" in run.results[1].reason
    assert not alive(int((Path(os.environ["PID_DIR"]) / "pid1").read_text()))


def test_children_are_ended_when_the_orchestrator_is_interrupted(worker, tmp_path):
    def command(i):
        if i == 2:
            time.sleep(0.3)  # let the first two start
            raise KeyboardInterrupt
        return worker()

    with pytest.raises(KeyboardInterrupt):
        run_replicas(command, 3, work_dir=tmp_path / "w")
    pids = [int(p.read_text()) for p in Path(os.environ["PID_DIR"]).glob("pid*")]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


class WallPowerNVML:
    """Stand-in for ``pynvml``: a constant 400 W and an energy counter that follows the wall clock."""

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPowerUsage(self, h):
        return 400_000

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return int(time.time() * 400_000)

    def __getattr__(self, name):  # clocks, temperature... not supported by this double
        raise AttributeError(name)


def test_energy_is_counted_over_the_loops(worker, tmp_path):
    tel = Telemetry(nvml=WallPowerNVML(), interval_s=0.02, clock=time.time)
    run = run_replicas(worker(), 2, work_dir=tmp_path / "w", telemetry=tel)
    assert run.energy_j == pytest.approx(400.0 * run.window_s, rel=0.05)
    assert run.joules_per_token == pytest.approx(run.energy_j / 300)
    assert run.telemetry["available"] and run.telemetry["energy_source"] == "counter"
    assert run.telemetry["duration_s"] >= run.window_s


# --------------------------------------------------------------------------- MPS start/stop

FAKE_CONTROL = textwrap.dedent("""\
    #!/usr/bin/env python3
    # Stand-in for nvidia-cuda-mps-control (process control only): records each call, keeps a
    # "running" flag in the pipe folder, answers get_server_list only while running.
    import os, sys
    from pathlib import Path
    pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
    stdin = "" if "-d" in sys.argv else sys.stdin.read().strip()
    with open(os.environ["FAKE_MPS_CALLS"], "a") as f:
        f.write(" ".join(sys.argv[1:]) + "|" + stdin + "|" + str(pipe) + "\\n")
    flag = pipe / "running"
    if "-d" in sys.argv:
        if os.environ.get("FAKE_MPS_FAIL"):
            print("An instance of this daemon is already running", file=sys.stderr)
            sys.exit(1)
        flag.touch()
        if os.environ.get("FAKE_MPS_DAEMONIZE"):
            # like the real -d: fork a daemon in its own session that outlives this call, writes its
            # pid file into the pipe folder, and (unlike a tidy daemon) keeps the inherited output open
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    (pipe / "nvidia-cuda-mps-control.pid").write_text(str(os.getpid()))
                    import time
                    while not (pipe / "quit-request").exists() or os.environ.get("FAKE_MPS_IGNORE_QUIT"):
                        time.sleep(0.05)
                    os._exit(0)
                os._exit(0)
    elif stdin == "quit":
        flag.unlink(missing_ok=True)
        (pipe / "quit-request").touch()
    elif stdin == "get_server_list":
        sys.exit(0 if flag.exists() else 1)
""")


@pytest.fixture
def fake_control(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "nvidia-cuda-mps-control"
    exe.parent.mkdir()
    exe.write_text(FAKE_CONTROL)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FAKE_MPS_CALLS", str(calls))
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    return lambda: [line.split("|") for line in calls.read_text().splitlines()]


def test_mps_daemon_gets_private_folders_and_is_always_quit(fake_control, tmp_path):
    with MPSDaemon(root=tmp_path) as d:
        pipe = Path(d.env["CUDA_MPS_PIPE_DIRECTORY"])
        assert pipe.is_dir() and Path(d.env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        assert pipe.parent.parent == tmp_path and d.is_running()
    assert d.stopped_cleanly and not pipe.parent.exists()
    calls = fake_control()
    assert calls[0][:2] == ["-d", ""] and all(c[2] == str(pipe) for c in calls)
    assert [c[1] for c in calls].count("quit") == 1
    assert calls[-1][1] == "get_server_list"  # checked it was gone after quit
    d.stop()  # idempotent: no second quit
    assert [c[1] for c in fake_control()].count("quit") == 1


def test_mps_daemon_is_quit_on_ctrl_c_and_errors(fake_control, tmp_path):
    for exc in (KeyboardInterrupt, RuntimeError):
        with pytest.raises(exc):
            with MPSDaemon(root=tmp_path):
                raise exc()
    assert [c[1] for c in fake_control()].count("quit") == 2


def test_mps_daemon_start_failure_cleans_up(fake_control, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    with pytest.raises(GpuprobeError, match="did not start.*already running"):
        MPSDaemon(root=tmp_path).start()
    assert not list(tmp_path.glob("gpuprobe-mps-*"))
    assert [c[1] for c in fake_control()].count("quit") == 1


def test_mps_daemon_that_forks_is_followed_by_its_pid(fake_control, tmp_path, monkeypatch):
    """A daemon that forks and keeps the inherited output open does not hold up the start; it is
    followed through its pid file, and quit is seen to end that very process."""
    monkeypatch.setenv("FAKE_MPS_DAEMONIZE", "1")
    t0 = time.monotonic()
    with MPSDaemon(root=tmp_path, timeout_s=20) as d:
        assert time.monotonic() - t0 < 10, "-d held up by the daemon's open output"
        pid = d.pid
        assert pid and d.is_running() and d.answers() and pid in d.processes()
    assert d.stopped_cleanly and not d.killed
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # reaped by init, or already gone
            os.kill(pid, 0)
            time.sleep(0.1)


def test_mps_daemon_that_ignores_quit_is_ended_and_reported(fake_control, tmp_path, monkeypatch):
    """When quit does not end the daemon, its process (started by us, known by id) is ended and the
    stop is reported as not clean."""
    monkeypatch.setenv("FAKE_MPS_DAEMONIZE", "1")
    monkeypatch.setenv("FAKE_MPS_IGNORE_QUIT", "1")
    with MPSDaemon(root=tmp_path, timeout_s=1.0) as d:
        pid = d.pid
        assert pid and d.is_running()
    assert d.stopped_cleanly is False and d.killed == [pid]
    time.sleep(0.3)
    assert not _alive(pid)


def test_mps_without_the_control_binary_is_not_available(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NotAvailable, match="nvidia-cuda-mps-control"):
        MPSDaemon().start()


def test_replicas_run_under_the_daemon_environment(fake_control, worker, tmp_path):
    with MPSDaemon(root=tmp_path) as d:
        run = run_replicas(worker(), 2, env=d.env, work_dir=tmp_path / "w")
        assert len(run.ok) == 2
    assert [c[1] for c in fake_control()].count("quit") == 1


# --------------------------------------------------------------------------- helpers and the CLI


def test_memory_share_leaves_room_for_fixed_costs():
    total = 80 * 2**30
    assert memory_share(1, 2**30, total) == pytest.approx(0.98 - 1 / 80)
    assert memory_share(4, 2**30, total) * 4 * total + 4 * 2**30 <= total
    with pytest.raises(GpuprobeError, match="do not fit"):
        memory_share(100, 2**30, total)


def test_processes_with_env_finds_our_child(tmp_path):
    import subprocess

    env = {**os.environ, "GPUPROBE_TEST_MARK": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"], env=env)
    try:
        time.sleep(0.1)
        assert p.pid in processes_with_env("GPUPROBE_TEST_MARK", str(tmp_path))
    finally:
        p.kill()
        p.wait()
    assert p.pid not in processes_with_env("GPUPROBE_TEST_MARK", str(tmp_path))


def test_cli_without_a_gpu_is_one_line_exit_2(monkeypatch, capsys):
    import gpuprobe.specs.gpus as gpus

    monkeypatch.setattr(gpus, "detect_gpu", lambda: None)
    assert main(["replicate", "--model", "qwen2-0.5b", "--replicas", "1,2", "--batch", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA GPU" in err and len(err.splitlines()) == 1
    assert main(["replicate", "--model", "qwen2-0.5b", "--replicas", "1,2", "--batch", "1,2,3"]) == 2
    assert main(["replicate", "--model", "no-such-model", "--batch", "8"]) == 2


def test_readline_of_a_child_that_never_answers_times_out_and_ends_it():
    """measure_fixed_cost_bytes reads the child's "ready" line with a time-out: a child hung in CUDA
    initialisation must not hold the advisor or replicate forever."""
    import subprocess

    from gpuprobe.measure.replicas import _readline

    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    t0 = time.monotonic()
    assert _readline(hung, 0.5) == ""
    assert time.monotonic() - t0 < 10 and hung.poll() is not None
    ready = subprocess.Popen([sys.executable, "-c", "print('ready 42', flush=True)"], stdout=subprocess.PIPE,
                             text=True)
    assert _readline(ready, 30).split() == ["ready", "42"]
    ready.wait()


def test_a_daemon_left_by_a_killed_run_is_stopped_by_the_next(fake_control, tmp_path, monkeypatch):
    """The run that started a daemon is killed with SIGKILL (no quit, no clean-up); the next run's start
    finds the folder by its dead owner, quits that daemon and removes the folder."""
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("FAKE_MPS_DAEMONIZE", "1")
    code = ("import sys, time; from gpuprobe.measure.replicas import MPSDaemon; "
            f"d = MPSDaemon(root={str(tmp_path)!r}).start(); print(d.pid, flush=True); time.sleep(120)")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    stale_pid = int(owner.stdout.readline())
    stale_dir = next(tmp_path.glob("gpuprobe-mps-*"))
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    assert _alive(stale_pid) and stale_dir.is_dir()  # the daemon outlived its owner
    with MPSDaemon(root=tmp_path, timeout_s=10) as d:
        assert d.reaped == [str(stale_dir)]
        deadline = time.monotonic() + 10
        while _alive(stale_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(stale_pid) and not stale_dir.exists()
        assert Path(d.env["CUDA_MPS_PIPE_DIRECTORY"]).is_dir()  # the new daemon is its own
    assert not list(tmp_path.glob("gpuprobe-mps-*"))


def test_a_folder_whose_daemon_is_still_running_is_kept_for_the_next_run(fake_control, tmp_path, monkeypatch):
    """A stop that cannot end the daemon's processes leaves their pipe folder, so a later run can reach them."""
    from gpuprobe.measure import replicas

    monkeypatch.setenv("FAKE_MPS_DAEMONIZE", "1")
    monkeypatch.setenv("FAKE_MPS_IGNORE_QUIT", "1")  # the daemon outlives quit: only a signal ends it
    d = MPSDaemon(root=tmp_path, timeout_s=1.0).start()
    folder = d.dir
    monkeypatch.setattr(MPSDaemon, "_end_leftovers", lambda self: None)  # as if interrupted while ending them
    d.stop()
    assert folder.is_dir() and d.processes()
    monkeypatch.undo()
    monkeypatch.setenv("FAKE_MPS_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    (folder / MPSDaemon.OWNER_FILE).write_text("999999999\n")  # its owner is gone
    pid = d.pid
    assert replicas.stop_stale_daemons(root=tmp_path, timeout_s=1.0) == [str(folder)]
    assert not folder.exists()
    time.sleep(0.3)
    assert not _alive(pid)
