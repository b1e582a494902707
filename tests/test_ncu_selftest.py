"""The Nsight Compute selftest checks are registered and skip cleanly without a GPU."""
from __future__ import annotations

import pytest

from gpuprobe.tools.selftest.registry import CheckContext, Skip, all_checks

NAMES = ("ncu_counter_permission", "gemm_counter_flops", "csv_vs_rep_pair", "profile_torch_program")


def test_registered():
    checks = all_checks()
    for n in NAMES:
        assert checks[n] is not None and checks[n].owner == "ncu" and checks[n].gpu


@pytest.mark.parametrize("name", NAMES[1:])
def test_skip_without_gpu(name, tmp_path):
    from conftest import HAS_CUDA

    if HAS_CUDA:
        pytest.skip("a GPU is present: the check really runs in `gpuprobe selftest --gpu`")
    with pytest.raises(Skip):
        all_checks()[name].func(CheckContext(tmp_path, gpu=False, budget_s=10))


def test_decode_target_is_valid_python():
    from gpuprobe.tools.selftest.checks import ncu

    compile(ncu.DECODE_PROGRAM, "decode_target.py", "exec")
    compile(ncu.GEMM_PROGRAM.format(shapes=ncu.GEMM_SHAPES), "gemm_target.py", "exec")
    assert all(d % 128 == 0 for s in ncu.GEMM_SHAPES for d in s)


@pytest.mark.gpu
def test_profile_small_torch_program_end_to_end(tmp_path):
    """On a GPU with ncu: `gpuprobe profile` of one tile-aligned bf16 GEMM counts 2MNK tensor FLOPs.

    Small on purpose (one kernel profiled, about 15 s): the selftest checks of this capability
    profile the larger programs."""
    import subprocess
    import sys

    from gpuprobe.ncu import load_ncu_report
    from gpuprobe.ncu.runner import find_ncu
    from gpuprobe.tools.selftest.checks import ncu

    if find_ncu() is None:
        pytest.skip("ncu is not installed")
    m, n, k = 512, 1024, 256
    script = tmp_path / "gemm.py"
    script.write_text(ncu.GEMM_PROGRAM.format(shapes=((m, n, k),)))
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "profile", "--out", str(tmp_path), "--name", "gemm",
                        "--nvtx-include", f"gemm_{m}x{n}x{k}/", "--timeout", "90", "--", sys.executable, str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = load_ncu_report(tmp_path / "gemm.ncu-rep")
    assert (tmp_path / "gemm.csv").exists() and len(df) >= 1
    assert float(df["flops_tensor"].sum()) / (2.0 * m * n * k) == pytest.approx(1.0, abs=0.02)
