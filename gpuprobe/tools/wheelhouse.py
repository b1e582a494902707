"""An offline wheelhouse: gpuprobe and the wheels a GPU node without internet needs to install it.

On a connected machine :func:`build_wheelhouse` builds gpuprobe's own wheel from its source tree
(``pip wheel --no-build-isolation --no-deps``), then has pip download that wheel's dependencies, with
the chosen extras, as binary wheels for the node's Python version and platform
(``pip download --only-binary=:all: --python-version 3.12 --platform ...``). pip matches manylinux
tags exactly, so one ``--platform manylinux_2_28_x86_64`` is expanded to every older glibc tag the
node also accepts (``ncu-report`` 2026.3.1 is tagged ``manylinux_2_25``). torch and triton are left to
the node's own install unless asked for. On the node: ``pip install --no-index --find-links DIR
'gpuprobe[ncu,telemetry]'``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import gpuprobe
from gpuprobe.errors import UserError

#: Extras a node gets by default: Nsight Compute report reading and NVTX, and NVML telemetry.
DEFAULT_EXTRAS = ("ncu", "telemetry")
#: What ``--with-torch`` adds: the node's own torch and triton are used otherwise.
TORCH_EXTRAS = ("engine",)

_PY_RE = re.compile(r"^3\.\d{1,2}$")
_PLATFORM_RE = re.compile(r"^[a-z0-9_]+$")
_MANYLINUX_RE = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MUSLLINUX_RE = re.compile(r"^musllinux_1_(\d+)_(\w+)$")


def normalize_name(name: str) -> str:
    """A project name as pip compares them (PEP 503): 'Python_Dateutil' -> 'python-dateutil'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(path: str | Path) -> str:
    """The normalized project name of a wheel file."""
    return normalize_name(Path(path).name.split("-")[0])


def expand_platforms(platforms: Sequence[str]) -> list[str]:
    """Every platform tag a node with these platforms accepts, newest first, for pip's exact matching.

    ``manylinux_2_28_x86_64`` -> ``manylinux_2_28_x86_64 ... manylinux_2_5_x86_64`` plus the legacy
    aliases ``manylinux2014/2010/1_x86_64``; ``musllinux_1_2_x86_64`` -> ``..._1_2`` and ``..._1_1``;
    other tags (macOS, Windows, ``linux_x86_64``) pass through unchanged.
    """
    out: list[str] = []
    for tag in platforms:
        legacy = next((v for k, v in _LEGACY_MANYLINUX.items() if tag.startswith(k + "_")), None)
        if legacy:
            tag = f"manylinux_{legacy[0]}_{legacy[1]}_{tag.split('_', 1)[1]}"
        m, mm = _MANYLINUX_RE.match(tag), _MUSLLINUX_RE.match(tag)
        if m and m.group(1) == "2":
            minor, arch = int(m.group(2)), m.group(3)
            out += [f"manylinux_2_{n}_{arch}" for n in range(minor, 4, -1)]
            out += [f"{k}_{arch}" for k, (_, n) in _LEGACY_MANYLINUX.items() if n <= minor
                    and (k != "manylinux2010" and k != "manylinux1" or arch in ("x86_64", "i686"))]
        elif mm:
            out += [f"musllinux_1_{n}_{mm.group(2)}" for n in range(int(mm.group(1)), 0, -1)]
        else:
            out.append(tag)
    return list(dict.fromkeys(out))


def find_source(source: str | Path | None = None) -> Path:
    """gpuprobe's source tree (the folder holding its pyproject.toml)."""
    candidates = [Path(source)] if source else [Path(gpuprobe.__file__).resolve().parent.parent, Path.cwd()]
    for c in candidates:
        pyproject = c / "pyproject.toml"
        if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"gpuprobe"', pyproject.read_text()):
            return c.resolve()
    where = f"'{source}'" if source else "beside the installed gpuprobe or in the current folder"
    raise UserError(f"gpuprobe's source tree (pyproject.toml) not found {where}; run from a source checkout "
                    "or pass --source DIR.")


@dataclass
class Wheelhouse:
    path: Path
    wheels: list[Path]
    extras: tuple[str, ...]
    python: str | None
    platforms: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(w.stat().st_size for w in self.wheels)

    @property
    def install_line(self) -> str:
        spec = f"gpuprobe[{','.join(self.extras)}]" if self.extras else "gpuprobe"
        return f"pip install --no-index --find-links {self.path} '{spec}'"

    def describe(self) -> str:
        lines = [f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}" for w in self.wheels]
        lines.append(f"{self.total_bytes / 2**20:8.2f} MiB  in {len(self.wheels)} wheels, {self.path}")
        return "\n".join(lines)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        noise = ("is ignored: it is neither a file nor a directory",)
        lines = [ln.strip() for ln in (p.stderr + p.stdout).splitlines()
                 if ln.strip() and not any(n in ln for n in noise)]
        # the cause is the first line that names an error (pip ends with generic hints after it)
        causes = [ln for ln in lines if "error" in ln.lower() and not ln.lower().startswith(("note:", "hint:"))]
        tail = " | ".join((causes[:2] or lines[-4:])) or f"exit code {p.returncode}"
        raise UserError(f"{what} failed: {tail}")
    return p.stdout


