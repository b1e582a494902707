"""`gpuprobe selftest` on a CPU machine: the runner, its faults, the summaries and the evidence bundle."""
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
from gpuprobe.tools.selftest.bundle import EVIDENCE_CAP_BYTES, format_figures, write_evidence
from gpuprobe.tools.selftest.child import jsonable
from gpuprobe.tools.selftest.registry import Check, CheckContext, CheckFailed, Skip
from gpuprobe.tools.selftest.runner import RUN_ORDER, run_order, run_selftest, select

NO_CUDA_ENV = {"gpu": None, "items": [{"name": "cuda", "status": "missing", "detail": "torch is a CPU-only build"}]}


# -- test-only checks: module-level, so each check's own process can load them from this file ----------------

def passes(ctx: CheckContext) -> dict:
    (ctx.out_dir / "result.json").write_text('{"x": 1}')
    ctx.log("measured x")
    return {"x": 1.23456789, "n": 3, "budget_s": ctx.budget_s}


def raises(ctx: CheckContext) -> dict:
    raise ValueError("a bug in the check")


def claim_fails(ctx: CheckContext) -> dict:
    raise CheckFailed("bandwidth 40% of copy, below 90%", {"pct": 40.0})


def skips(ctx: CheckContext) -> dict:
    raise Skip("needs two GPUs")


def crashes(ctx: CheckContext) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    sys.stdout.flush()
    os.abort()


def overruns(ctx: CheckContext) -> dict:
    time.sleep(120)
    return {}


def _chk(name: str, func, *, gpu: bool = False, budget_s: float = 30.0, estimate_s: float | None = 1.0) -> Check:
    return Check(name, "tests", func, gpu, budget_s, f"test check {name}", estimate_s)


def _read_summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert {"gpu", "started", "wall_s", "environment", "checks"} <= set(summary)
    for c in summary["checks"]:
        assert {"name", "status", "seconds", "reason", "figures"} <= set(c)
        assert c["status"] in ("passed", "failed", "skipped")
    return summary


# -----------------------------------------------------------------------------------------------------------


def test_every_outcome_recorded_and_the_run_goes_on(tmp_path):
    checks = {
        "passes": _chk("passes", passes),
        "raises": _chk("raises", raises),
        "claim_fails": _chk("claim_fails", claim_fails),
        "skips": _chk("skips", skips),
        "crashes": _chk("crashes", crashes),
        "overruns": _chk("overruns", overruns, budget_s=0.5),
        "after": _chk("after", passes),
        "unbuilt": None,
    }
    lines: list[str] = []
    t0 = time.monotonic()
    run = run_selftest(tmp_path, checks=checks, environment=NO_CUDA_ENV, progress=lines.append,
                       startup_grace_s=2.5)
    wall = time.monotonic() - t0
    got = {c.name: c for c in run.checks}
    assert [c.name for c in run.checks] == list(checks)
    assert got["passes"].status == "passed" and got["passes"].figures["x"] == pytest.approx(1.23456789)
    assert got["raises"].status == "failed" and "ValueError: a bug in the check" in got["raises"].reason
    assert "Traceback" in (tmp_path / "checks" / "raises" / "output.txt").read_text()
    assert got["claim_fails"].status == "failed" and got["claim_fails"].figures == {"pct": 40.0}
    assert got["skips"].status == "skipped" and got["skips"].reason == "needs two GPUs"
    assert got["crashes"].status == "failed" and "crashed (killed by SIGABRT)" in got["crashes"].reason
    assert got["overruns"].status == "failed" and got["overruns"].reason.startswith("over its own budget")
    assert 2.5 <= got["overruns"].seconds < 10
    assert got["after"].status == "passed"
    assert got["unbuilt"].status == "skipped" and got["unbuilt"].reason == "not built"
    assert len(lines) == len(checks) and lines[0].startswith("[1/8] passed")
    assert wall < 30
    assert run.counts() == {"passed": 2, "failed": 4, "skipped": 2}

    summary = _read_summary(tmp_path)
    assert [c["status"] for c in summary["checks"]] == [c.status for c in run.checks]
    md = (tmp_path / "summary.md").read_text()
    assert "| overruns | failed: over its own budget" in md and "| passes | passed | x=1.235, n=3" in md
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = tar.getnames()
    assert "checks/passes/result.json" in names and "checks/passes/log.txt" in names
    assert "checks/raises/output.txt" in names
    assert not (tmp_path / ".runner").exists()


