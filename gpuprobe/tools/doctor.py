"""What works on this machine and what to fix: the data behind ``gpuprobe doctor``.

:func:`collect` probes Python, the kernel the machine reports (``uname -r``: gVisor reports 4.4.x, the
Firecracker microVMs 6.x, which decides whether ncu can read counters), the optional packages, CUDA and
the GPU, NVML, Nsight Compute (``ncu`` and counter permission, probed with ``--clock-control none``), the
MPS control binary and whether other processes use the GPU,
then derives which measurement modes work here. Each finding is one :class:`Item` whose status is
``ok``, ``missing`` (not installed, not present, not supported) or ``failing`` (present but broken
or refused), with what to do when it is not ok. Rendering (:func:`render_text`, :func:`report_rows`,
:meth:`Report.to_dict`) is separate from collecting. Every probe is guarded: a machine without a GPU,
driver or ncu gets a complete report, never a traceback.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import gpuprobe
from gpuprobe import __version__
from gpuprobe.system.telemetry import device_handle
from gpuprobe.ncu import runner as ncu_runner
from gpuprobe.specs.gpus import gpu_from_device_name
from gpuprobe.tools.selftest.counters import kept_output, probe_counters as run_counter_probe

OK, MISSING, FAILING = "ok", "missing", "failing"
STATUSES = (OK, MISSING, FAILING)

#: The fix printed wherever counter permission is refused (ERR_NVGPUCTRPERM).
COUNTER_PERMISSION_FIX = (
    "GPU performance counters are restricted to admin users: run ncu as root (or with sudo), or have an "
    "admin set `options nvidia NVreg_RestrictProfilingToAdminUsers=0` in /etc/modprobe.d/ and reload the "
    "driver; in a container, start it with --cap-add=SYS_ADMIN"
)
CSV_HINT = "ncu --import R.ncu-rep --csv --page raw --print-units base"
NO_GPU_NOTE = "analytic and report modes work without a GPU"


@dataclass
class Item:
    """One finding: ``name`` is stable (used as a key in JSON and selftest figures)."""

    group: str
    name: str
    status: str
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"doctor item '{self.name}': status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """Every item, in the order they were probed; the modes come last."""

    items: list[Item]

    def get(self, name: str) -> Item | None:
        return next((i for i in self.items if i.name == name), None)

    def ok(self, name: str) -> bool:
        item = self.get(name)
        return item is not None and item.ok

    @property
    def modes(self) -> dict[str, bool]:
        return {i.name.removeprefix("mode:"): i.ok for i in self.items if i.group == "modes"}

    @property
    def gpu_name(self) -> str | None:
        gpu = self.get("gpu")
        return gpu.data.get("name") if gpu is not None and gpu.ok else None

    def counts(self) -> dict[str, int]:
        return {s: sum(i.status == s for i in self.items) for s in STATUSES}

    def statuses(self) -> dict[str, str]:
        return {i.name: i.status for i in self.items}

    def to_dict(self) -> dict[str, Any]:
        kernel = self.get("kernel")
        return {
            "gpuprobe": __version__,
            "python": platform.python_version(),
            "host": platform.node(),
            "kernel_release": kernel.data.get("release") if kernel else None,
            "runtime": kernel.data.get("runtime") if kernel else None,
            "gpu": self.gpu_name,
            "counts": self.counts(),
            "modes": self.modes,
            "items": [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls([Item(**i) for i in d.get("items", [])])


# --------------------------------------------------------------------------------------------------
# probes


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _import(module: str) -> tuple[Any | None, str]:
    """(module, "") or (None, why it did not import)."""
    try:
        return importlib.import_module(module), ""
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError):
            return None, "not installed" if e.name in (None, module) else f"not installed (needs {e.name})"
        return None, f"import fails: {e}"
    except Exception as e:  # a broken install can raise anything at import
        return None, f"import fails: {type(e).__name__}: {e}"


def _probe_python() -> list[Item]:
    items = [Item("python", "python", OK, f"{platform.python_version()} ({sys.executable})",
                  data={"version": platform.python_version(), "executable": sys.executable})]
    if sys.version_info < (3, 10):
        items[0] = Item("python", "python", FAILING, items[0].detail, "gpuprobe needs Python 3.10 or newer")
    location = str(Path(gpuprobe.__file__).resolve().parent)
    items.append(Item("python", "gpuprobe", OK, f"{gpuprobe.__version__} ({location})",
                      data={"version": gpuprobe.__version__, "location": location}))
    return items


def runtime_of(release: str) -> str:
    """The sandbox a kernel release points to: gVisor reports 4.4.x; the Firecracker microVMs of the lent
    GPU nodes report 6.x with ``-fc`` in the release; anything else is a plain Linux kernel."""
    if release.startswith("4.4."):
        return "gVisor"
    if "-fc" in release:
        return "Firecracker"
    return "Linux"


def _probe_kernel() -> Item:
    release = platform.release()
    if not release:
        return Item("python", "kernel", MISSING, "the kernel release is not readable (uname -r)",
                    "record `uname -r` by hand: it says whether ncu can read counters here (gVisor: no)")
    runtime = runtime_of(release)
    note = {"gVisor": "; ncu cannot read counters under gVisor (LibraryNotLoaded)",
            "Firecracker": "; ncu reads counters with --clock-control none"}.get(runtime, "")
    return Item("python", "kernel", OK, f"{release} ({runtime}{note})",
                data={"release": release, "runtime": runtime, "machine": platform.machine()})


_PACKAGE_FIXES = {
    "torch": "install a CUDA build of PyTorch matching the node's driver; needed for the timing, ncu and "
             "replicate modes (never pinned by gpuprobe: a node keeps its own build)",
    "triton": "pip install triton (comes with PyTorch on Linux); needed for the paged-attention kernels",
    "cupy": "optional: pip install cupy-cuda12x or cupy-cuda13x, matching the driver's CUDA major version",
    "nvtx": "pip install 'gpuprobe[ncu]' (nvtx), from the wheelhouse on a node without internet; "
            "torch.cuda.nvtx ranges work without it",
    "ncu_report": "pip install 'gpuprobe[ncu]' (ncu-report), or use extras/python/ncu_report.py of an Nsight "
                  f"Compute install; without it .ncu-rep files are read through CSV: {CSV_HINT}",
    "nvidia-ml-py": "pip install 'gpuprobe[telemetry]' (nvidia-ml-py); needed for clocks, power and energy per token",
}


def _probe_packages(ncu_path: str | None) -> list[Item]:
    items = []
    # (item name, import name, distribution names)
    for name, module, dists in (
        ("torch", "torch", ("torch",)),
        ("triton", "triton", ("triton", "pytorch-triton")),
        ("cupy", "cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")),
        ("nvtx", "nvtx", ("nvtx",)),
        ("ncu_report", "ncu_report", ("ncu-report",)),
        ("nvidia-ml-py", "pynvml", ("nvidia-ml-py", "pynvml")),
    ):
        mod, why = _import(module)
        if name == "ncu_report" and mod is None:
            mod, where = _ncu_report_beside(ncu_path)
            if mod is not None:
                items.append(Item("packages", name, OK, f"from the Nsight Compute install ({where})",
                                  data={"version": None, "location": where}))
                continue
        if mod is not None:
            version = getattr(mod, "__version__", None) or _dist_version(*dists) or "unknown version"
            detail = str(version)
            if name == "torch":
                detail += f" (CUDA {mod.version.cuda})" if getattr(mod.version, "cuda", None) else " (CPU-only build)"
            items.append(Item("packages", name, OK, detail, data={"version": str(version)}))
            continue
        status = FAILING if why.startswith("import fails") else MISSING
        items.append(Item("packages", name, status, why, _PACKAGE_FIXES[name]))
    return items


def _probe_launcher_toolchain() -> Item:
    """Triton builds a small C launcher per kernel at first use: it needs a C compiler and Python.h."""
    cc = os.environ.get("CC") or next((c for c in ("gcc", "clang", "cc") if shutil.which(c)), None)
    header = Path(sysconfig.get_paths().get("include") or "") / "Python.h"
    missing = [what for what, ok in (("a C compiler (gcc, clang or $CC)", cc), ("Python.h", header.is_file()))
               if not ok]
    if missing:
        return Item("packages", "triton_launcher", MISSING, f"no {' and no '.join(missing)}",
                    "install gcc and the Python headers (e.g. apt-get install gcc python3-dev); "
                    "Triton compiles a C launcher for each kernel and fails without them")
    return Item("packages", "triton_launcher", OK, f"C compiler {cc}, {header}")


def _ncu_report_beside(ncu_path: str | None) -> tuple[Any | None, str]:
    """``extras/python/ncu_report.py`` of the Nsight Compute install, through the ncu module's loader."""
    try:
        from gpuprobe.ncu.ncu_report_loader import find_ncu_report

        mod = find_ncu_report()
    except Exception:
        return None, ""
    return (mod, str(getattr(mod, "__file__", ncu_path))) if mod is not None else (None, "")


