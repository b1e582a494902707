"""The sweep orchestration: child per point, results.jsonl per finished point, failures, resume, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _sweep_workers import WORKER, put_worker_on_path
from gpuprobe.measure.sweep import append_result, read_results, run_sweep


@pytest.fixture(autouse=True)
def worker_on_path(monkeypatch):
    """A real worker module the child processes can import."""
    return put_worker_on_path(monkeypatch)


def test_points_run_in_children_and_failures_are_recorded(tmp_path):
    pts = [{"batch": 1}, {"batch": 2, "fail": True}, {"batch": 4, "oom": True}, {"batch": 8}]
    recs = run_sweep(pts, WORKER, tmp_path, progress=False)
    status = {r["point"]["batch"]: r["status"] for r in recs}
    assert status == {1: "ok", 2: "failed", 4: "oom", 8: "ok"}
    by = {r["point"]["batch"]: r for r in recs}
    assert "exit status 3" in by[2]["reason"]
    assert "out of memory" in by[4]["reason"]
    assert by[1]["result"]["pid"] != os.getpid() and by[1]["result"]["pid"] != by[8]["result"]["pid"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(l)["finished_at"] for l in lines)


def test_timeout_costs_one_point(tmp_path):
    recs = run_sweep([{"batch": 1, "sleep": 30}, {"batch": 2}], WORKER, tmp_path, timeout_s=3, progress=False)
    assert [r["status"] for r in recs] == ["timeout", "ok"]


def test_resume_skips_finished_points(tmp_path):
    record = tmp_path / "ran.txt"
    run_sweep([{"batch": 1, "record": str(record)}, {"batch": 2, "fail": True, "record": str(record)}],
              WORKER, tmp_path, progress=False)
    pts = [{"batch": 1, "record": str(record)}, {"batch": 2, "fail": True, "record": str(record)},
           {"batch": 4, "record": str(record)}]
    recs = run_sweep(pts, WORKER, tmp_path, resume=True, progress=False)
    # batch 1 finished before: not run again; the failed point is retried; batch 4 is new.
    assert record.read_text().split() == ["1", "2", "2", "4"]
    assert [r["point"]["batch"] for r in recs if r["status"] == "ok"] == [1, 4]


def test_truncated_last_line_is_tolerated(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, {"point": {"batch": 1}, "status": "ok", "reason": None, "result": {}, "seconds": 1})
    with open(path, "a") as f:
        f.write('{"point": {"batch": 2}, "sta')
    assert [r["point"]["batch"] for r in read_results(path)] == [1]
    append_result(path, {"point": {"batch": 4}, "status": "ok", "reason": None, "result": {}, "seconds": 1})
    assert [r["point"]["batch"] for r in read_results(path)] == [1, 4]


def test_ctrl_c_leaves_finished_points_readable(tmp_path, worker_on_path):
    script = tmp_path / "drive.py"
    script.write_text(
        "import sys\n"
        "from gpuprobe.measure.sweep import run_sweep\n"
        f"run_sweep([{{'batch': 1}}, {{'batch': 2, 'sleep': 60}}, {{'batch': 4}}], '{WORKER}', sys.argv[1],"
        " progress=False)\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(read_results(out)) < 1:
        time.sleep(0.2)
    time.sleep(1.0)  # the second point is now running
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    recs = read_results(out)
    assert [r["point"]["batch"] for r in recs] == [1]
    assert recs[0]["status"] == "ok"
    assert proc.returncode != 0


def test_inline_mode_for_debugging(tmp_path):
    recs = run_sweep([{"batch": 3}], WORKER, tmp_path, isolate=False, progress=False)
    assert recs[0]["result"]["pid"] == os.getpid()


def test_a_point_that_failed_then_finished_on_resume_is_finished(tmp_path):
    # an OOM recorded by an earlier run; on --resume the same point finishes
    append_result(tmp_path / "results.jsonl", {"point": {"batch": 2}, "status": "oom", "reason": "CUDA out of memory",
                                              "result": None, "seconds": 1.0})
    recs = run_sweep([{"batch": 1}, {"batch": 2}], WORKER, tmp_path, resume=True, progress=False)
    assert [(r["point"]["batch"], r["status"]) for r in recs] == [(2, "ok"), (1, "ok")]
    assert len(read_results(tmp_path)) == 3  # the history stays in results.jsonl


def test_latest_records_prefers_ok_then_the_last():
    from gpuprobe.measure.sweep import latest_records

    a, b = {"batch": 1}, {"batch": 2}
    recs = [{"point": a, "status": "failed"}, {"point": b, "status": "timeout"}, {"point": a, "status": "ok"},
            {"point": b, "status": "oom"}, {"point": a, "status": "failed"}]
    assert [(r["point"]["batch"], r["status"]) for r in latest_records(recs)] == [(1, "ok"), (2, "oom")]