def test_gpu_checks_skipped_without_gpu_flag_or_cuda(tmp_path):
    checks = {"on_gpu": _chk("on_gpu", passes, gpu=True), "on_cpu": _chk("on_cpu", passes)}
    run = run_selftest(tmp_path / "a", checks=checks, environment=NO_CUDA_ENV, progress=None)
    assert run.result("on_gpu").status == "skipped" and "--gpu" in run.result("on_gpu").reason
    assert run.result("on_cpu").status == "passed"
    run = run_selftest(tmp_path / "b", checks=checks, environment=NO_CUDA_ENV, progress=None, gpu=True)
    assert run.result("on_gpu").status == "skipped"
    assert run.result("on_gpu").reason == "no CUDA GPU here (torch is a CPU-only build)"


def test_total_budget_never_records_a_failure(tmp_path):
    """A check whose estimate does not fit is not started; one stopped when the run's budget runs
    out is skipped with that reason, never failed."""
    checks = {"long": _chk("long", overruns, budget_s=60, estimate_s=1.0), "next": _chk("next", passes),
              "big": _chk("big", passes, estimate_s=500.0)}
    run = run_selftest(tmp_path, checks=checks, environment=NO_CUDA_ENV, progress=None, budget_s=1.5)
    assert run.result("long").status == "skipped" and "the run's budget ran out" in run.result("long").reason
    assert run.result("next").status == "skipped" and "not enough budget left" in run.result("next").reason
    assert run.result("big").status == "skipped" and "needs ~500 s" in run.result("big").reason
    assert run.counts()["failed"] == 0
    assert run.wall_s < 15


def test_budget_given_to_the_check_is_capped_by_the_total(tmp_path):
    run = run_selftest(tmp_path, checks={"p": _chk("p", passes, budget_s=300, estimate_s=5)},
                       environment=NO_CUDA_ENV, progress=None, budget_s=100)
    assert run.result("p").figures["budget_s"] <= 100


def test_cpu_selftest_of_the_registry(tmp_path):
    """The real registry on this machine: CPU checks pass, each GPU check is skipped with its reason."""
    run = run_selftest(tmp_path, progress=None)
    known = registry.all_checks()
    assert [c.name for c in run.checks] == select(known, None)
    assert not set(registry.EXTRA) & {c.name for c in run.checks}
    for c in run.checks:
        chk = known[c.name]
        if chk is None:
            assert (c.status, c.reason) == ("skipped", "not built")
        elif chk.gpu:
            assert c.status == "skipped" and "--gpu" in c.reason, c
        else:
            assert c.status == "passed", c
    doctor = run.result("doctor")
    assert doctor.figures["python"] == "ok" and doctor.figures["counter_permission"] in ("ok", "missing")
    summary = _read_summary(tmp_path)
    assert summary["environment"]["items"] and summary["gpu"] == run.environment.get("gpu")
    assert summary["evidence"]["bytes"] <= EVIDENCE_CAP_BYTES
    assert (tmp_path / "evidence.tar.gz").stat().st_size <= EVIDENCE_CAP_BYTES
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n| ") >= len(known) and "## Environment (gpuprobe doctor)" in md
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        assert "checks/doctor/doctor.json" in tar.getnames()


def test_bundle_drops_the_largest_files_first(tmp_path):
    rng = __import__("random").Random(0)
    for name, size in (("a/big.bin", 3 << 20), ("b/medium.bin", 1 << 20), ("b/small.txt", 2000)):
        path = tmp_path / "checks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))  # incompressible: the cap must hold on real bytes
    cap = int(2.5 * 2**20)
    ev = write_evidence(tmp_path, cap_bytes=cap)
    assert (tmp_path / "evidence.tar.gz").stat().st_size == ev["bytes"] <= cap
    assert [d["path"] for d in ev["dropped"]] == ["checks/a/big.bin"]
    with tarfile.open(tmp_path / "evidence.tar.gz") as tar:
        names = set(tar.getnames())
        dropped_note = tar.extractfile("DROPPED.txt").read().decode()
    assert {"checks/b/medium.bin", "checks/b/small.txt", "DROPPED.txt"} <= names
    assert "checks/a/big.bin" in dropped_note


def test_figures_are_strict_json_and_formatted():
    import numpy as np

    got = jsonable({"nan": float("nan"), "np": np.float32(0.5), "i": np.int64(7), "p": Path("/x"), "t": (1, 2)})
    assert got == {"nan": "nan", "np": 0.5, "i": 7, "p": "/x", "t": [1, 2]}
    json.dumps(got, allow_nan=False)
    assert format_figures({"a": 1 / 3, "b": True, "c": None}) == "a=0.3333, b=true, c=null"
    assert format_figures({f"k{i}": i for i in range(100)}, limit=30).endswith(", ...")


# -- the command line -----------------------------------------------------------------------------------------