def _torch_cuda() -> tuple[Any | None, bool]:
    try:
        import torch
    except Exception:
        return None, False
    try:
        return torch, bool(torch.cuda.is_available())
    except Exception:
        return torch, False


def _nvml() -> tuple[Any | None, Any | None, str]:
    """(pynvml, handle of the first visible device, "") or (pynvml|None, None, why)."""
    try:
        import pynvml
    except Exception:
        return None, None, "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return pynvml, None, f"NVML does not start: {_nvml_error(e)}"
    try:
        return pynvml, device_handle(pynvml), ""
    except LookupError as e:
        return pynvml, None, str(e)
    except Exception as e:
        return pynvml, None, f"NVML finds no device: {_nvml_error(e)}"


def _nvml_error(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if "LibraryNotFound" in type(e).__name__ or "Library Not Found" in text:
        return "libnvidia-ml.so not found (no NVIDIA driver on this machine)"
    return text


def _nvml_missing(e: Exception) -> bool:
    """NVML errors that mean 'absent here' rather than 'broken'."""
    text = f"{type(e).__name__} {e}".lower()
    return any(s in text for s in ("notsupported", "not supported", "notfound", "not found", "driver not loaded",
                                   "driver_not_loaded", "librarynotfound"))


def _nvml_str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _probe_cuda(torch: Any | None, cuda: bool, nvml: tuple[Any, Any, str]) -> list[Item]:
    pynvml, handle, _ = nvml
    items: list[Item] = []
    if torch is None:
        items.append(Item("gpu", "cuda", MISSING, "torch is not installed, so CUDA cannot be used from Python",
                          _PACKAGE_FIXES["torch"] + f"; {NO_GPU_NOTE}"))
    elif cuda:
        count = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        items.append(Item("gpu", "cuda", OK, f"{count} device(s) visible"
                          + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""),
                          data={"device_count": count}))
    elif not getattr(torch.version, "cuda", None):
        items.append(Item("gpu", "cuda", MISSING, f"torch {torch.__version__} is a CPU-only build",
                          f"on a GPU node, install a CUDA build of torch; {NO_GPU_NOTE}"))
    else:
        items.append(Item("gpu", "cuda", MISSING,
                          f"no CUDA device visible (torch built for CUDA {torch.version.cuda})",
                          "run on a GPU node; check `nvidia-smi` and CUDA_VISIBLE_DEVICES; " + NO_GPU_NOTE))

    # the GPU itself: torch first (it knows the SM count), NVML otherwise
    gpu: dict[str, Any] | None = None
    if cuda:
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
               "memory_bytes": int(p.total_memory), "via": "torch"}
    elif handle is not None:
        try:
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            cc = f"{major}.{minor}"
        except Exception:
            cc = None
        gpu = {"name": _nvml_str(pynvml.nvmlDeviceGetName(handle)), "compute_capability": cc, "sm_count": None,
               "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total), "via": "nvml"}
    if gpu is None:
        items.append(Item("gpu", "gpu", MISSING, "no NVIDIA GPU found (neither torch nor NVML sees one)",
                          f"run on a GPU node; {NO_GPU_NOTE}"))
    else:
        spec = gpu_from_device_name(gpu["name"])
        gpu["registry"] = spec.name if spec else None
        parts = [gpu["name"], f"sm_{gpu['compute_capability'].replace('.', '')}" if gpu["compute_capability"] else None,
                 f"{gpu['sm_count']} SMs" if gpu["sm_count"] else None, f"{gpu['memory_bytes'] / 2**30:.1f} GiB",
                 f"registry: {spec.name}" if spec else "not in gpuprobe's GPU registry (pass --gpu NAME for datasheet roofs)"]
        detail = ", ".join(p for p in parts if p)
        cc = gpu["compute_capability"]
        if cc and tuple(int(x) for x in cc.split(".")) < (8, 0):
            items.append(Item("gpu", "gpu", FAILING, detail,
                              "gpuprobe's bf16 kernels need compute capability 8.0 or newer", data=gpu))
        else:
            items.append(Item("gpu", "gpu", OK, detail, data=gpu))

    items.append(_probe_driver(torch, pynvml, handle))
    return items


def _probe_driver(torch: Any | None, pynvml: Any | None, handle: Any | None) -> Item:
    driver = driver_cuda = None
    if handle is not None:
        try:
            driver = _nvml_str(pynvml.nvmlSystemGetDriverVersion())
            v = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
            driver_cuda = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:
            pass
    if driver is None and shutil.which("nvidia-smi"):
        out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], timeout=20)
        if out is not None and out[0] == 0 and out[1].strip():
            driver = out[1].strip().splitlines()[0]
    torch_cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    data = {"driver": driver, "driver_cuda": driver_cuda, "torch_cuda": torch_cuda}
    if driver is None:
        return Item("gpu", "driver", MISSING, "no NVIDIA driver found"
                    + (f"; torch built for CUDA {torch_cuda}" if torch_cuda else ""),
                    f"install the NVIDIA driver on a GPU node; {NO_GPU_NOTE}", data=data)
    detail = f"driver {driver}" + (f", supports CUDA {driver_cuda}" if driver_cuda else "") \
        + (f"; torch built for CUDA {torch_cuda}" if torch_cuda else "")
    if driver_cuda and torch_cuda and int(torch_cuda.split(".")[0]) > int(driver_cuda.split(".")[0]):
        return Item("gpu", "driver", FAILING, detail,
                    f"the driver supports CUDA {driver_cuda} but torch needs {torch_cuda}: update the driver or "
                    f"install a torch build for CUDA {driver_cuda.split('.')[0]}", data=data)
    return Item("gpu", "driver", OK, detail, data=data)


