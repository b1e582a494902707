"""The Nsight Compute selftest checks are registered and skip cleanly without a GPU."""
from __future__ import annotations

import pytest

from gpuprobe.selftest.registry import CheckContext, Skip, all_checks

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
    from gpuprobe.selftest.checks import ncu

    compile(ncu.DECODE_PROGRAM, "decode_target.py", "exec")
    compile(ncu.GEMM_PROGRAM.format(shapes=ncu.GEMM_SHAPES), "gemm_target.py", "exec")
    assert all(d % 128 == 0 for s in ncu.GEMM_SHAPES for d in s)


@pytest.mark.gpu
def test_profile_small_torch_program_end_to_end(tmp_path):
    """On a GPU with ncu: the profile_torch_program check passes."""
    from gpuprobe.ncu.runner import find_ncu

    if find_ncu() is None:
        pytest.skip("ncu is not installed")
    figures = all_checks()["profile_torch_program"].func(CheckContext(tmp_path, gpu=True, budget_s=120))
    assert figures["qkv_flops_ratio"] == pytest.approx(1.0, abs=0.02)
