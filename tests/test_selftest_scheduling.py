"""Scheduling that never lies: estimates, the run's budget, the plan (`gpuprobe selftest --plan`)."""
from __future__ import annotations

import json
import time

import pytest

from gpuprobe.cli import main
from gpuprobe.tools.selftest import registry
from gpuprobe.tools.selftest.plan import SPARE_FRACTION, make_plan
from gpuprobe.tools.selftest.registry import Check, CheckContext
from gpuprobe.tools.selftest.runner import DEFAULT_BUDGET_S, run_selftest, select

NO_CUDA_ENV = {"gpu": None, "items": [{"name": "cuda", "status": "missing", "detail": "torch is a CPU-only build"}]}
#: What scripts/device_selftest.sh gives the selftest in its 420 s slot (less ~4 s of install, 30 s of end margin).
RUN_LIMIT_S = 386.0


# -- stand-in checks: module-level, so each check's own process can load them from this file ------------------

def quick(ctx: CheckContext) -> dict:
    time.sleep(0.2)
    return {"slept": 0.2}


def runs_long(ctx: CheckContext) -> dict:
    (ctx.out_dir / "started").write_text("yes")
    time.sleep(60)
    return {}


def _chk(name: str, func, estimate_s, budget_s: float = 60.0) -> Check:
    return Check(name, "tests", func, False, budget_s, f"stand-in {name}", estimate_s)


def test_stand_ins_longer_than_the_budget_are_never_failed(tmp_path):
    """Durations that add up to far more than the budget: what fits runs, what does not is skipped
    with the figures of why, the check cut by the run's end is skipped, and the summary is written."""
    checks = {
        "first": _chk("first", quick, 1.0),
        "too_big": _chk("too_big", quick, 50.0),  # 50 s estimated, ~8 s left: never started
        "slow": _chk("slow", runs_long, 1.0),  # estimated 1 s, runs 60 s: cut by the run's budget
        "after": _chk("after", quick, 1.0),  # nothing left
    }
    t0 = time.monotonic()
    run = run_selftest(tmp_path, checks=checks, environment=NO_CUDA_ENV, progress=None, budget_s=8.0,
                       startup_grace_s=2.0)
    assert time.monotonic() - t0 < 30
    got = {c.name: c for c in run.checks}
    assert got["first"].status == "passed" and got["first"].estimate_s == 1.0
    assert got["too_big"].status == "skipped"
    assert got["too_big"].reason.startswith("not enough budget left (needs ~50 s, ") and got["too_big"].seconds == 0
    assert (tmp_path / "checks" / "slow" / "started").is_file()
    assert got["slow"].status == "skipped" and "the run's budget ran out" in got["slow"].reason
    assert got["after"].status == "skipped" and got["after"].reason.startswith("not enough budget left (needs ~1 s")
    assert run.counts()["failed"] == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == {"passed": 1, "failed": 0, "skipped": 3}
    assert [c["estimate_s"] for c in summary["checks"]] == [1.0, 50.0, 1.0, 1.0]
    md = (tmp_path / "summary.md").read_text()
    assert "| too_big | skipped: not enough budget left (needs ~50 s" in md and "| estimate |" in md


def test_estimates_per_gpu_class():
    def noop(ctx):
        return {}

    chk = Check("c", "tests", noop, True, 90.0, "", {"default": 20, "a100": 30, "h100-pcie": 25})
    assert chk.estimate("h200") == 20 and chk.estimate(None) == 20
    assert chk.estimate("a100-80gb") == 30 and chk.estimate("a100-40gb") == 30
    assert chk.estimate("h100-pcie") == 25 and chk.estimate("h100-sxm") == 20
    assert Check("d", "tests", noop, True, 90.0, "").estimate("h200") == 90.0  # no estimate: its budget


