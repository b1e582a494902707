"""Decode GEMM ``y = x @ W`` against a float64 matmul (Triton interpreter on CPU; small shapes).

bf16 runs in the interpreter with the kernel's fp32 upcast of the dot operands; real bf16 runs in
the marked GPU test and the ``decode_gemm`` selftest check.
"""
from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from gpuprobe.kernels import choose_gemm_config, decode_gemm  # noqa: E402
from gpuprobe.kernels import gemm as gm  # noqa: E402
from gpuprobe.kernels.reference import gemm_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float16: 3e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


def check(m, n, k, dtype=torch.float16, *, transposed_w=False, **knobs):
    seed = random.randrange(1 << 31)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype).to(DEVICE)
    if transposed_w:  # nn.Linear stores [N, K]; x @ weight.t() has a column-major W
        w = torch.randn(n, k, generator=g).to(dtype).to(DEVICE).t()
    else:
        w = torch.randn(k, n, generator=g).to(dtype).to(DEVICE)
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)
    assert decode_gemm(x, w, out=out, **knobs) is out
    ref = gemm_reference(x, w, compute_dtype=torch.float64).double()
    assert not torch.isnan(out).any(), f"unwritten output (seed {seed})"
    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < TOL[dtype], f"max error {err:.2e} (seed {seed}, {m}x{n}x{k}, {knobs})"
    assert torch.allclose(out.float(), torch.matmul(x.float(), w.float()), rtol=2e-2, atol=2e-2 * ref.abs().max().item())
    return out


@pytest.mark.parametrize("m, n, k, knobs", [
    (1, 96, 200, {}),  # batch 1, K not a multiple of the tile
    (5, 70, 256, {"split_k": 3}),  # ragged N, split-K
    (16, 64, 384, {"split_k": 4, "block_k": 32}),
    (33, 48, 64, {"block_m": 32, "block_n": 16}),  # M spans two row tiles
    (100, 40, 48, {"block_k": 16, "split_k": 2}),
])
def test_matches_reference(m, n, k, knobs):
    check(m, n, k, **knobs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dtypes(dtype):
    check(4, 80, 160, dtype, split_k=2)
    check(4, 80, 160, dtype, split_k=1)


def test_transposed_weight_and_default_knobs():
    check(3, 72, 136, transposed_w=True)
    check(20, 64, 96)


def test_split_k_equals_single_pass():
    x = torch.randn(7, 320, dtype=torch.float32, device=DEVICE)
    w = torch.randn(320, 48, dtype=torch.float32, device=DEVICE)
    one = decode_gemm(x, w, split_k=1, block_k=32)
    for s in (2, 3, 10, 50):  # 50 > K blocks: clamped
        assert torch.allclose(decode_gemm(x, w, split_k=s, block_k=32), one, rtol=1e-5, atol=1e-4)


def test_rejects_bad_inputs():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="x \\[M, K\\]"):
        decode_gemm(x, torch.randn(9, 4))
    with pytest.raises(ValueError, match="share"):
        decode_gemm(x, torch.randn(8, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="power of two"):
        decode_gemm(x, torch.randn(8, 4), block_n=24)


def test_choose_gemm_config():
    c = choose_gemm_config(1, 896, 896, 132)
    assert (c.block_m, c.block_n, c.block_k) == (16, 64, 128)
    assert c.split_k > 1  # 14 column tiles cannot fill 132 SMs
    big = choose_gemm_config(1024, 9728, 896, 132)
    assert big.block_m == 128 and big.split_k == 1
    for m in (1, 2, 8, 16, 17, 32, 64, 65, 256, 1024):
        cfg = choose_gemm_config(m, 1152, 896, 132)
        assert cfg.block_m >= min(m, 16) and cfg.block_m & (cfg.block_m - 1) == 0
        tiles = -(-m // cfg.block_m) * -(-1152 // cfg.block_n)
        assert cfg.split_k == 1 or tiles * cfg.split_k <= 2 * 132
        assert -(-896 // cfg.block_k) >= cfg.split_k


class _Recorder:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __getitem__(self, grid):
        return lambda *a, **kw: self.calls.append((self.name, grid))


def test_launcher_is_graph_safe(monkeypatch):
    calls = []
    monkeypatch.setattr(gm, "decode_gemm_kernel", _Recorder("gemm", calls))
    monkeypatch.setattr(gm, "decode_gemm_splitk_reduce_kernel", _Recorder("reduce", calls))
    x = torch.empty(4, 896, dtype=torch.bfloat16, device="meta")
    w = torch.empty(896, 896, dtype=torch.bfloat16, device="meta")
    decode_gemm(x, w, split_k=4, block_k=128)
    assert [c[0] for c in calls] == ["gemm", "reduce"] and calls[0][1][2] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("m", [1, 16, 64, 256, 1024])
@pytest.mark.parametrize("k, n", [(896, 1152), (896, 896), (896, 9728), (4864, 896)])
def test_bf16_projection_shapes_on_gpu(m, k, n):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) / k**0.5
    y = decode_gemm(x, w)
    ref = x.double() @ w.double()
    assert ((y.double() - ref).norm() / ref.norm()).item() < 1e-2


def test_gemm_bench_shapes_and_claims():
    from gpuprobe.ceilings import kernel_bench as bench
    from gpuprobe.kernels.gemm import gemm_bytes
    from gpuprobe.tools.selftest.checks.kernels import evaluate_gemm

    shapes = bench.model_gemm_shapes("qwen2-0.5b")
    assert shapes == {"qkv_proj": (896, 1152), "o_proj": (896, 896), "gate_up_proj": (896, 9728),
                      "down_proj": (4864, 896)}
    assert gemm_bytes(1, 896, 896) == (896 + 896 * 896 + 896) * 2
    ok = {"op": "o_proj", "m": 16, "ratio_vs_cublas": 1.1, "rel_err": 1e-3}
    assert evaluate_gemm([ok, {**ok, "m": 256, "ratio_vs_cublas": 2.0}]) == []  # M > 64 has no time claim
    assert len(evaluate_gemm([{**ok, "ratio_vs_cublas": 1.5}, {**ok, "rel_err": 0.5}])) == 2
    assert bench.gemm_target(16, ok) == "met" and bench.gemm_target(512, ok) == ""
