"""The offline wheelhouse: platform tags, bad input, and a real build installed with --no-index in a fresh venv."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from gpuprobe.cli import main
from gpuprobe.errors import UserError
from gpuprobe.tools.wheelhouse import build_wheelhouse, expand_platforms, find_source, normalize_name, wheel_project


def test_manylinux_tag_expands_to_every_older_glibc():
    tags = expand_platforms(["manylinux_2_28_x86_64"])
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux_2_25_x86_64" in tags  # ncu-report 2026.3.1's tag
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
            "manylinux_2_5_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags and len(tags) == len(set(tags))


def test_other_tags():
    arm = expand_platforms(["manylinux_2_28_aarch64"])
    assert "manylinux2014_aarch64" in arm and not any("manylinux1" in t or "2010" in t for t in arm)
    assert expand_platforms(["manylinux2014_x86_64"])[0] == "manylinux_2_17_x86_64"
    assert expand_platforms(["musllinux_1_2_x86_64"]) == ["musllinux_1_2_x86_64", "musllinux_1_1_x86_64"]
    assert expand_platforms(["macosx_14_0_arm64", "win_amd64"]) == ["macosx_14_0_arm64", "win_amd64"]


def test_names():
    assert normalize_name("Python_Dateutil") == "python-dateutil"
    assert wheel_project("ncu_report-2026.3.1-cp37-abi3-manylinux_2_25_x86_64.whl") == "ncu-report"


def test_bad_arguments_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="--python"):
        build_wheelhouse(tmp_path, python="three")
    with pytest.raises(UserError, match="--platform"):
        build_wheelhouse(tmp_path, platforms=["manylinux 2.28"])
    with pytest.raises(UserError, match="source tree"):
        find_source(tmp_path)
    assert main(["wheelhouse", "--out", str(tmp_path), "--python", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--python must look like 3.12" in err


def _index_reachable(tmp: Path) -> bool:
    p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                        "-d", str(tmp), "platformdirs"], capture_output=True, timeout=120)
    return p.returncode == 0


@pytest.mark.slow
def test_wheelhouse_installs_offline_into_a_fresh_venv(tmp_path, capsys):
    """Build for this machine's Python and platform, then install with --no-index into a venv without
    system packages, and run the installed `gpuprobe doctor` there."""
    if not _index_reachable(tmp_path / "probe"):
        pytest.skip("no package index reachable from this machine")
    house_dir = tmp_path / "house"
    assert main(["wheelhouse", "--out", str(house_dir)]) == 0
    out = capsys.readouterr().out
    assert f"pip install --no-index --find-links {house_dir.resolve()} 'gpuprobe[ncu,telemetry]'" in out
    assert "MiB in" in out
    wheels = sorted(p.name for p in house_dir.glob("*.whl"))
    projects = [wheel_project(w) for w in wheels]
    assert len(projects) == len(set(projects)), "one version per project"
    assert {"gpuprobe", "numpy", "pandas", "matplotlib", "rich", "ncu-report", "nvtx", "nvidia-ml-py"} <= set(projects)
    assert "torch" not in projects and "triton" not in projects
    assert (house_dir / "INSTALL.txt").read_text().strip().endswith("'gpuprobe[ncu,telemetry]'")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    offline = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1")  # no index, no extra find-links
    offline.pop("PYTHONPATH", None)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-compile", "--find-links",
                    str(house_dir), "gpuprobe[ncu,telemetry]"], check=True, env=offline, cwd=tmp_path, timeout=300)
    probe = subprocess.run([str(py), "-c", "import importlib.util, gpuprobe, ncu_report, nvtx, pynvml; "
                            "assert importlib.util.find_spec('gpuprobe.kernels.reference'); "
                            "print(gpuprobe.__file__)"], capture_output=True, text=True, env=offline, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert str(env_dir) in probe.stdout
    doc = subprocess.run([str(env_dir / "bin" / "gpuprobe"), "doctor", "--json", "--quick"], capture_output=True,
                         text=True, env=offline, cwd=tmp_path, timeout=120)
    assert doc.returncode == 0, doc.stderr
    items = {i["name"]: i["status"] for i in json.loads(doc.stdout)["items"]}
    assert items["gpuprobe"] == "ok" and items["ncu_report"] == "ok" and items["torch"] == "missing"


def test_own_wheel_falls_back_to_an_isolated_build_without_build_tools(tmp_path, monkeypatch):
    """A fresh venv has no `wheel`/new setuptools: the build must go through pip's isolated build env."""
    from gpuprobe.tools import wheelhouse as wh

    calls: list[list[str]] = []

    def fake_run(cmd, what, env=None):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--wheel-dir") + 1])
        (out / "gpuprobe-0.1.0-py3-none-any.whl").write_bytes(b"PK")
        return ""

    monkeypatch.setattr(wh, "_run", fake_run)
    monkeypatch.setattr(wh, "_has_build_tools", lambda pip: False)
    wh.build_own_wheel(tmp_path / "a", tmp_path, ["python", "-m", "pip"])
    monkeypatch.setattr(wh, "_has_build_tools", lambda pip: True)
    wh.build_own_wheel(tmp_path / "b", tmp_path, ["python", "-m", "pip"])
    assert "--no-build-isolation" not in calls[0] and "--use-pep517" in calls[0]
    assert "--no-build-isolation" in calls[1]


def test_a_failed_build_names_its_cause(monkeypatch):
    import subprocess as sp

    from gpuprobe.tools import wheelhouse as wh

    out = "running bdist_wheel\nerror: invalid command 'bdist_wheel'\n" + "note: generic hint\n" * 6
    monkeypatch.setattr(wh.subprocess, "run", lambda *a, **k: sp.CompletedProcess(a, 1, "", out))
    with pytest.raises(UserError, match="invalid command 'bdist_wheel'"):
        wh._run(["pip", "wheel"], "building gpuprobe's wheel")
