"""The executor layer without a cluster: the local executor's retries, the options and their one-line errors
(checked before anything is submitted), Slurm time limits, the job ledger, and a folder's status."""
from __future__ import annotations

import argparse

import pytest

from _sweep_workers import WORKER, put_worker_on_path
from gpuprobe.cli._executor import add_executor_arguments, executor_from_args
from gpuprobe.errors import UserError
from gpuprobe.measure.executors import JobLedger, LocalExecutor, SlurmExecutor, folder_status, parse_slurm_time
from gpuprobe.measure.sweep import point_key, read_points, read_results, run_sweep


@pytest.fixture(autouse=True)
def workers(monkeypatch):
    """The shared worker module, importable by the child processes."""
    put_worker_on_path(monkeypatch)


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_executor_arguments(p)
    return p.parse_args(list(argv))


def test_local_executor_retries_a_failed_point_but_not_an_oom(tmp_path, capsys):
    record = tmp_path / "ran.txt"
    pts = [{"batch": 1, "fail": True, "record": str(record)}, {"batch": 2, "oom": True, "record": str(record)},
           {"batch": 4, "record": str(record)}]
    recs = run_sweep(pts, WORKER, tmp_path / "out", executor=LocalExecutor(retries=2))
    assert record.read_text().split() == ["1", "1", "1", "2", "4"]
    assert {r["point"]["batch"]: r["status"] for r in recs} == {1: "failed", 2: "oom", 4: "ok"}
    history = read_results(tmp_path / "out")
    assert [r.get("attempt", 1) for r in history if r["point"]["batch"] == 1] == [1, 2, 3]
    cap = capsys.readouterr()
    assert cap.out == ""  # the live line and the messages are on stderr; stdout is the command's output
    assert "running it again" in cap.err and "done 1" in cap.err and "failed 2" in cap.err
    st = folder_status(tmp_path / "out", read_points(tmp_path / "out"))
    assert (st["points"], st["done"], st["failed"], st["queued"], st["running"]) == (3, 1, 2, 0, 0)


def test_the_default_executor_is_local_without_retries():
    ex = executor_from_args(_parse())
    assert isinstance(ex, LocalExecutor) and ex.retries == 0
    assert executor_from_args(_parse("--retries", "3")).retries == 3


@pytest.mark.parametrize("argv, words", [
    (("--executor", "pbs"), "--executor 'pbs' is not an executor"),
    (("--slurm-partition", "gpu"), "--slurm-partition applies to --executor slurm"),
    (("--max-parallel", "4", "--slurm-setup", "module load cuda"), "--slurm-setup, --max-parallel apply"),
])
def test_bad_executor_options_are_one_line(argv, words):
    with pytest.raises(UserError, match=words.replace("'", ".")) as e:
        executor_from_args(_parse(*argv))
    assert "\n" not in str(e.value)


def test_slurm_without_its_tools_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel, sinfo here
    with pytest.raises(UserError, match="sbatch, squeue, scancel, sinfo are not on PATH"):
        executor_from_args(_parse("--executor", "slurm", "--slurm-partition", "gpu"))


def test_slurm_options_become_the_job_settings(monkeypatch):
    from gpuprobe.measure import executors

    seen = []
    monkeypatch.setattr(executors, "check_slurm", lambda parts: seen.append(parts))
    import gpuprobe.cli._executor as cli_executor

    monkeypatch.setattr(cli_executor, "check_slurm", lambda parts: seen.append(parts))
    ex = executor_from_args(_parse("--executor", "slurm", "--slurm-partition", "h100", "--slurm-time", "1:30:00",
                                   "--slurm-gpus-per-job", "2", "--slurm-constraint", "perfctr", "--max-parallel", "3",
                                   "--slurm-setup", "module load cuda", "--slurm-setup", "export A=1",
                                   "--slurm-account", "lab"), partitions=["h200"])
    assert isinstance(ex, SlurmExecutor) and ex.retries == 2 and seen == [["h100", "h200"]]
    s = ex.settings
    assert (s.partition, s.time_min, s.gpus_per_job, s.constraint, s.max_parallel, s.account) == \
        ("h100", 90, 2, "perfctr", 3, "lab")
    assert s.setup == ("module load cuda", "export A=1")
    from gpuprobe.measure.sweep import PointTask

    task = PointTask(point={"batch": 1}, index=0, out=".", worker="m:f", timeout_s=600,
                     placement={"partition": "h200"})
    params = ex._parameters(task, 8)
    assert params["partition"] == "h200" and params["gpus_per_node"] == 2 and params["array_parallelism"] == 3
    assert params["time"] == 90 and params["constraint"] == "perfctr" and params["account"] == "lab"
    assert params["setup"] == ["module load cuda", "export A=1"] and params["wckey"] is None


@pytest.mark.parametrize("text, minutes", [("90", 90), ("30:00", 30), ("1:30:00", 90), ("0:00:30", 1),
                                           ("2-0", 2880), ("1-02:03", 1563), ("1-00:00:01", 1441)])
def test_slurm_time_limits(text, minutes):
    assert parse_slurm_time(text) == minutes


@pytest.mark.parametrize("text", ["soon", "0", "1:2:3:4", "-5", ""])
def test_bad_slurm_time_limits_are_one_line(text):
    with pytest.raises(UserError, match="--slurm-time"):
        parse_slurm_time(text)


def test_ledger_open_jobs_and_a_batch_cut_off_inside_sbatch(tmp_path):
    ledger = JobLedger(tmp_path)
    a, b, c = (point_key({"batch": i}) for i in (1, 2, 4))
    ledger.submitting("t1", [a, b])
    ledger.submitted("t1", ["7_0", "7_1"])
    ledger.ended("7_0", "ok")
    ledger.submitting("t2", [c])  # the driver died before sbatch answered
    with open(ledger.path, "a") as f:
        f.write('{"event": "subm')  # and a line cut short
    jobs, lost = ledger.open_jobs()
    assert [(j.key, j.job_id) for j in jobs] == [(b, "7_1")] and lost == {"t2": [c]}
    ledger.cancelled(["7_1"])
    jobs, _ = ledger.open_jobs()
    assert jobs[0].cancelled


def test_status_says_when_squeue_is_missing(tmp_path, monkeypatch):
    ledger = JobLedger(tmp_path)
    ledger.submitting("t1", [point_key({"batch": 1})])
    ledger.submitted("t1", ["9"])
    monkeypatch.setenv("PATH", str(tmp_path))
    st = folder_status(tmp_path, [{"batch": 1}])
    assert st["points"] == 1 and st["done"] == 0 and "squeue not on PATH" in st["note"]
