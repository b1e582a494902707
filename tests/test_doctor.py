"""`gpuprobe doctor`: every item reported on a machine without GPU or ncu; the GPU paths through a fake NVML."""
from __future__ import annotations

import json
import types

import pytest

from gpuprobe.tools import doctor
from gpuprobe.cli import main
from gpuprobe.tools.doctor import FAILING, MISSING, OK, Item, Report

ITEMS = ["python", "gpuprobe", "kernel", "torch", "triton", "cupy", "nvtx", "ncu_report", "nvidia-ml-py", "triton_launcher", "cuda", "gpu",
         "driver", "nvml", "clocks", "power_limit", "temperature", "energy_counter", "gpu_busy", "ncu",
         "counter_permission", "mps_control", "mode:analytic", "mode:report", "mode:timing", "mode:ncu",
         "mode:replicate --mps"]


@pytest.fixture(scope="module")
def report() -> Report:
    return doctor.collect(probe_counters=False)


def _no_gpu_here(report: Report) -> bool:
    return not report.ok("cuda") and not report.ok("ncu")


def test_every_item_reported_once_with_a_valid_status(report):
    names = [i.name for i in report.items]
    assert names == ITEMS
    for item in report.items:
        assert item.status in (OK, MISSING, FAILING)
        assert item.detail
        if not item.ok:
            assert item.fix, f"{item.name} is {item.status} but says nothing about what to do"


def test_python_and_gpuprobe_are_ok(report):
    import gpuprobe

    assert report.get("python").ok
    assert report.get("gpuprobe").ok and gpuprobe.__version__ in report.get("gpuprobe").detail
    assert report.modes["analytic"] is True and report.modes["report"] is True


def test_without_gpu_or_ncu_it_says_so_plainly(report):
    if not _no_gpu_here(report):
        pytest.skip("this machine has a GPU or ncu")
    assert report.get("cuda").status == MISSING
    assert "without a GPU" in report.get("cuda").fix
    assert report.get("gpu").status == MISSING
    ncu = report.get("ncu")
    assert ncu.status == MISSING and "Nsight Compute" in ncu.fix and "PATH" in ncu.fix
    assert report.get("counter_permission").status == MISSING
    assert report.modes == {"analytic": True, "report": True, "timing": False, "ncu": False,
                            "replicate --mps": False}
    assert "ncu" in report.get("mode:ncu").detail
    assert report.gpu_name is None


