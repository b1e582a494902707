"""Finding ncu, command lines, NVTX filter syntax, metric names, and the faults of a run (fake ncu)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from _ncu_data import B64_RAW, loaded, metric_names
from gpuprobe.errors import NotAvailable, UserError
from gpuprobe.ncu import runner
from gpuprobe.ncu.metrics import METRIC_SETS, base_metric_name
from gpuprobe.ncu.nvtx_filter import check_expression, nvtx_filter, stack_matches
from gpuprobe.ncu.runner import (CounterPermissionError, NcuError, NoKernelsProfiled, ProfileOptions, build_command,
                                 check_counter_permission, find_ncu, parse_version, run_ncu)

# Lines of real ncu output, as recorded in public issue threads (NVIDIA/ERR_NVGPUCTRPERM reports,
# meta-pytorch/tritonbench#87).
PERM_LINE = ("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance "
             "Counters on the target device 0. For instructions on enabling permissions and to get more "
             "information see https://developer.nvidia.com/ERR_NVGPUCTRPERM")
NO_KERNELS = "==WARNING== No kernels were profiled.\n==WARNING== Note that specified NVTX include expressions match only push/pop ranges."


@pytest.mark.parametrize("name", sorted(METRIC_SETS))
def test_every_metric_exists_on_hopper(name):
    known = metric_names()
    bad = [m for m in METRIC_SETS[name].metrics if base_metric_name(m) not in known]
    assert not bad
    assert base_metric_name("dram__bytes.sum.peak_sustained") == "dram__bytes"


def test_roofline_set_has_what_the_counter_roofline_needs():
    ms = set(METRIC_SETS["roofline"].metrics)
    for m in ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
              "sm__ops_path_tensor_src_bf16_dst_fp32.sum", "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum",
              "dram__bytes.sum.peak_sustained", "sm__cycles_elapsed.avg.per_second"):
        assert m in ms


def test_nvtx_filter_syntax():
    assert nvtx_filter(["decode", "layer0", "attention"]) == "decode/layer0/attention/"
    assert nvtx_filter("decode/layer0") == "decode/layer0/"
    assert nvtx_filter("step", push_pop=False) == "step"
    assert nvtx_filter("decode/", domain="app") == "app@decode/"
    assert nvtx_filter("step", push_pop=False, domain="app") == "app@step"
    assert nvtx_filter("decode/*/attention") == "decode/*/attention/"
    for bad in ("*/attention", "", "a//b"):
        with pytest.raises(UserError):
            nvtx_filter(bad)
    with pytest.raises(UserError):
        nvtx_filter("a/b", push_pop=False)


def test_check_expression():
    assert check_expression("decode/layer0/") == "decode/layer0/"
    assert check_expression("step") == "step"
    assert check_expression("app@decode/") == "app@decode/"
    with pytest.raises(UserError, match="trailing slash.*decode/layer0/"):
        check_expression("decode/layer0")
    with pytest.raises(UserError, match="any depth"):
        check_expression("*/attention/")


def test_stack_matching_follows_what_ncu_matched_on_h100():
    stacks = list(loaded(B64_RAW)["nvtx_stack"])
    n = lambda e: sum(stack_matches(e, s) for s in stacks)  # noqa: E731
    assert n("decode/layer0/attention/") == 1
    assert n("attention/") == 2
    assert n("decode/*/attention/") == 2
    assert n("decode/layer0/") == 10
    assert n("decode/") == 20
    assert n("decode/attention/") == 0
    assert stack_matches("step", (), ("step",)) and not stack_matches("step", ("step",), ())


def test_build_command_defaults():
    cmd = build_command("/x/ncu", ["python", "t.py", "--b", "8"], "out/r.ncu-rep")
    s = " ".join(cmd)
    assert "--clock-control none" in s and "--cache-control all" in s and "--target-processes all" in s
    assert "--nvtx" in cmd and "--replay-mode kernel" in s
    assert cmd[cmd.index("--export") + 1] == "out/r"
    assert cmd[-4:] == ["python", "t.py", "--b", "8"]
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert set(metrics) == set(METRIC_SETS["roofline"].metrics)


def test_build_command_options():
    o = ProfileOptions(metric_set="memory", nvtx_include=("decode/layer0/",), nvtx_exclude=("warmup/",),
                       kernel_name="paged_attention", launch_skip=2, launch_count=4, clock_control="base")
    cmd = build_command("ncu", ["a"], "r", o)
    s = " ".join(cmd)
    assert "--nvtx-include decode/layer0/" in s and "--nvtx-exclude warmup/" in s
    assert "--kernel-name regex:paged_attention" in s and "--launch-skip 2" in s and "--launch-count 4" in s
    assert "--clock-control base" in s
    for bad in (ProfileOptions(clock_control="max"), ProfileOptions(metric_set="nope"),
                ProfileOptions(nvtx_include=("decode/layer0",))):
        with pytest.raises(UserError):
            build_command("ncu", ["a"], "r", bad)
    with pytest.raises(UserError, match="no command"):
        build_command("ncu", [], "r")


def test_parse_version():
    text = "NVIDIA (R) Nsight Compute Command Line Profiler\nCopyright (c) 2018-2025 NVIDIA Corporation\nVersion 2025.3.1.0 (build 36398880) (public-release)\n"
    assert parse_version(text) == "2025.3.1.0"
    assert parse_version("garbage") is None


def _fake_ncu(folder: Path, body: str) -> Path:
    """A stand-in ncu: answers --version, then runs ``body`` (shell) for a profiling call."""
    p = folder / "ncu"
    p.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Version 2025.3.1.0 (build 1)'; exit 0; fi\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_find_ncu_on_path(tmp_path, monkeypatch):
    ncu = _fake_ncu(tmp_path, "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    inst = find_ncu()
    assert inst is not None and inst.path == ncu and inst.version == "2025.3.1.0"


def test_find_ncu_in_cuda_home(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    ncu = _fake_ncu(tmp_path / "bin", "exit 0\n")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setattr(runner.glob, "glob", lambda pat: [])
    inst = find_ncu()
    assert inst is not None and inst.path == ncu


def test_no_ncu(monkeypatch):
    monkeypatch.setattr(runner, "find_ncu", lambda: None)
    with pytest.raises(NotAvailable, match="gpuprobe report FILE` still"):
        run_ncu(["python", "x.py"], "r.ncu-rep")
    status, msg = check_counter_permission()
    assert status == "missing" and "nsight-compute" in msg.lower()


def test_permission_error_gives_the_fix(tmp_path):
    ncu = _fake_ncu(tmp_path, f"echo '{PERM_LINE}'\nexit 1\n")
    with pytest.raises(CounterPermissionError) as e:
        run_ncu(["python", "x.py"], tmp_path / "r.ncu-rep", ncu=ncu)
    assert "NVreg_RestrictProfilingToAdminUsers=0" in str(e.value) and "root" in str(e.value)
    status, msg = check_counter_permission(ncu)
    assert status == "failing" and "NVreg_RestrictProfilingToAdminUsers=0" in msg


def test_no_kernel_matched_prints_filter_and_ranges_seen(tmp_path, monkeypatch):
    ncu = _fake_ncu(tmp_path, f"printf '%s\\n' '{NO_KERNELS.splitlines()[0]}'\nexit 0\n")
    from gpuprobe.ncu import diagnose

    monkeypatch.setattr(diagnose, "seen_nvtx_stacks", lambda *a, **k: [("decode", "layer0", "attention")])
    with pytest.raises(NoKernelsProfiled) as e:
        diagnose.run_ncu_with_diagnosis(["python", "x.py"], tmp_path / "r.ncu-rep", nvtx_include=["decode/layer9/"],
                                        ncu=ncu)
    assert "--nvtx-include decode/layer9/" in str(e.value) and "decode/layer0/attention/" in str(e.value)


def test_target_crash_reports_exit_status_and_tail(tmp_path):
    ncu = _fake_ncu(tmp_path, "echo 'Traceback (most recent call last):'\necho 'RuntimeError: CUDA error'\nexit 3\n")
    with pytest.raises(NcuError) as e:
        run_ncu(["python", "x.py"], tmp_path / "r.ncu-rep", ncu=ncu)
    assert "exit status 3" in str(e.value) and "RuntimeError: CUDA error" in str(e.value)


def test_timeout_stops_the_run(tmp_path):
    ncu = _fake_ncu(tmp_path, "echo started\nsleep 30\n")
    with pytest.raises(NcuError, match="ran past --timeout 0.5 s"):
        run_ncu(["python", "x.py"], tmp_path / "r.ncu-rep", ncu=ncu, timeout_s=0.5)


def test_success_writes_meta_beside_the_report(tmp_path):
    import json

    from gpuprobe.ncu import profile_meta_path

    ncu = _fake_ncu(tmp_path, 'for a in "$@"; do if [ "$prev" = --export ]; then : > "$a.ncu-rep"; fi; prev=$a; done\nexit 0\n')
    res = run_ncu(["python", "x.py"], tmp_path / "out" / "r", ncu=ncu, nvtx_include=["decode/"])
    assert res.report == tmp_path / "out" / "r.ncu-rep" and res.report.exists()
    meta = json.loads(profile_meta_path(res.report).read_text())
    assert meta["clock_control"] == "none" and meta["cache_control"] == "all"
    assert meta["nvtx_include"] == ["decode/"] and meta["ncu_version"] == "2025.3.1.0"


#: Valid suffixes by metric type (Nsight Compute metrics structure: counters and throughputs take a
#: rollup then an optional submetric; ratios take .pct/.ratio/.max_rate).
_ROLLUPS = ("sum", "avg", "min", "max")
_SUBMETRICS = {"Counter": ("", "peak_sustained", "per_second", "pct_of_peak_sustained_elapsed",
                           "pct_of_peak_sustained_active", "per_cycle_elapsed", "per_cycle_active"),
               "Throughput": ("pct_of_peak_sustained_elapsed", "pct_of_peak_sustained_active")}


def _metric_types() -> dict[str, str]:
    import lzma

    from _ncu_data import NCU

    out = {}
    for line in lzma.open(NCU / "ncu_query_metrics_gh100.txt.xz", "rt"):
        parts = line.split()
        if len(parts) >= 2 and "__" in parts[0] and "." not in parts[0]:
            out[parts[0]] = parts[1]
    return out


@pytest.mark.parametrize("name", sorted(METRIC_SETS))
def test_every_metric_has_a_suffix_its_type_takes(name):
    """A name ncu does not know fails the whole run: check base name AND suffix against gh100's types."""
    types = _metric_types()
    bad = []
    for m in METRIC_SETS[name].metrics:
        base, _, suffix = m.partition(".")
        kind = types.get(base)
        if kind == "Ratio":
            ok = suffix in ("pct", "ratio", "max_rate")
        elif kind in _SUBMETRICS:
            rollup, _, sub = suffix.partition(".")
            ok = rollup in _ROLLUPS and sub in _SUBMETRICS[kind]
        else:
            ok = False
        if not ok:
            bad.append(f"{m} ({kind})")
    assert not bad


