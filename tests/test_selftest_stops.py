"""How a selftest run ends: at its budget, under a watchdog's SIGTERM, with its parent killed, without a GPU.

No check is ever failed for lack of time or for a stop from outside; the evidence archive is whole however
the run ends; a check's process dies with the runner and runs its clean-up; `--gpu` without a usable GPU
exits with its own code."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from gpuprobe.cli import main
from gpuprobe.tools.selftest import registry
from gpuprobe.tools.selftest.plan import SPARE_FRACTION, make_plan
from gpuprobe.tools.selftest.registry import Check, CheckContext
from gpuprobe.tools.selftest.runner import DEFAULT_BUDGET_S, EXIT_NO_GPU_VERDICT, run_selftest

REPO = Path(__file__).resolve().parent.parent
NO_CUDA_ENV = {"gpu": None, "items": [{"name": "cuda", "status": "missing", "detail": "torch is a CPU-only build"}]}


def _script_budget() -> float:
    """The budget scripts/device_selftest.sh gives the selftest: its wall limit less its end margin and an
    install of about 4 s (as the issue measured: 420 - 4 - 30)."""
    text = (REPO / "scripts" / "device_selftest.sh").read_text()
    wall = float(text.split("wall_s=${WALL_S:-")[1].split("}")[0])
    margin = float(text.split("margin_s=${END_MARGIN_S:-")[1].split("}")[0])
    return wall - margin - 4.0


# -- stand-in checks: module-level, so each check's own process can load them from this file ------------------

def sleeps(ctx: CheckContext) -> dict:
    """Sleeps the seconds the run's options give for this check (its folder's name)."""
    seconds = ctx.options["durations"][ctx.out_dir.name]
    time.sleep(seconds)
    return {"slept_s": seconds}


def sees_the_archive(ctx: CheckContext) -> dict:
    return {"archive_before_me": (ctx.run_dir / "evidence.tar.gz").is_file()}


def _run_in_child(tmp_path: Path, body: str) -> subprocess.Popen:
    """A run in its own Python (stop handlers installed, as the CLI does), with stand-in checks from ``body``."""
    (tmp_path / "stand_ins.py").write_text(textwrap.dedent(body))
    script = textwrap.dedent(f'''
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import stand_ins
        from gpuprobe.tools.selftest.runner import install_stop_handlers, run_selftest
        install_stop_handlers()
        run = run_selftest({str(tmp_path / "out")!r}, checks=stand_ins.CHECKS, environment={{}}, progress=None,
                           budget_s=stand_ins.BUDGET_S, startup_grace_s=1.0)
        print(json.dumps({{"interrupted": run.interrupted, "stop_signal": run.stop_signal}}), flush=True)
    ''')
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path.name} never appeared"


def _archive_names(out: Path) -> list[str]:
    with tarfile.open(out / "evidence.tar.gz") as tar:  # opens and reads to the end: whole, not cut
        return tar.getnames()


# -----------------------------------------------------------------------------------------------------------


def test_sigterm_while_the_runner_stops_a_check_at_its_deadline(tmp_path):
    """The race of the first GPU run: the run's budget runs out, the runner is stopping the check in flight
    (its clean-up takes a while) and the watchdog's SIGTERM arrives. The check is skipped for the run's
    budget (never failed), the run is marked stopped, the archive is whole."""
    proc = _run_in_child(tmp_path, '''
        import time
        from pathlib import Path
        from gpuprobe.tools.selftest.registry import Check
        def first(ctx):
            return {"ok": 1}
        def slow(ctx):
            try:
                time.sleep(60)
            finally:
                (ctx.out_dir / "cleaning").write_text("")  # the runner's SIGTERM came: a slow clean-up
                time.sleep(1.5)
                (ctx.out_dir / "cleaned").write_text("")
        BUDGET_S = 2.5
        CHECKS = {"first": Check("first", "t", first, False, 30.0, "", 0.1),
                  "slow": Check("slow", "t", slow, False, 60.0, "", 0.5),
                  "after": Check("after", "t", first, False, 30.0, "", 0.1)}
    ''')
    _wait_for(tmp_path / "out" / "checks" / "slow" / "cleaning")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1]) == {"interrupted": True, "stop_signal": "SIGTERM"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    got = {c["name"]: c for c in summary["checks"]}
    assert got["first"]["status"] == "passed"
    assert got["slow"]["status"] == "skipped" and "the run's budget ran out" in got["slow"]["reason"]
    assert (tmp_path / "out" / "checks" / "slow" / "cleaned").exists()  # the clean-up was not cut short
    assert got["after"]["status"] == "skipped" and "stopped (SIGTERM)" in got["after"]["reason"]
    assert summary["counts"]["failed"] == 0 and summary["stop_signal"] == "SIGTERM"
    assert "checks/slow/output.txt" in _archive_names(tmp_path / "out")


def test_sigterm_while_the_archive_is_written_leaves_it_whole(tmp_path):
    """A stop signal that arrives while evidence.tar.gz is written waits until it is complete."""
    proc = _run_in_child(tmp_path, '''
        import time
        from pathlib import Path
        from gpuprobe.tools.selftest import bundle
        from gpuprobe.tools.selftest.registry import Check
        _tar = bundle._write_tar
        def slow_tar(path, out_dir, kept, dropped):
            (Path(out_dir) / "writing").write_text("")
            time.sleep(1.0)
            _tar(path, out_dir, kept, dropped)
        bundle._write_tar = slow_tar
        def first(ctx):
            (ctx.out_dir / "data.bin").write_bytes(b"x" * 100_000)
            return {"ok": 1}
        BUDGET_S = 30.0
        CHECKS = {"first": Check("first", "t", first, False, 30.0, "", 0.1)}
    ''')
    _wait_for(tmp_path / "out" / "writing")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1]) == {"interrupted": True, "stop_signal": "SIGTERM"}
    assert "checks/first/data.bin" in _archive_names(tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["evidence"]["files"] >= 2 and summary["checks"][0]["status"] == "passed"
    assert not (tmp_path / "out" / "evidence.tar.gz.tmp").exists()


def test_the_archive_is_written_before_a_check_that_could_overrun(tmp_path):
    """A check whose own budget reaches past the run's end starts only once the evidence so far is archived."""
    checks = {"quick": Check("quick", "t", sleeps, False, 30.0, "", 0.1),
              "risky": Check("risky", "t", sees_the_archive, False, 300.0, "", 0.5)}
    run = run_selftest(tmp_path, checks=checks, environment=NO_CUDA_ENV, progress=None, budget_s=20.0,
                       options={"durations": {"quick": 0.0}}, startup_grace_s=1.0)
    assert run.result("risky").figures == {"archive_before_me": True}
    fits = run_selftest(tmp_path / "b", checks={"quick": checks["quick"],
                                                "fits": Check("fits", "t", sees_the_archive, False, 5.0, "", 0.5)},
                        environment=NO_CUDA_ENV, progress=None, budget_s=20.0,
                        options={"durations": {"quick": 0.0}}, startup_grace_s=1.0)
    assert fits.result("fits").figures == {"archive_before_me": False}  # nothing to fear: no extra archive