def _has_build_tools(pip: Sequence[str]) -> bool:
    """True when the Python that runs ``pip`` can build a wheel by itself (setuptools with bdist_wheel)."""
    probe = ("import setuptools\ntry:\n    from setuptools.command import bdist_wheel\n"
             "except ImportError:\n    from wheel import bdist_wheel")
    try:
        return subprocess.run([pip[0], "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def build_own_wheel(dest: Path, source: Path, pip: Sequence[str]) -> Path:
    """gpuprobe's wheel from ``source``: with the build tools already installed when they can build a wheel
    (no network), else in pip's isolated build environment (fetches setuptools from the package index)."""
    isolation = [] if _has_build_tools(pip) else ["--use-pep517"]
    no_isolation = ["--no-build-isolation"] if not isolation else []
    with tempfile.TemporaryDirectory(prefix="gpuprobe-wheel-") as tmp:
        _run([*pip, "wheel", *no_isolation, *isolation, "--no-deps", "--quiet", "--wheel-dir", tmp, str(source)],
             "building gpuprobe's wheel")
        built = sorted(Path(tmp).glob("gpuprobe-*.whl"))
        if not built:
            raise UserError(f"building gpuprobe's wheel from {source} produced no wheel")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / built[-1].name
        shutil.copy2(built[-1], target)
        return target


def build_wheelhouse(out: str | Path, *, python: str | None = None, platforms: Sequence[str] = (),
                     with_torch: bool = False, extras: Sequence[str] = DEFAULT_EXTRAS, add: Sequence[str] = (),
                     only: Sequence[str] = (), exclude: Sequence[str] = (), source: str | Path | None = None,
                     pip: Sequence[str] | None = None, say: Callable[[str], None] = lambda _: None) -> Wheelhouse:
    """Fill ``out`` with gpuprobe's wheel and the binary wheels of its dependencies for the target.

    ``python``/``platforms``: the node's Python ('3.12') and platform tags (None/empty: this machine's).
    ``extras``: gpuprobe extras to include (``with_torch`` adds ``engine``: torch, triton, safetensors).
    ``add``: further requirements (e.g. 'cupy-cuda12x'); ``only``: keep just these projects (and
    gpuprobe); ``exclude``: drop these projects (a node that has them). One version per project.
    """
    if python is not None and not _PY_RE.match(python):
        raise UserError(f"--python must look like 3.12, got '{python}'.")
    for tag in platforms:
        if not _PLATFORM_RE.match(tag):
            raise UserError(f"--platform must be a wheel platform tag such as manylinux_2_28_x86_64, got '{tag}'.")
    pip = list(pip or [sys.executable, "-m", "pip"])
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create wheelhouse folder '{out}': {e.strerror or e}; pass a writable --out.") \
            from None
    src = find_source(source)
    all_extras = tuple(dict.fromkeys([*extras, *(TORCH_EXTRAS if with_torch else ())]))
    tags = expand_platforms(platforms)
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=out) as tmp:
        partial = Path(tmp)
        say(f"building gpuprobe's wheel from {src}")
        own = build_own_wheel(partial / "own", src, pip)
        target = []
        if python:
            target += ["--python-version", python, "--implementation", "cp"]
        for tag in tags:
            target += ["--platform", tag]
        spec = f"{own}[{','.join(all_extras)}]" if all_extras else str(own)
        say(f"downloading binary wheels for python {python or 'of this machine'} on "
            f"{', '.join(platforms) or 'this platform'}: {spec.rsplit('/', 1)[-1]} {' '.join(add)}")
        _run([*pip, "download", "--only-binary=:all:", "--quiet", "--dest", str(partial / "dl"), *target,
              spec, *add], "pip download (needs a package index)")
        got = sorted((partial / "dl").glob("*.whl"))
        keep_only = {normalize_name(n) for n in only}
        drop = {normalize_name(n) for n in exclude}
        chosen = [w for w in got if wheel_project(w) == "gpuprobe"
                  or ((not keep_only or wheel_project(w) in keep_only) and wheel_project(w) not in drop)]
        # one version per project: a wheel already in `out` for a project we bring is replaced
        projects = {wheel_project(w) for w in chosen}
        for old in out.glob("*.whl"):
            if wheel_project(old) in projects:
                old.unlink()
        for w in chosen:
            shutil.move(str(w), out / w.name)
    wheels = sorted(out.glob("*.whl"))
    house = Wheelhouse(out.resolve(), wheels, all_extras, python, tags)
    (out / "INSTALL.txt").write_text(
        f"# gpuprobe wheelhouse for python {python or 'as built'}, platforms {', '.join(platforms) or 'as built'}\n"
        f"# on the node, from the folder holding this file:\n"
        f"{house.install_line.replace(str(house.path), '.')}\n")
    return house