def test_roofline_metrics_were_seen_in_real_h100_output():
    """Every full name of the roofline set appears in a real H100 capture, except the few listed here
    (valid counter + suffix by the test above, not in the captured sections)."""
    import csv

    from _ncu_data import B32_BASE, B64_RAW, path

    seen = set()
    for name in (B64_RAW, B32_BASE):
        with open(path(name), newline="") as f:
            seen |= set(next(csv.reader(f)))
    unseen = {m for m in METRIC_SETS["roofline"].metrics if m not in seen}
    assert unseen <= {"lts__t_bytes.sum.peak_sustained", "smsp__sass_thread_inst_executed_op_hadd_pred_on.sum",
                      "smsp__sass_thread_inst_executed_op_hmul_pred_on.sum",
                      "smsp__sass_thread_inst_executed_op_dadd_pred_on.sum",
                      "smsp__sass_thread_inst_executed_op_dmul_pred_on.sum",
                      "smsp__sass_thread_inst_executed_op_dfma_pred_on.sum"}


def test_import_raw_csv_command(tmp_path):
    ncu = _fake_ncu(tmp_path, 'echo "$@" > "$(dirname "$0")/args"; printf "\\"ID\\",\\"Kernel Name\\"\\n"\nexit 0\n')
    text = runner.import_raw_csv(tmp_path / "r.ncu-rep", ncu)
    assert text.startswith('"ID"')
    assert (tmp_path / "args").read_text().split() == ["--import", str(tmp_path / "r.ncu-rep"), "--csv", "--page",
                                                       "raw", "--print-units", "base"]
    bad = _fake_ncu(tmp_path, "exit 1\n")
    with pytest.raises(NcuError, match="exit status 1"):
        runner.import_raw_csv(tmp_path / "r.ncu-rep", bad)
