"""What the ``kernels`` selftest checks will compile on a GPU, counted on a CPU.

Triton compiles one binary per launch specialisation: the constexpr values, ``num_warps`` /
``num_stages``, the pointer dtypes, and for each integer argument whether it equals 1 or is a
multiple of 16. The checks' launches are replayed here on the meta device with recording kernels
(no data is read, nothing runs) and the distinct specialisations are counted, so a change that
would make the checks compile many more kernels (and overrun their budget on a cold Triton cache,
about 0.5-1 s per kernel plus a C launcher per kernel signature) fails here first.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from gpuprobe.ceilings import kernel_bench as bench  # noqa: E402
from gpuprobe.kernels import gemm as gm  # noqa: E402
from gpuprobe.kernels import paged_attention as pa  # noqa: E402
from gpuprobe.tools.selftest.checks.kernels import CORRECTNESS_CASES, CORRECTNESS_SPLITS  # noqa: E402

ATTENTION_KERNELS = ("paged_decode_attention_v1_kernel", "paged_decode_attention_splitk_kernel",
                     "paged_decode_attention_reduce_kernel")
GEMM_KERNELS = ("decode_gemm_kernel", "decode_gemm_splitk_reduce_kernel")
META = dict(device="meta", dtype=torch.bfloat16)


def _spec(arg):
    """How Triton's JIT keys one runtime argument."""
    if isinstance(arg, torch.Tensor):
        return ("ptr", arg.dtype)
    if isinstance(arg, bool):
        return arg
    if isinstance(arg, int):
        return "1" if arg == 1 else "div16" if arg % 16 == 0 else "i32"
    if isinstance(arg, float):
        return "fp32"
    return arg


class _Recorder:
    def __init__(self, name: str, keys: set, grids: list):
        self.name, self.keys, self.grids = name, keys, grids

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grids.append((self.name, grid))
            self.keys.add((self.name, tuple(_spec(a) for a in args), tuple(sorted(kwargs.items()))))
        return launch


@pytest.fixture
def recorded(monkeypatch):
    keys: set = set()
    grids: list = []
    for name in ATTENTION_KERNELS:
        monkeypatch.setattr(pa, name, _Recorder(name, keys, grids))
    for name in GEMM_KERNELS:
        monkeypatch.setattr(gm, name, _Recorder(name, keys, grids))
    return keys, grids


def _attention(batch: int, max_ctx: int, shape: tuple[int, int, int], page: int, splits) -> None:
    hq, hkv, d = shape
    pages = -(-max_ctx // page)
    q = torch.empty(batch, hq, d, **META)
    cache = torch.empty(batch * pages, page, hkv, d, **META)
    table = torch.empty(batch, pages, dtype=torch.int32, device="meta")
    lens = torch.empty(batch, dtype=torch.int32, device="meta")
    # sm_count of an H100 SXM, as the device would report it
    pa.paged_decode_attention(q, cache, cache, table, lens, num_splits=splits, out=torch.empty_like(q), sm_count=132)


def test_attention_checks_compile_few_kernels(recorded):
    keys, grids = recorded
    for _, shape, batch, max_ctx, page in CORRECTNESS_CASES:  # paged_attention_correct
        for splits in CORRECTNESS_SPLITS:
            _attention(batch, max_ctx, shape, page, splits)
    for splits in (1, 4):  # ... and its CUDA-graph replay
        _attention(16, 2048, (14, 2, 64), 16, splits)
    correct = len(keys)
    heavy = sum(1 for k in keys if k[0] != "paged_decode_attention_reduce_kernel")
    assert heavy == 2 * len(CORRECTNESS_CASES)  # v1 and split-K once per head shape, nothing more
    assert correct <= 20, f"paged_attention_correct compiles {correct} kernels"

    _attention(256, 2048, (14, 2, 64), 16, None)  # paged_attention_bandwidth: v1, already compiled
    assert len(keys) == correct
    assert grids[-1] == ("paged_decode_attention_v1_kernel", (256, 2))

    _attention(8, 32768, (14, 2, 64), 16, 1)  # splitk_bandwidth: v1 and split-K, a new reduce width only
    _attention(8, 32768, (14, 2, 64), 16, None)
    assert len(keys) - correct <= 1
    assert grids[-2][0] == "paged_decode_attention_splitk_kernel" and grids[-2][1][2] > 1


def test_gemm_check_compiles_few_kernels(recorded):
    keys, _ = recorded
    for _, (k, n) in bench.model_gemm_shapes("qwen2-0.5b").items():  # decode_gemm
        for m in (1, 16, 64):
            gm.decode_gemm(torch.empty(m, k, **META), torch.empty(k, n, **META), out=torch.empty(m, n, **META),
                           sm_count=132)
    assert 0 < len(keys) <= 8, f"decode_gemm compiles {len(keys)} kernels"