def test_simulated_run_at_the_scripts_budget_fails_nothing_for_lack_of_time(tmp_path):
    """The main run's checks with their real estimates and budgets, time scaled down 25-fold, at the script's
    real budget: every check takes its estimate, one takes three times its estimate. The plan fits with
    10% to spare; nothing fails; whatever does not fit is skipped for the budget, with the reason."""
    budget = _script_budget()
    assert budget == pytest.approx(DEFAULT_BUDGET_S)
    known = registry.all_checks()
    plan = make_plan(known, "h200", budget)
    assert plan.fits and plan.total_s <= (1 - SPARE_FRACTION) * budget
    scale = 1 / 25
    durations = {c.name: c.estimate_s * scale for c in plan.checks}
    durations["throughput_b1_b256"] *= 3  # one check runs well over its estimate
    checks = {c.name: Check(c.name, "t", sleeps, False, (known[c.name].budget_s if known[c.name] else 10) * scale,
                            "", c.estimate_s * scale) for c in plan.checks}
    run = run_selftest(tmp_path, checks=checks, environment=NO_CUDA_ENV, progress=None, budget_s=budget * scale,
                       options={"durations": durations}, startup_grace_s=0.5)
    assert run.counts()["failed"] == 0, [(c.name, c.reason) for c in run.checks if c.status == "failed"]
    for c in run.checks:
        assert c.status == "passed" or c.reason.startswith(("not enough budget left", "not finished: the run's budget"))
    statuses = [c.status for c in run.checks]
    # what ran passed; what did not fit comes last (each check's process start is not scaled down, so a
    # loaded machine skips a few more)
    assert statuses[:5] == ["passed"] * 5 and statuses == sorted(statuses, key=lambda s: s != "passed")
    assert run.wall_s < budget * scale + 5  # ended at its budget: a watchdog 15 s (scaled) later never fires
    assert (tmp_path / "evidence.tar.gz").is_file()


def test_gpu_run_without_a_gpu_exits_with_its_own_code(tmp_path, capsys):
    """`--gpu` where the doctor finds no usable GPU: no GPU check has a verdict, and the exit code says so."""
    from conftest import HAS_CUDA

    if HAS_CUDA:
        pytest.skip("a GPU is present")
    code = main(["selftest", "--gpu", "--check", "ncu_counter_permission", "analytic_vs_fixture",
                 "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == EXIT_NO_GPU_VERDICT and code not in (0, 1, 2, 130, 143)
    assert "NO GPU VERDICT" in out.out and "no usable GPU" in out.err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gpu_verdicts"] == 0 and "no usable GPU" in summary["no_gpu_verdict"]
    md = (tmp_path / "summary.md").read_text()
    assert "NO GPU VERDICT" in md
    first = md.splitlines()[2:5]  # the runtime and versions lead the summary
    assert first[0].startswith("- runtime: ") and "kernel " in first[0]
    assert first[1].startswith("- GPU: none; driver ")
    assert first[2].startswith("- Python ") and "torch " in first[2] and "ncu " in first[2] and "counters: " in first[2]
    assert summary["versions"]["kernel_release"] == os.uname().release
    assert main(["selftest", "--gpu", "--check", "analytic_vs_fixture", "--out", str(tmp_path / "cpu")]) == 0


def test_a_check_process_dies_with_the_runner_and_cleans_up(tmp_path):
    """SIGKILL of the runner (no chance to stop anything): the kernel's parent-death signal reaches the check,
    which runs its clean-up and ends."""
    proc = _run_in_child(tmp_path, '''
        import os, time
        from gpuprobe.tools.selftest.registry import Check
        def lingers(ctx):
            (ctx.out_dir / "pid").write_text(str(os.getpid()))
            try:
                time.sleep(60)
            finally:
                (ctx.out_dir / "cleaned").write_text("")
        BUDGET_S = 60.0
        CHECKS = {"lingers": Check("lingers", "t", lingers, False, 60.0, "", 0.5)}
    ''')
    pid_file = tmp_path / "out" / "checks" / "lingers" / "pid"
    _wait_for(pid_file)
    proc.kill()
    proc.wait()
    _wait_for(tmp_path / "out" / "checks" / "lingers" / "cleaned", 10)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        from gpuprobe.system.children import process_alive

        assert not process_alive(pid), "the check's process outlived the runner"