def test_cli_json_is_well_formed(capsys):
    assert main(["doctor", "--json", "--quick"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in data["items"]] == ITEMS
    assert set(data["counts"]) == {OK, MISSING, FAILING}
    assert sum(data["counts"].values()) == len(ITEMS)
    assert set(data["modes"]) == {"analytic", "report", "timing", "ncu", "replicate --mps"}
    assert Report.from_dict(data).statuses() == {i["name"]: i["status"] for i in data["items"]}


def test_cli_piped_rows_one_per_item(capsys):
    assert main(["doctor", "--quick"]) == 0  # captured stdout is no terminal: TSV, one row per item
    head, *rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert head == ["status", "group", "item", "detail", "fix"] and len(rows) == len(ITEMS)
    for row, name in zip(rows, ITEMS):
        assert row[0] in (OK, MISSING, FAILING) and row[2] == name
    modes = {r[2]: r[0] for r in rows if r[2].startswith("mode:")}
    assert modes["mode:analytic"] == OK and modes["mode:report"] == OK
    assert main(["doctor", "--quick", "--format", "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split(None, 1)[1].startswith(ITEMS[0]) and "modes that work here: analytic, report" in \
        " ".join(lines[-2:])


def test_cli_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--bogus"])
    assert e.value.code == 2


def test_table_fits_the_width_and_machine_rows_hold_every_item(report):
    text = doctor.render_text(report, 80)
    assert "counter_permission" in text and "modes that work here" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = doctor.report_rows(report)
    assert [r["item"] for r in rows] == [i.name for i in report.items]
    assert all(r["fix"] is None for r in rows if r["status"] == "ok")


def test_counter_permission_answers_are_read():
    from gpuprobe.ncu.runner import PERMISSION_FIX

    refused = doctor._counter_item(("failing", PERMISSION_FIX))
    assert refused.status == FAILING and "ERR_NVGPUCTRPERM" in refused.detail
    assert "NVreg_RestrictProfilingToAdminUsers=0" in refused.fix
    assert doctor._counter_item(("ok", "ncu 2025.3.1 can read the GPU counters")).status == OK
    other = doctor._counter_item(("failing", "ncu test run failed (exit status 1)\nlast line"))
    assert other.status == FAILING and "exit status 1" in other.detail and other.fix
    raised = doctor._counter_item_from_error(RuntimeError("==ERROR== ERR_NVGPUCTRPERM - The user does not have "
                                                          "permission to access NVIDIA GPU Performance Counters"))
    assert raised.status == FAILING and raised.fix == doctor.COUNTER_PERMISSION_FIX


def test_ncu_found_and_counter_probe_delegated(monkeypatch, tmp_path):
    """With an ncu on PATH, the doctor reports where and which version, and asks the counter probe about
    counter permission (here answered by a stand-in, as there is no GPU); ncu's output is kept."""
    import gpuprobe.ncu.runner as runner

    calls = []
    monkeypatch.setattr(doctor, "run_counter_probe", lambda ncu, timeout_s=60: calls.append((ncu, timeout_s))
                        or ("failing", runner.PERMISSION_FIX, "==ERROR== ERR_NVGPUCTRPERM ..."))
    items = {i.name: i for i in doctor._probe_ncu("/opt/ncu/ncu", "2025.3.1.0", True, True, 42)}
    assert items["counter_permission"].data["probe_output"] == "==ERROR== ERR_NVGPUCTRPERM ..."
    assert items["ncu"].ok and "2025.3.1.0" in items["ncu"].detail
    assert calls == [("/opt/ncu/ncu", 42)]
    assert items["counter_permission"].status == FAILING
    quick = {i.name: i for i in doctor._probe_ncu("/opt/ncu/ncu", "2025.3.1.0", True, False, 42)}
    assert quick["counter_permission"].status == MISSING and "not checked" in quick["counter_permission"].detail
    no_gpu = {i.name: i for i in doctor._probe_ncu("/opt/ncu/ncu", "2025.3.1.0", False, True, 42)}
    assert no_gpu["counter_permission"].status == MISSING and len(calls) == 1


def _item(name: str, status: str = OK) -> Item:
    return Item("x", name, status, "d", "" if status == OK else "f")


def test_modes_follow_their_needs():
    have = ["torch", "triton", "ncu_report", "cuda", "gpu", "ncu", "counter_permission", "mps_control"]
    modes = Report([*map(_item, have)] + doctor._modes([*map(_item, have)])).modes
    assert all(modes.values())
    no_perm = [_item(n, FAILING if n == "counter_permission" else OK) for n in have]
    got = {i.name: i for i in doctor._modes(no_perm)}
    assert got["mode:timing"].ok and not got["mode:ncu"].ok
    assert "counter permission" in got["mode:ncu"].detail and "counter_permission" in got["mode:ncu"].fix


def test_kernel_release_names_the_runtime(monkeypatch):
    """`uname -r` decides whether ncu reads counters on the lent nodes: gVisor reports 4.4.x, Firecracker 6.x -fc."""
    assert doctor.runtime_of("4.4.0") == "gVisor"
    assert doctor.runtime_of("6.18.44-fc-v236-gpu") == "Firecracker"
    assert doctor.runtime_of("6.8.0-45-generic") == "Linux"
    monkeypatch.setattr(doctor.platform, "release", lambda: "4.4.0")
    item = doctor._probe_kernel()
    assert item.ok and item.data == {"release": "4.4.0", "runtime": "gVisor", "machine": doctor.platform.machine()}
    assert "LibraryNotLoaded" in item.detail
    monkeypatch.setattr(doctor.platform, "release", lambda: "")
    assert doctor._probe_kernel().status == MISSING


def test_item_rejects_an_unknown_status():
    with pytest.raises(ValueError):
        Item("x", "y", "fine", "d")


# --------------------------------------------------------------------------------------------------
# NVML paths, through a stand-in for pynvml. Its readings are those seen on the lent H100 node
# (name, memory, driver 580.159.04 with CUDA 13.0; clocks as read on the lent H200 node).


class _NVMLError(Exception):
    pass


class _NotSupported(_NVMLError):
    def __str__(self) -> str:
        return "Not Supported"


def fake_pynvml(*, others: list[int] = (), energy: bool = True, util: int = 0) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.NVMLError = _NVMLError
    m.nvmlInit = m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: "h0"
    m.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=81559 * 2**20, used=int(0.5 * 2**30))
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlSystemGetCudaDriverVersion_v2 = lambda: 13000
    m.nvmlSystemGetNVMLVersion = lambda: "13.580.159.04"
    m.nvmlDeviceGetClockInfo = lambda h, c: {1: 345, 2: 3201}[c]
    m.nvmlDeviceGetMaxClockInfo = lambda h, c: 1980
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    m.nvmlDeviceGetPowerUsage = lambda h: 71_000
    m.nvmlDeviceGetTemperature = lambda h, s: 31

    def energy_counter(h):
        if not energy:
            raise _NotSupported()
        return 123_456_789

    m.nvmlDeviceGetTotalEnergyConsumption = energy_counter
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=p) for p in others]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=util)
    return m