def test_cli_bad_input_is_one_line_exit_2(capsys, tmp_path):
    assert main(["selftest", "--check", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown check 'nope'" in err
    assert all(name in err for name in registry.EXPECTED)
    assert not (tmp_path / "o").exists()
    for budget in ("0", "-5", "abc"):
        assert main(["selftest", "--budget-s", budget, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--budget-s" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["selftest", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "writable --out" in err


def test_cli_list_and_a_chosen_check(capsys, tmp_path):
    assert main(["selftest", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in registry.EXPECTED)
    assert main(["selftest", "--check", "gpu_tests", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[1/1] skipped" in out and "gpu_tests" in out
    summary = _read_summary(tmp_path)
    assert [c["name"] for c in summary["checks"]] == ["gpu_tests"]
    assert summary["environment"]["items"]  # the quick doctor filled it


# -- Ctrl-C -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_writes_the_summary_of_what_ran(tmp_path, sig):
    """Ctrl-C, or SIGTERM through the CLI's handler (a watchdog's stop), writes what ran; the check in flight
    runs its clean-up and is skipped with the signal named (no verdict), never failed."""
    (tmp_path / "fake_checks.py").write_text(textwrap.dedent('''
        import os, time
        def quick(ctx):
            return {"ok": 1}
        def slow(ctx):
            (ctx.out_dir / "pid").write_text(str(os.getpid()))
            try:
                time.sleep(60)
            finally:
                (ctx.out_dir / "cleaned_up").write_text("yes")
    '''))
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import fake_checks
        from gpuprobe.tools.selftest.registry import Check
        from gpuprobe.tools.selftest.runner import run_selftest
        from gpuprobe.cli.selftest import _interrupt_on_term
        _interrupt_on_term()
        checks = {{n: Check(n, "tests", getattr(fake_checks, n), False, 120.0, "") for n in ("quick", "slow")}}
        checks["later"] = Check("later", "tests", fake_checks.quick, False, 120.0, "")
        run = run_selftest({str(tmp_path / "out")!r}, checks=checks, environment={{}},
                           progress=lambda s: print(s, flush=True))
        print("interrupted" if run.interrupted else "finished", flush=True)
    ''')
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid_file = tmp_path / "out" / "checks" / "slow" / "pid"
    deadline = time.monotonic() + 30
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_file.is_file(), "the slow check never started"
    time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert out.strip().splitlines()[-1] == "interrupted"
    summary = _read_summary(tmp_path / "out")
    got = {c["name"]: c for c in summary["checks"]}
    said = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert got["quick"]["status"] == "passed"
    assert got["slow"]["status"] == "skipped" and f"the run was stopped ({said})" in got["slow"]["reason"]
    assert (tmp_path / "out" / "checks" / "slow" / "cleaned_up").read_text() == "yes"  # its clean-up ran
    assert got["later"]["status"] == "skipped" and f"stopped ({said})" in got["later"]["reason"]
    assert summary["interrupted"] is True and summary["stop_signal"] == signal.Signals(sig).name
    assert summary["counts"]["failed"] == 0
    assert f"STOPPED ({said})" in (tmp_path / "out" / "summary.md").read_text()
    assert (tmp_path / "out" / "evidence.tar.gz").is_file()
    with pytest.raises(ProcessLookupError):  # the check's process was stopped, not left running
        for _ in range(50):
            os.kill(int(pid_file.read_text()), 0)
            time.sleep(0.1)


# -- the GPU-node checks' own code, on CPU ----------------------------------------------------------------------


def _ctx(tmp_path: Path, **options) -> CheckContext:
    out = tmp_path / "evidence"
    out.mkdir(exist_ok=True)
    return CheckContext(out_dir=out, gpu=False, budget_s=60, options=options)


def _tests_folder(root: Path, body: str) -> Path:
    tests = root / "tests"
    tests.mkdir(parents=True)
    (tests / "conftest.py").write_text(
        "def pytest_configure(config):\n    config.addinivalue_line('markers', 'gpu: needs a GPU')\n")
    (tests / "test_fake.py").write_text(textwrap.dedent(body))
    return tests


@pytest.fixture
def lean_pytest(monkeypatch):
    """The fake test folders need no plugins: skip loading the installed ones (seconds per run)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_gpu_tests_check_counts_passes_and_failures(tmp_path, lean_pytest):
    from gpuprobe.tools.selftest.checks.nodes import gpu_tests

    tests = _tests_folder(tmp_path / "a", '''
        import pytest
        @pytest.mark.gpu
        def test_ok():
            assert 1 + 1 == 2
        @pytest.mark.gpu
        def test_broken():
            assert 1 + 1 == 3
        @pytest.mark.gpu
        def test_skipped():
            pytest.skip("no second GPU")
        def test_cpu_only():
            assert True
    ''')
    with pytest.raises(CheckFailed) as e:
        gpu_tests(_ctx(tmp_path, tests_dir=str(tests)))
    assert e.value.figures == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1, "exit_code": 1}
    assert "test_broken" in str(e.value)
    assert (tmp_path / "evidence" / "junit.xml").is_file() and (tmp_path / "evidence" / "pytest.txt").is_file()

    good = _tests_folder(tmp_path / "b", '''
        import pytest
        @pytest.mark.gpu
        def test_ok():
            assert True
    ''')
    assert gpu_tests(_ctx(tmp_path / "b", tests_dir=str(good))) == \
        {"passed": 1, "failed": 0, "errors": 0, "skipped": 0, "exit_code": 0}


def test_gpu_tests_check_fails_when_every_test_skips(tmp_path, lean_pytest):
    from gpuprobe.tools.selftest.checks.nodes import gpu_tests

    tests = _tests_folder(tmp_path, "import pytest\n\n@pytest.mark.gpu\ndef test_needs_cuda():\n"
                                    "    pytest.skip('needs CUDA')\n")
    with pytest.raises(CheckFailed, match="all 1 gpu-marked tests skipped") as e:
        gpu_tests(_ctx(tmp_path, tests_dir=str(tests)))
    assert e.value.figures["skipped"] == 1


def test_gpu_tests_check_skips_with_the_reason(tmp_path, lean_pytest):
    from gpuprobe.tools.selftest.checks.nodes import gpu_tests

    with pytest.raises(Skip, match="no tests folder"):
        gpu_tests(_ctx(tmp_path, tests_dir=str(tmp_path / "nowhere")))
    none_marked = _tests_folder(tmp_path / "c", "def test_cpu():\n    assert True\n")
    with pytest.raises(Skip, match="no test marked gpu"):
        gpu_tests(_ctx(tmp_path / "c", tests_dir=str(none_marked)))


def test_pytest_summary_line_is_read():
    from gpuprobe.tools.selftest.checks.nodes import count_terminal

    assert count_terminal("....\n3 passed, 1 failed, 2 skipped, 5 deselected, 1 error in 4.10s\n") == \
        {"passed": 3, "failed": 1, "errors": 1, "skipped": 2}


def test_doctor_check_figures_and_evidence(tmp_path):
    from gpuprobe.tools.selftest.checks.nodes import doctor

    figures = doctor(_ctx(tmp_path))
    assert figures["python"] == "ok" and figures["mode:analytic"] == "ok"
    assert figures["ok"] + figures["missing"] + figures["failing"] == len(
        [k for k in figures if k not in ("ok", "missing", "failing", "modes")])
    data = json.loads((tmp_path / "evidence" / "doctor.json").read_text())
    assert [i["name"] for i in data["items"]][:2] == ["python", "gpuprobe"]
    assert (tmp_path / "evidence" / "doctor.txt").read_text().count("\n") == len(data["items"]) + 1


def test_run_order_covers_the_expected_checks_core_claims_first():
    """Every expected check is in the run order or the extra list, once; the doctor (the environment
    and the counter probe) first, the ceilings (the copy and read bandwidth the kernels' checks divide
    by) before the checks that need them, the core claims of the mission in the first six; checks
    registered but not listed come after the listed ones, the extra ones last."""
    assert set(RUN_ORDER) | set(registry.EXTRA) >= set(registry.EXPECTED)
    assert not set(RUN_ORDER) & set(registry.EXTRA) and len(set(RUN_ORDER)) == len(RUN_ORDER)
    assert RUN_ORDER[0] == "doctor"
    core = {"paged_attention_correct", "paged_attention_bandwidth", "ncu_counter_permission", "roofline_two_points",
            "ceilings"}
    assert core <= set(RUN_ORDER[:6])
    order = run_order(["gpu_tests", *RUN_ORDER, "new_b", "new_a"])
    assert order[-3:] == ["new_b", "new_a", "gpu_tests"]
    for later in ("paged_attention_bandwidth", "roofline_two_points"):
        assert order.index("ceilings") < order.index(later)


def test_gpu_tests_collects_only_the_files_that_mark_gpu_tests():
    """The node runs pytest on the files with gpu-marked tests alone (faster, and no import of test
    modules whose optional packages a GPU node lacks)."""
    from gpuprobe.tools.selftest.checks.nodes import files_with_gpu_tests

    tests = Path(__file__).parent
    names = {f.name for f in files_with_gpu_tests(tests)}
    assert {"test_paged_attention.py", "test_decode_gemm.py"} <= names
    assert "test_advisor.py" not in names and "test_doctor.py" not in names