@pytest.mark.parametrize("gpu", ["h200", "h100-sxm"])
def test_plan_fits_the_run_on_h200_and_h100(gpu, capsys):
    """The script's budget, with 10% of it to spare on the project's own estimates."""
    assert DEFAULT_BUDGET_S == RUN_LIMIT_S
    assert main(["selftest", "--plan", "--gpu-name", gpu, "--budget-s", f"{RUN_LIMIT_S:g}", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan) >= {"gpu", "budget_s", "total_s", "checks", "fits", "spare_fraction"} and plan["gpu"] == gpu
    assert plan["budget_s"] == RUN_LIMIT_S
    assert all(set(c) == {"name", "estimate_s"} for c in plan["checks"])
    assert plan["total_s"] == pytest.approx(sum(c["estimate_s"] for c in plan["checks"]))
    assert plan["total_s"] <= (1 - SPARE_FRACTION) * RUN_LIMIT_S and plan["fits"] is True
    assert all(c["estimate_s"] > 0 for c in plan["checks"])  # a check not built yet is planned, not free
    names = [c["name"] for c in plan["checks"]]
    assert names[: len(registry.RUN_ORDER)] == list(registry.RUN_ORDER)
    assert not set(registry.EXTRA) & set(names)
    assert {e["name"] for e in plan["extra"]} == set(registry.EXTRA) and all(e["reason"] for e in plan["extra"])
    assert "throughput_b1_compiled" in {e["name"] for e in plan["extra"]}


def test_plan_as_text_on_cpu_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["selftest", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "default class" in out and "total" in out and "extra checks" in out and "doctor" in out
    assert not (tmp_path / "gpuprobe-out").exists()


def test_plan_bad_input_is_one_line(capsys):
    assert main(["selftest", "--plan", "--gpu-name", "h999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown GPU 'h999'" in err
    assert main(["selftest", "--json"]) == 2
    assert "--plan" in capsys.readouterr().err


def test_checks_registered_but_not_listed_run_after_with_their_estimates(monkeypatch):
    """Room for checks another module adds (the engine-kernels checks): placed after the listed ones,
    before the extra ones, planned with their own estimates (their budget when they give none)."""
    def body(ctx):
        return {}

    monkeypatch.setitem(registry._CHECKS, "kernels_per_layer_test", Check(
        "kernels_per_layer_test", "engine", body, True, 60.0, "", 20.0))
    monkeypatch.setitem(registry._CHECKS, "no_estimate_test", Check("no_estimate_test", "engine", body, True, 45.0, ""))
    known = registry.all_checks()
    order = select(known, None)
    assert order[: len(registry.RUN_ORDER)] == list(registry.RUN_ORDER)
    assert order[-2:] == ["kernels_per_layer_test", "no_estimate_test"]
    plan = make_plan(known, "h200", RUN_LIMIT_S)
    est = {c.name: c.estimate_s for c in plan.checks}
    assert est["kernels_per_layer_test"] == 20.0 and est["no_estimate_test"] == 45.0
    assert select(known, ["gpu_tests", "doctor"]) == ["doctor", "gpu_tests"]  # extras run when named


def test_plan_uses_the_budget_it_is_given(capsys):
    """--budget-s is the plan's budget as it is the run's: a second call planned from the device time left."""
    assert main(["selftest", "--plan", "--gpu-name", "h200", "--budget-s", "120"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the verdict wraps at 80 columns
    assert "budget 120 s" in out and "does not fit: over the budget by" in out
    assert main(["selftest", "--plan", "--gpu-name", "h200", "--budget-s", "205", "--json", "--check",
                 "energy_per_token", "replicate_mps_cleanup", "splitk_bandwidth", "decode_gemm"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["budget_s"] == 205 and plan["fits"] and [c["name"] for c in plan["checks"]][:2] == [
        "energy_per_token", "replicate_mps_cleanup"]
    tight = make_plan({"a": _chk("a", quick, 95.0)}, "h200", 100.0)
    assert tight.total_s <= tight.budget_s and not tight.fits  # under the budget, but without its 10% spare
