"""The scripts in ``benchmarks/`` run through ``gpuprobe.run.script.run_script`` and call public functions only."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.errors import UserError
from gpuprobe.run.script import run_script

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ("attention.py", "ceilings.py", "gemm.py", "roofline_sweep.py", "throughput.py")
HELPERS = ("bench_args.py",)  # modules the scripts import


def _exit_code(main, argv=None) -> int:
    with pytest.raises(SystemExit) as e:
        run_script(main, argv)
    return e.value.code


def test_run_script_exits_with_main_s_code_and_one_line_on_errors(capsys):
    assert _exit_code(lambda: 0) == 0
    assert _exit_code(lambda: None) == 0
    assert _exit_code(lambda argv: len(argv), ["a", "b", "c"]) == 3

    def bad():
        raise UserError("the model folder has no config.json; pass a registry name.")

    assert _exit_code(bad) == 2
    assert _exit_code(lambda: int("x")) == 2  # a bad value: one line too

    def interrupted():
        raise KeyboardInterrupt

    assert _exit_code(interrupted) == 130
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "error: the model folder has no config.json" in err[0]
    assert "invalid literal" in err[1] and err[2].endswith("interrupted")


@pytest.mark.parametrize("script", (*SCRIPTS, *HELPERS))
def test_benchmarks_import_no_cli_and_no_private_names(script):
    tree = ast.parse((BENCHMARKS / script).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gpuprobe"):
            assert not node.module.startswith("gpuprobe.cli"), (script, node.module)
            assert not any(part.startswith("_") for part in node.module.split(".")), (script, node.module)
            assert not [a.name for a in node.names if a.name.startswith("_")], (script, node.module)
        elif isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.startswith("gpuprobe.cli")], script


@pytest.mark.parametrize("script", ["attention.py", "gemm.py", "throughput.py"])
def test_a_bad_dtype_is_one_line_and_exit_2(script):
    r = subprocess.run([sys.executable, str(BENCHMARKS / script), "--dtype", "int3"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("unknown dtype 'int3'; use one of bf16, fp16, fp32.")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