def _nvml_items(monkeypatch, **kw) -> dict[str, Item]:
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml(**kw))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = doctor._nvml()
    assert nvml[1] == "h0"
    items = doctor._probe_cuda(None, False, nvml) + doctor._probe_nvml(nvml)
    return {i.name: i for i in items}


def test_nvml_readings_on_an_idle_h100(monkeypatch):
    got = _nvml_items(monkeypatch)
    assert got["gpu"].ok and got["gpu"].data["registry"] == "h100-sxm"
    assert "sm_90" in got["gpu"].detail and "79.6 GiB" in got["gpu"].detail
    assert got["driver"].ok and "580.159.04" in got["driver"].detail and "CUDA 13.0" in got["driver"].detail
    for name in ("nvml", "clocks", "power_limit", "temperature", "energy_counter", "gpu_busy"):
        assert got[name].ok, got[name]
    assert got["clocks"].data == {"sm_mhz": 345, "sm_max_mhz": 1980, "mem_mhz": 3201}
    assert got["power_limit"].data["power_limit_w"] == 700
    assert got["energy_counter"].data["energy_mj"] == 123_456_789


def test_nvml_other_processes_and_no_energy_counter(monkeypatch):
    got = _nvml_items(monkeypatch, others=[4242], energy=False, util=97)
    assert got["gpu_busy"].status == FAILING and "4242" in got["gpu_busy"].detail
    assert "CUDA_VISIBLE_DEVICES" in got["gpu_busy"].fix
    assert got["energy_counter"].status == MISSING and "energy per token" in got["energy_counter"].fix


def test_busy_without_visible_process(monkeypatch):
    got = _nvml_items(monkeypatch, util=80)
    assert got["gpu_busy"].status == FAILING and "80% busy" in got["gpu_busy"].detail


def test_driver_older_than_torch_is_failing():
    torch = types.SimpleNamespace(version=types.SimpleNamespace(cuda="13.0"))
    pynvml = fake_pynvml()
    pynvml.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12040
    item = doctor._probe_driver(torch, pynvml, "h0")
    assert item.status == FAILING and "12.4" in item.fix


def test_whole_report_with_nvml_but_no_cuda_torch(monkeypatch):
    """A node whose driver works but whose torch is a CPU build: NVML items ok, CUDA modes still missing."""
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_pynvml())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    report = doctor.collect(probe_counters=False)
    assert [i.name for i in report.items] == ITEMS
    assert report.gpu_name == "NVIDIA H100 80GB HBM3"
    for name in ("gpu", "driver", "nvml", "clocks", "power_limit", "temperature", "energy_counter", "gpu_busy"):
        assert report.get(name).ok, report.get(name)
    if not report.ok("cuda"):
        assert report.modes["timing"] is False and report.modes["analytic"] is True


def test_triton_launcher_toolchain_item(monkeypatch, tmp_path):
    """Triton's per-kernel C launcher needs a compiler and Python.h: the doctor says when either is missing."""
    import sysconfig

    from gpuprobe.tools import doctor

    assert doctor._probe_launcher_toolchain().status == doctor.OK  # this machine has gcc and the headers
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    item = doctor._probe_launcher_toolchain()
    assert item.status == doctor.MISSING
    assert "C compiler" in item.detail and "Python.h" in item.detail and "python3-dev" in item.fix