def _probe_nvml(nvml: tuple[Any, Any, str], busy: Item | None = None) -> list[Item]:
    """NVML's readings; ``busy``: the ``gpu_busy`` item when it was taken earlier (see :func:`collect`)."""
    pynvml, handle, why = nvml
    names = ("clocks", "power_limit", "temperature", "energy_counter", "gpu_busy")
    if handle is None:
        no_lib = pynvml is None
        fix = _PACKAGE_FIXES["nvidia-ml-py"] if no_lib else f"run on a GPU node with the NVIDIA driver; {NO_GPU_NOTE}"
        missing = no_lib or "not found" in why or "no gpu" in why.lower() or "no device" in why.lower()
        items = [Item("nvml", "nvml", MISSING if missing else FAILING, why, fix)]
        items += [Item("nvml", n, MISSING, "needs NVML", "see the nvml line") for n in names]
        return items

    items = [Item("nvml", "nvml", OK, f"readable (NVML {_safe(lambda: _nvml_str(pynvml.nvmlSystemGetNVMLVersion()))})")]

    def reading(name: str, read: Callable[[], tuple[str, dict[str, Any]]], what_for: str) -> Item:
        try:
            detail, data = read()
            return Item("nvml", name, OK, detail, data=data)
        except Exception as e:
            status = MISSING if _nvml_missing(e) else FAILING
            return Item("nvml", name, status, f"cannot read: {_nvml_error(e)}", what_for)

    def clocks() -> tuple[str, dict[str, Any]]:
        sm = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
        mem = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        sm_max = _safe(lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        return (f"SM {sm} MHz (max {sm_max}), memory {mem} MHz",
                {"sm_mhz": sm, "sm_max_mhz": sm_max, "mem_mhz": mem})

    def power_limit() -> tuple[str, dict[str, Any]]:
        limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        draw = _safe(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        return (f"{limit:.0f} W" + (f" (drawing {draw:.0f} W now)" if draw is not None else ""),
                {"power_limit_w": limit, "power_w": draw})

    def temperature() -> tuple[str, dict[str, Any]]:
        t = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        return f"{t} C", {"temperature_c": t}

    def energy() -> tuple[str, dict[str, Any]]:
        mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return f"total-energy counter reads {mj / 3.6e9:.3f} kWh since driver load", {"energy_mj": int(mj)}

    items.append(reading("clocks", clocks, "clock readings go into provenance; check the driver and NVML"))
    items.append(reading("power_limit", power_limit, "power readings go into energy per token; check the driver"))
    items.append(reading("temperature", temperature, "temperature goes into provenance; check the driver"))
    items.append(reading("energy_counter", energy,
                         "energy per token needs the total-energy counter (Volta or newer, and a driver that exposes it)"))
    items.append(busy or _probe_busy(pynvml, handle))
    return items


def _probe_busy(pynvml: Any, handle: Any) -> Item:
    try:
        procs = list(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
        procs += list(_safe(lambda: pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle)) or [])
        util = _safe(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        used = _safe(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception as e:
        return Item("nvml", "gpu_busy", MISSING if _nvml_missing(e) else FAILING,
                    f"cannot list GPU processes: {_nvml_error(e)}", "check the driver and NVML")
    others = sorted({p.pid for p in procs if p.pid != os.getpid()})
    data = {"other_pids": others, "utilization_pct": util, "memory_used_bytes": used}
    used_txt = f"{used / 2**30:.1f} GiB used" if used is not None else "memory use unknown"
    if others:
        return Item("nvml", "gpu_busy", FAILING,
                    f"{len(others)} other process(es) on the GPU (pids {', '.join(map(str, others[:5]))}), "
                    f"{util}% busy, {used_txt}",
                    "timings and counters will be disturbed: wait for them to finish, or pick an idle GPU "
                    "with CUDA_VISIBLE_DEVICES", data=data)
    if util is not None and util >= 10:
        return Item("nvml", "gpu_busy", FAILING,
                    f"{util}% busy although no process is visible (another container?), {used_txt}",
                    "timings will be disturbed: wait until the GPU is idle, or pick another GPU", data=data)
    return Item("nvml", "gpu_busy", OK, f"idle: no other process, {util}% busy, {used_txt}", data=data)


def _find_ncu() -> tuple[str | None, str | None]:
    """(ncu's path, its version): :func:`gpuprobe.ncu.runner.find_ncu`, the one lookup."""
    found = ncu_runner.find_ncu()
    return (str(found.path), found.version) if found else (None, None)


def _ncu_fix() -> str:
    return ncu_runner.GET_NCU


def _probe_ncu(ncu: str | None, version: str | None, cuda: bool, probe_counters: bool,
               counter_timeout_s: float) -> list[Item]:
    if ncu is None:
        return [Item("ncu", "ncu", MISSING, "ncu not found on PATH, in CUDA_HOME, /usr/local/cuda*/bin or "
                     "/opt/nvidia/nsight-compute", _ncu_fix()),
                Item("ncu", "counter_permission", MISSING, "needs ncu", "see the ncu line")]
    if version is None:
        version = ncu_runner.ncu_version(ncu)
    items = [Item("ncu", "ncu", OK if version else FAILING,
                  f"{ncu}, version {version}" if version else f"{ncu}: `ncu --version` failed",
                  "" if version else "check the Nsight Compute install", data={"path": ncu, "version": version})]
    items.append(_probe_counters(ncu, cuda, probe_counters, counter_timeout_s))
    return items


def _probe_counters(ncu: str, cuda: bool, probe_counters: bool, timeout_s: float) -> Item:
    name = "counter_permission"
    if not cuda:
        return Item("ncu", name, MISSING, "needs a CUDA GPU to profile a kernel", f"run on a GPU node; {NO_GPU_NOTE}")
    if not probe_counters:
        return Item("ncu", name, MISSING, "not checked (quick run)", "run `gpuprobe doctor` without --quick")
    try:
        status, message, output = run_counter_probe(ncu, timeout_s=timeout_s)
        item = _counter_item((status, message))
        item.data["probe_output"] = kept_output(output)
        return item
    except Exception as e:  # noqa: BLE001
        return _counter_item_from_error(e)


def _counter_item(result: Any) -> Item:
    """Read ``check_counter_permission``'s answer: (``ok``|``missing``|``failing``, message with the fix).
    The answer itself stays in the item's ``data`` (``probe_status``, ``probe_message``), so that the
    selftest reuses this one probe instead of profiling a second program."""
    status, message = (str(result[0]), str(result[1])) if isinstance(result, tuple) else \
        (OK if result else FAILING, "")
    probe = {"probe_status": status, "probe_message": message}
    if status == OK:
        return Item("ncu", "counter_permission", OK, message or "ncu read a hardware counter of a tiny kernel",
                    data=probe)
    if status not in STATUSES:
        status = FAILING
    item = _counter_item_from_error(RuntimeError(message or "ncu could not read the counters"), status)
    item.data.update(probe)
    return item


def _counter_item_from_error(e: Exception, status: str = FAILING) -> Item:
    text = (str(e) or type(e).__name__).strip()
    if "ERR_NVGPUCTRPERM" in text or "restricted to admin" in text:
        fix = text if "NVreg_RestrictProfilingToAdminUsers" in text else COUNTER_PERMISSION_FIX
        return Item("ncu", "counter_permission", status,
                    "GPU performance counters are restricted to administrators (ERR_NVGPUCTRPERM)", fix)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return Item("ncu", "counter_permission", status, " | ".join(lines)[:400],
                "run `ncu --metrics gpu__time_duration.sum <a small CUDA program>` by hand to see why")


def _probe_mps() -> Item:
    path = shutil.which("nvidia-cuda-mps-control")
    if path is None:
        return Item("mps", "mps_control", MISSING, "nvidia-cuda-mps-control not on PATH",
                    "it ships with the NVIDIA driver (and CUDA toolkit); needed for `replicate --mps`")
    daemons = _mps_daemons()
    detail = path + (f"; an MPS control daemon is already running (pid {', '.join(map(str, daemons))})"
                     if daemons else "")
    return Item("mps", "mps_control", OK, detail, data={"path": path, "daemon_pids": daemons})


def _mps_daemons() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "nvidia-cuda-mps":  # the control daemon's name, truncated to 15 chars
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return sorted(pids)


def _modes(items: list[Item]) -> list[Item]:
    by = {i.name: i for i in items}

    def ok(name: str) -> bool:
        return name in by and by[name].ok

    def mode(name: str, needs: dict[str, tuple[bool, str]], detail_ok: str) -> Item:
        """``needs``: what the mode needs -> (whether it is here, the item lines that say so)."""
        lacking = {what: lines for what, (have, lines) in needs.items() if not have}
        if not lacking:
            return Item("modes", f"mode:{name}", OK, detail_ok)
        lines = list(dict.fromkeys(", ".join(lacking.values()).split(", ")))
        return Item("modes", f"mode:{name}", MISSING, "needs " + ", ".join(lacking),
                    "see the " + ", ".join(lines) + (" line" if len(lines) == 1 else " lines") + " above")

    core = [m for m in ("numpy", "pandas", "matplotlib") if _import(m)[0] is None]
    gpu = ok("cuda") and ok("gpu")
    reads_rep = ok("ncu_report") or ok("ncu")
    out = [
        mode("analytic", {f"the core packages ({', '.join(core)})": (not core, "python")},
             "rooflines and tables from model and GPU specs, no GPU needed"),
        mode("report", {"pandas": ("pandas" not in core, "python")},
             "reads .ncu-rep and CSV exports" if reads_rep else
             f"reads CSV exports only; for .ncu-rep install ncu-report or export with `{CSV_HINT}`"),
        mode("timing", {"torch": (ok("torch"), "torch"), "a CUDA GPU": (gpu, "cuda, gpu")},
             "CUDA-event timings" + ("" if ok("triton") else " (no triton: sdpa-dense and torch attention only)")),
        mode("ncu", {"a CUDA GPU": (gpu, "cuda, gpu"), "ncu": (ok("ncu"), "ncu"),
                     "counter permission": (ok("counter_permission"), "counter_permission")},
             "Nsight Compute counters per op"),
        mode("replicate --mps", {"a CUDA GPU": (gpu, "cuda, gpu"),
                                 "nvidia-cuda-mps-control": (ok("mps_control"), "mps_control")},
             "replicas sharing the GPU through MPS"),
    ]
    return out


# --------------------------------------------------------------------------------------------------


def collect(*, probe_counters: bool = True, counter_timeout_s: float = 90.0) -> Report:
    """Probe this machine. ``probe_counters=False`` skips the ncu run that checks counter permission."""
    items: list[Item] = []

    def guarded(group: str, name: str, probe: Callable[[], list[Item] | Item]) -> Any:
        try:
            got = probe()
            items.extend(got if isinstance(got, list) else [got])
        except Exception as e:  # a probe must never stop the report
            items.append(Item(group, name, FAILING, f"probe crashed: {type(e).__name__}: {e}",
                              "report this as a gpuprobe bug"))

    ncu_path = ncu_version = None
    try:
        ncu_path, ncu_version = _find_ncu()
    except Exception:
        pass
    nvml = _nvml()
    busy: Item | None = None
    if nvml[1] is not None:  # before this process makes a CUDA context of its own
        try:
            busy = _probe_busy(nvml[0], nvml[1])
        except Exception as e:
            busy = Item("nvml", "gpu_busy", FAILING, f"probe crashed: {type(e).__name__}: {e}",
                        "report this as a gpuprobe bug")
    guarded("python", "python", _probe_python)
    guarded("python", "kernel", _probe_kernel)
    guarded("packages", "packages", lambda: _probe_packages(ncu_path))
    guarded("packages", "triton_launcher", _probe_launcher_toolchain)
    torch, cuda = _torch_cuda()
    try:
        guarded("gpu", "cuda", lambda: _probe_cuda(torch, cuda, nvml))
        guarded("nvml", "nvml", lambda: _probe_nvml(nvml, busy))
    finally:
        if nvml[1] is not None:
            _safe(nvml[0].nvmlShutdown)
    guarded("ncu", "ncu", lambda: _probe_ncu(ncu_path, ncu_version, cuda, probe_counters, counter_timeout_s))
    guarded("mps", "mps_control", _probe_mps)
    items.extend(_modes(items))
    return Report(items)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _run(cmd: list[str], timeout: float) -> tuple[int, str] | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired):
        return None


# --------------------------------------------------------------------------------------------------
# rendering

def render_text(report: Report, width: int | None = None) -> str:
    """Plain lines: one per item, ``status  name  what was found  -> what to do``; with ``width``, each
    item wrapped to it, its continuation lines indented under what was found."""
    name_w = max(len(i.name) for i in report.items)
    indent = " " * (9 + name_w + 2)
    lines = []
    for i in report.items:
        line = f"{i.status:<8} {i.name:<{name_w}}  {i.detail}"
        if i.fix and not i.ok:
            line += f"  -> {i.fix}"
        lines += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) if width else [line]
    c = report.counts()
    summary = (f"{c[OK]} ok, {c[MISSING]} missing, {c[FAILING]} failing; modes that work here: "
               + (", ".join(m for m, ok in report.modes.items() if ok) or "none"))
    lines += textwrap.wrap(summary, width) if width else [summary]
    return "\n".join(lines)


def report_rows(report: Report) -> list[dict[str, Any]]:
    """The items as rows (``fix`` only where the item is not ok)."""
    return [{"status": i.status, "group": i.group, "item": i.name, "detail": i.detail,
             "fix": None if i.ok or not i.fix else i.fix} for i in report.items]
