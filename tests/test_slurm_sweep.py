"""Sweeps whose points are Slurm jobs, against a real Slurm (tests/slurm_cluster.py starts one; these tests
skip with the reason where it cannot run): the same records as the local executor, a SIGKILLed driver
resumed without losing or repeating a point, Ctrl-C and SIGTERM cancelling every job, a failing job retried
and then reported with its log."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuprobe.measure.executors import LEDGER_FILE, SLURM_DIR, LocalExecutor, SlurmExecutor, SlurmSettings, \
    folder_status
from gpuprobe.measure.sweep import read_points, read_results, run_sweep
pytest_plugins = ("slurm_cluster",)  # its fixtures: one test Slurm for the session

WORKER = "slurm_workers:work"
WORKER_CODE = '''
import os, signal, time

def work(batch, fail=False, kill_job=False, sleep=0.0, record=None):
    if record:
        with open(record, "a") as f:
            f.write(f"{batch}\\n")
    time.sleep(sleep)
    if kill_job:  # the job's own Python dies: the job ends without a result
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
    if fail:
        os._exit(3)
    return {"batch": batch, "tokens_per_s": 100.0 * batch, "ran_under_slurm": "SLURM_JOB_ID" in os.environ}
'''
DRIVER = '''
import signal, sys
from gpuprobe.cli._signals import interrupt_on_termination
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as gpuprobe.cli.main sets it for a command
from gpuprobe.measure.executors import SlurmExecutor, SlurmSettings
from gpuprobe.measure.sweep import run_sweep

points = [{"batch": b, "sleep": float(sys.argv[3]), "record": sys.argv[2]} for b in range(1, int(sys.argv[4]) + 1)]
with interrupt_on_termination():
    try:
        run_sweep(points, "slurm_workers:work", sys.argv[1], resume=True, progress=False,
                  executor=SlurmExecutor(SlurmSettings(max_parallel=2, poll_s=0.3)))
    except KeyboardInterrupt:
        sys.exit(130)
'''


@pytest.fixture
def workers(tmp_path, monkeypatch):
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "slurm_workers.py").write_text(WORKER_CODE)
    (mod / "driver.py").write_text(DRIVER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mod), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(mod))
    return mod


def _comparable(rec: dict) -> dict:
    """A record without what differs from run to run (timings) and from executor to executor (the job)."""
    out = {k: v for k, v in rec.items() if k not in ("seconds", "finished_at", "job")}
    out["result"] = {k: v for k, v in (rec["result"] or {}).items() if k != "ran_under_slurm"}
    return out


def _ran(record: Path) -> list[int]:
    return sorted(int(x) for x in record.read_text().split()) if record.exists() else []


def test_eight_points_as_jobs_give_the_local_records(slurm, workers, tmp_path):
    points = [{"batch": b} for b in (1, 2, 4, 8, 16, 32, 64, 128)]
    local = run_sweep(points, WORKER, tmp_path / "local", progress=False, executor=LocalExecutor())
    jobs = run_sweep(points, WORKER, tmp_path / "slurm", progress=False,
                     executor=SlurmExecutor(SlurmSettings(max_parallel=4, poll_s=0.3)))
    # the same records (in the order the jobs finished)
    order = lambda recs: sorted(recs, key=lambda r: r["point"]["batch"])  # noqa: E731
    assert [_comparable(r) for r in order(jobs)] == [_comparable(r) for r in order(local)]
    assert all(r["status"] == "ok" and r["result"]["ran_under_slurm"] for r in jobs)
    assert not any(r["result"]["ran_under_slurm"] for r in local)
    ids = [r["job"]["job_id"] for r in jobs]
    arrays = {i.split("_")[0] for i in ids}
    assert len(arrays) == 1 and sorted(int(i.split("_")[1]) for i in ids) == list(range(8))  # one array
    assert all(r["job"]["node"] and r["job"]["attempt"] == 1 for r in jobs)
    lines = (tmp_path / "slurm" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 8
    # the sbatch script submitit wrote: one array throttled to 4, one GPU per job, the default partition
    (script,) = (tmp_path / "slurm" / SLURM_DIR).glob("*/*/*submission.sh")
    text = script.read_text()
    assert "#SBATCH --array=0-7%4" in text and "#SBATCH --gpus-per-node=1" in text
    assert "--wckey" not in text and "#SBATCH --job-name=gpuprobe-" in text
    # the point logs are where the local executor writes them
    assert sorted(p.name for p in (tmp_path / "slurm" / "logs").iterdir()) == [f"point{i}.log" for i in range(8)]
    status = folder_status(tmp_path / "slurm", read_points(tmp_path / "slurm"))
    assert (status["points"], status["done"], status["failed"], status["queued"], status["running"]) == (8, 8, 0, 0, 0)


def test_a_killed_driver_is_resumed_without_losing_or_repeating_a_point(slurm, workers, tmp_path):
    out, record = tmp_path / "out", tmp_path / "ran.txt"
    driver = subprocess.Popen([sys.executable, str(workers / "driver.py"), str(out), str(record), "1.5", "6"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(read_results(out)) < 1:
            time.sleep(0.2)
        assert read_results(out), driver.communicate(timeout=5)[0] if driver.poll() is not None else "no record"
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
    before = {r["point"]["batch"] for r in read_results(out)}
    assert 1 <= len(before) < 6
    in_queue = slurm.jobs()
    assert in_queue, "the killed driver's jobs should still be queued or running"
    # the ledger and squeue show them at any time
    mid = folder_status(out, read_points(out))
    assert mid["queued"] + mid["running"] >= 1 and mid["done"] >= 1
    points = [{"batch": b, "sleep": 1.5, "record": str(record)} for b in range(1, 7)]
    recs = run_sweep(points, WORKER, out, resume=True, progress=False,
                     executor=SlurmExecutor(SlurmSettings(max_parallel=2, poll_s=0.3)))
    assert sorted(r["point"]["batch"] for r in recs) == list(range(1, 7)) and all(r["status"] == "ok" for r in recs)
    assert _ran(record) == list(range(1, 7))  # every point ran exactly once
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(x["point"]["batch"] for x in lines) == list(range(1, 7))  # one record per point
    adopted = {x["job"]["job_id"] for x in lines if x["point"]["batch"] not in before}
    assert adopted & set(in_queue), "jobs queued when the driver died were adopted, not submitted again"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_an_interrupted_driver_cancels_its_jobs(slurm, workers, tmp_path, sig):
    out, record = tmp_path / "out", tmp_path / "ran.txt"
    driver = subprocess.Popen([sys.executable, str(workers / "driver.py"), str(out), str(record), "60", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_ran(record)) < 2:  # two running, three queued
            time.sleep(0.2)
        assert len(_ran(record)) == 2
        time.sleep(1.0)  # the driver's next look at squeue (every 0.3 s) sees both running
        driver.send_signal(sig)
        text, _ = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, text
    m = re.search(r"cancelled (\d+) Slurm job\(s\) \((\d+) running, (\d+) queued\)", text)
    assert m and m.groups() == ("5", "2", "3"), text
    assert slurm.wait_empty(20) == []
    assert read_results(out) == []  # nothing finished; nothing recorded as failed either
    events = [json.loads(x)["event"] for x in (out / SLURM_DIR / LEDGER_FILE).read_text().splitlines()]
    assert events == ["submitting", "submitted", "cancelled"]
    from slurm_cluster import cluster_processes

    assert not [p for p in cluster_processes(slurm.root) if "slurmstepd" in Path(f"/proc/{p}/cmdline").read_text()]


def test_a_failing_job_is_retried_then_reported_with_its_log(slurm, workers, tmp_path, capsys):
    record = tmp_path / "ran.txt"
    points = [{"batch": 1, "kill_job": True, "record": str(record)}, {"batch": 2, "record": str(record)},
              {"batch": 4, "fail": True, "record": str(record)}]
    recs = run_sweep(points, WORKER, tmp_path / "out", progress=False,
                     executor=SlurmExecutor(SlurmSettings(poll_s=0.3), retries=1, lost_grace_s=1.0))
    by = {r["point"]["batch"]: r for r in recs}
    assert {b: r["status"] for b, r in by.items()} == {1: "failed", 2: "ok", 4: "failed"}
    assert _ran(record) == [1, 1, 2, 4, 4]  # the failing points ran twice (one retry), the good one once
    lost = by[1]
    assert lost["job"]["attempt"] == 2 and "ended without a result" in lost["reason"]
    assert "sacct unavailable" in lost["reason"] and "accounting storage is disabled" in lost["reason"]
    assert lost["job"]["log_tail"] and Path(lost["job"]["log"]).exists()
    assert "exit status 3" in by[4]["reason"] and by[4]["job"]["attempt"] == 2
    history = [(r["point"]["batch"], r["status"]) for r in read_results(tmp_path / "out")]
    assert sorted(history) == [(1, "failed"), (1, "failed"), (2, "ok"), (4, "failed"), (4, "failed")]
    err = capsys.readouterr().err
    assert "running it again" in err and f"Slurm job {lost['job']['job_id']} failed 2 time(s)" in err
    assert lost["job"]["log_tail"].splitlines()[-1] in err  # the log's tail is shown
