"""Bad command lines and missing optional modules: one line on stderr, exit code 2, no traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD_ARGUMENTS = [
    ["roofline", "--batch"],
    ["roofline", "--model", "qwen2-0.5b", "--attention", "foo"],
    ["roofline", "--model", "qwen2-0.5b", "--context", "x"],
    ["no-such-command"],
    ["report"],
    ["advise", "--rule", "nonsense"],
    ["advise", "--from", str(Path(__file__).parent / "fixtures/seed_results/opt-2.7b_h100_sharegpt.csv"), "--rule", "paper",
     "--min-efficiency", "5"],
]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _assert_one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=lambda a: " ".join(a))
def test_argument_errors_are_one_line(argv):
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", *argv], capture_output=True, text=True, timeout=120)
    line = _assert_one_line(proc)
    assert "error:" in line and ("--help" in line or "--min-efficiency" in line)


@pytest.mark.parametrize("command", [["throughput", "--model", "qwen2-0.5b", "--batch", "1"],
                                     ["attention-bench", "--model", "qwen2-0.5b"]])
def test_missing_torch_names_the_extra(command):
    # torch made unimportable, as after the light install (`pip install -e .`)
    code = ("import sys; sys.modules['torch'] = None; from gpuprobe.cli import main; "
            f"sys.exit(main({command!r}))")
    line = _assert_one_line(_run(code))
    assert "'torch'" in line and "pip install 'gpuprobe[engine]'" in line


def test_other_missing_modules_still_raise():
    from gpuprobe.errors import missing_dependency

    assert missing_dependency(ModuleNotFoundError("x", name="numpyy")) is None
    err = missing_dependency(ModuleNotFoundError("x", name="ncu_report.sub"))
    assert err is not None and "gpuprobe[ncu]" in str(err)


@pytest.mark.parametrize("argv,needle", [
    (["roofline", "--model", "qwen2-0.5b", "--batch", "1" + "0" * 400], "401-digit"),
    (["roofline", "--model", "qwen2-0.5b", "--batch", "70000"], "65,536"),
    (["roofline", "--model", "qwen2-0.5b", "--context", "1" + "0" * 30], "limit"),
    (["roofline", "--model", "qwen2-0.5b", "--batch", "0"], "positive"),
])
def test_integer_options_have_limits(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", *argv], capture_output=True, text=True, timeout=120)
    assert needle in _assert_one_line(proc)


def test_context_beyond_the_model_maximum_needs_the_override(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--model", "llama-2-7b", "--context", "8192",
                           "--batch", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    line = _assert_one_line(proc)
    assert "4,096" in line and "--beyond-max-context" in line
    ok = subprocess.run([sys.executable, "-m", "gpuprobe", "roofline", "--model", "llama-2-7b", "--context", "8192",
                         "--batch", "1", "--beyond-max-context", "--out", str(tmp_path)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
