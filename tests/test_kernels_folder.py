"""The checkout's ``kernels/`` folder (installed as ``gpuprobe.kernels``) never stands in for an installed
top-level ``kernels`` (Hugging Face's, which transformers >= 5.25 imports) when the checkout's root is on
``sys.path``, as it is under ``python -m`` there; where no other ``kernels`` exists, it is left as found."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run_at_root(code: str, *flags: str, pythonpath: str | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_installed_kernels_package_wins_over_the_checkout_folder(tmp_path):
    other = tmp_path / "site" / "kernels"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("MARK = 'installed'\n")
    (other / "layers.py").write_text("NAME = 'installed layers'\n")
    out = _run_at_root("import kernels, kernels.layers, gpuprobe.kernels as g; "
                       "print(kernels.MARK, kernels.layers.NAME, sep='|'); "
                       "print(kernels.__file__); print(g.__name__, g.__file__, 'MARK' in vars(g))",
                       pythonpath=str(tmp_path / "site"))
    first, where, ours = out.splitlines()
    assert first == "installed|installed layers"
    assert Path(where) == other / "__init__.py"
    assert ours.split() == ["gpuprobe.kernels", str(REPO / "kernels" / "__init__.py"), "False"]


def test_with_no_other_kernels_the_folder_is_left_as_found():
    # -S: no site-packages, so the checkout's folder is the only top-level ``kernels`` there is
    out = _run_at_root("import kernels; print(kernels.__file__, kernels.__name__)", "-S")
    assert out.split() == [str(REPO / "kernels" / "__init__.py"), "kernels"]


def test_a_failing_installed_kernels_raises_its_own_error(tmp_path):
    other = tmp_path / "site" / "kernels"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('the installed kernels is broken')\n")
    code = ("import sys\ntry:\n    import kernels\nexcept ImportError as e:\n    print(e)\n"
            "print('kernels' in sys.modules)")
    assert _run_at_root(code, pythonpath=str(tmp_path / "site")).splitlines() == [
        "the installed kernels is broken", "False"]
