"""Paged decode attention (v1 and split-K) against the float64 reference.

On CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest or below,
before triton is imported), so shapes stay small. bf16 runs there with the kernel's fp32 upcast
of the dot operands (the interpreter's bf16 ``tl.dot`` is wrong); real bf16 tensor-core dots are
checked on a GPU (marked tests, and the ``paged_attention_correct`` selftest check).
Inputs are fresh random each run; the seed is in every failure message.
"""
from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from gpuprobe.kernels import choose_num_splits, paged_decode_attention  # noqa: E402
from gpuprobe.kernels import paged_attention as pa  # noqa: E402
from gpuprobe.kernels.reference import paged_attention_reference  # noqa: E402
from gpuprobe.tools.selftest.checks.kernels import (  # noqa: E402
    CORRECTNESS_CASES, CORRECTNESS_SPLITS, correctness_lens)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


def make_case(batch, hq, hkv, d, page, lens, dtype=torch.float16, *, spare_pages=3, shuffle=True,
              strided_cache=False, strided_q=False, seed=None):
    """Random inputs with shuffled pages; ``lens`` per sequence. Returns (inputs, seed)."""
    seed = random.randrange(1 << 31) if seed is None else seed
    g = torch.Generator().manual_seed(seed)
    max_pages = max(1, -(-max(lens) // page))
    num_pages = batch * max_pages + spare_pages
    heads = hkv + 3 if strided_cache else hkv  # a view over the first hkv heads of a wider cache
    k = torch.randn(num_pages, page, heads, d, generator=g).to(dtype)[:, :, :hkv]
    v = torch.randn(num_pages, page, heads, d, generator=g).to(dtype)[:, :, :hkv]
    if strided_q:  # q as a slice of a fused qkv activation
        q = torch.randn(batch, (hq + 2 * hkv) * d, generator=g).to(dtype)[:, : hq * d].view(batch, hq, d)
    else:
        q = torch.randn(batch, hq, d, generator=g).to(dtype)
    order = torch.randperm(num_pages, generator=g) if shuffle else torch.arange(num_pages)
    block_table = order[: batch * max_pages].reshape(batch, max_pages).to(torch.int32)
    context_lens = torch.tensor(lens, dtype=torch.int32)
    to = lambda t: t.to(DEVICE)  # noqa: E731
    return tuple(map(to, (q, k, v, block_table, context_lens))), seed


def run_and_check(inputs, seed, *, num_splits, scale=None, **knobs):
    q = inputs[0]
    out = torch.full_like(q, float("nan"))
    ret = paged_decode_attention(*inputs, scale=scale, num_splits=num_splits, out=out, **knobs)
    assert ret is out
    ref = paged_attention_reference(*inputs, scale=scale, compute_dtype=torch.float64).double()
    assert not torch.isnan(out).any(), f"unwritten or NaN output (seed {seed})"
    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert err < TOL[q.dtype], f"max error {err:.2e} relative to max |ref| (seed {seed}, splits {num_splits})"
    return out


# head_dim x page size x GQA group x ragged lengths (incl. 1 and non-multiples of the page size)
CASES = [
    # batch, hq, hkv, d, page, lens, block_kv
    (3, 14, 2, 64, 16, [1, 37, 50], 32),  # Qwen2-0.5B heads (group 7, padded to 16)
    (2, 4, 4, 80, 8, [23, 9], 16),  # MHA, head_dim 80 (padded to 128), tile spans 2 pages
    (2, 6, 2, 96, 32, [70, 1], 32),  # head_dim 96, tile = page
    (2, 12, 2, 128, 128, [129, 200], 32),  # Qwen2-1.5B heads, page 128 > tile
    (2, 16, 1, 64, 8, [17, 64], 64),  # group 16: the widest single-tile group
]


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}-h{c[1]}x{c[2]}-d{c[3]}-p{c[4]}")
def test_matches_reference(case, num_splits):
    batch, hq, hkv, d, page, lens, block_kv = case
    inputs, seed = make_case(batch, hq, hkv, d, page, lens)
    run_and_check(inputs, seed, num_splits=num_splits, block_kv=block_kv)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_splits", [1, 4])
def test_dtypes(dtype, num_splits):
    inputs, seed = make_case(2, 8, 2, 64, 16, [45, 3], dtype=dtype)
    run_and_check(inputs, seed, num_splits=num_splits, block_kv=16)


def test_splitk_equals_v1():
    inputs, seed = make_case(3, 8, 2, 64, 16, [150, 64, 7])
    v1 = run_and_check(inputs, seed, num_splits=1, block_kv=32)
    for splits in (2, 5, 9):  # 9 partitions of 150 tokens in 32-token tiles: some partitions empty
        sk = run_and_check(inputs, seed, num_splits=splits, block_kv=32)
        assert torch.allclose(sk.float(), v1.float(), atol=2e-3, rtol=0), f"splits {splits} vs v1 (seed {seed})"


def test_context_one_and_exact_page_multiples():
    inputs, seed = make_case(4, 4, 1, 64, 16, [1, 16, 32, 1])
    out = run_and_check(inputs, seed, num_splits=1, block_kv=16)
    # with one token the softmax weight is 1: the output is that token's V row
    q, k, v, bt, _ = inputs
    first = v[bt[0, 0].long(), 0, 0]
    assert torch.allclose(out[0].float(), first.float().expand(4, -1), atol=1e-3)
    run_and_check(inputs, seed, num_splits=2, block_kv=16)


def test_custom_scale_and_strided_inputs():
    inputs, seed = make_case(2, 6, 2, 64, 16, [40, 21], strided_cache=True, strided_q=True)
    assert not inputs[1].is_contiguous() and not inputs[0].is_contiguous()
    run_and_check(inputs, seed, num_splits=1, scale=0.3, block_kv=32)
    run_and_check(inputs, seed, num_splits=2, scale=0.3, block_kv=32)


def test_unshuffled_pages_and_default_knobs():
    inputs, seed = make_case(2, 4, 2, 64, 16, [33, 70], shuffle=False)
    run_and_check(inputs, seed, num_splits=None)


def test_zero_length_sequence_gives_zeros():
    inputs, seed = make_case(2, 4, 2, 64, 16, [0, 20])
    for splits in (1, 3):
        out = torch.full_like(inputs[0], float("nan"))
        paged_decode_attention(*inputs, num_splits=splits, out=out, block_kv=16)
        assert torch.equal(out[0], torch.zeros_like(out[0])), f"seed {seed}"
        ref = paged_attention_reference(*inputs, compute_dtype=torch.float64)
        assert torch.allclose(out[1].double(), ref[1].double(), atol=2e-3), f"seed {seed}"


def test_returns_new_tensor_without_out():
    inputs, seed = make_case(1, 2, 1, 64, 8, [12])
    out = paged_decode_attention(*inputs, block_kv=16)
    assert out.shape == inputs[0].shape and out.dtype == inputs[0].dtype
    ref = paged_attention_reference(*inputs, compute_dtype=torch.float64)
    assert torch.allclose(out.double(), ref.double(), atol=2e-3), f"seed {seed}"


@pytest.mark.parametrize("mutate, match", [
    (lambda a: {**a, "q": a["q"][:, :3]}, "multiple of num_kv_heads"),
    (lambda a: {**a, "block_table": a["block_table"].long()}, "block_table must be int32"),
    (lambda a: {**a, "context_lens": a["context_lens"].long()}, "context_lens must be int32"),
    (lambda a: {**a, "v_cache": a["v_cache"].half()}, "share a dtype"),
    (lambda a: {**a, "k_cache": a["k_cache"][..., :32]}, "head_dim"),
    (lambda a: {**a, "block_kv": 48}, "power of two"),
    (lambda a: {**a, "num_splits": 0}, "num_splits"),
    (lambda a: {**a, "out": torch.empty(1)}, "out must be"),
])
def test_rejects_bad_inputs(mutate, match):
    (q, k, v, bt, cl), _ = make_case(2, 4, 2, 64, 16, [5, 9], dtype=torch.float32)
    args = dict(q=q, k_cache=k, v_cache=v, block_table=bt, context_lens=cl)
    with pytest.raises(ValueError, match=match):
        paged_decode_attention(**mutate(args))


# ---- split heuristic: a pure function -----------------------------------------------------------
def test_choose_num_splits_targets():
    assert choose_num_splits(256, 2, 2048, 132) == 1  # 512 programs: already ~4 waves
    s = choose_num_splits(8, 2, 32768, 132)
    assert 8 <= s <= 64 and 8 * 2 * s >= 2 * 132  # long context, small batch: fill two waves
    assert choose_num_splits(8, 2, 600, 132) == 1  # too short to split at 512 tokens a partition
    assert choose_num_splits(1, 1, 10**6, 132) == 64  # capped
    assert choose_num_splits(64, 2, 2048, 132) == 3


def test_choose_num_splits_monotone():
    for ctx in (512, 2048, 8192, 65536):
        prev = None
        for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            s = choose_num_splits(b, 2, ctx, 132)
            assert s >= 1 and (prev is None or s <= prev)  # more sequences, fewer partitions
            assert s == 1 or ctx // s >= 512
            prev = s
    with pytest.raises(ValueError):
        choose_num_splits(0, 2, 100, 132)


# ---- graph safety: the launcher never reads device data on the host --------------------------------
class _Recorder:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((self.name, grid, kwargs))
        return launch


@pytest.mark.parametrize("num_splits", [1, 4, None])
def test_launcher_is_graph_safe(monkeypatch, num_splits):
    """On the meta device any read of tensor data (.item(), max(context_lens), bool()) raises."""
    calls = []
    for name in ("paged_decode_attention_v1_kernel", "paged_decode_attention_splitk_kernel",
                 "paged_decode_attention_reduce_kernel"):
        monkeypatch.setattr(pa, name, _Recorder(name, calls))
    meta = dict(device="meta")
    q = torch.empty(8, 14, 64, dtype=torch.bfloat16, **meta)
    k = torch.empty(600, 16, 2, 64, dtype=torch.bfloat16, **meta)
    bt = torch.empty(8, 2048, dtype=torch.int32, **meta)  # 32768 tokens of capacity
    cl = torch.empty(8, dtype=torch.int32, **meta)
    out = torch.empty_like(q)
    assert paged_decode_attention(q, k, k, bt, cl, num_splits=num_splits, out=out, sm_count=132) is out
    names = [c[0] for c in calls]
    if num_splits == 1:
        assert names == ["paged_decode_attention_v1_kernel"] and calls[0][1] == (8, 2)
    else:
        s = num_splits or choose_num_splits(8, 2, 2048 * 16, 132)
        assert names == ["paged_decode_attention_splitk_kernel", "paged_decode_attention_reduce_kernel"]
        assert calls[0][1] == (8, 2, s) and calls[1][1] == (8, 14)


# ---- device ----------------------------------------------------------------------------------------
# The cases and split counts of the ``paged_attention_correct`` selftest check: the same launch
# configurations, so on a GPU these tests reuse the kernels that check compiled (Triton's disk cache).
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CORRECTNESS_CASES, ids=[c[0] for c in CORRECTNESS_CASES])
@pytest.mark.parametrize("num_splits", CORRECTNESS_SPLITS)
def test_bf16_real_sizes_on_gpu(case, num_splits):
    _, (hq, hkv, d), batch, max_ctx, page = case
    lens = correctness_lens(batch, max_ctx)
    inputs, seed = make_case(batch, hq, hkv, d, page, lens, dtype=torch.bfloat16)
    out = torch.full_like(inputs[0], float("nan"))
    paged_decode_attention(*inputs, num_splits=num_splits, out=out)
    ref = paged_attention_reference(*inputs, compute_dtype=torch.float64).double()
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, f"relative error {rel:.2e} (seed {seed})"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("num_splits", [1, 4])
def test_cuda_graph_replay_follows_new_lengths(num_splits):
    inputs, seed = make_case(8, 14, 2, 64, 16, [512] * 8, dtype=torch.bfloat16)
    q, k, v, bt, cl = inputs
    out = torch.full_like(q, float("nan"))
    paged_decode_attention(*inputs, num_splits=num_splits, out=out)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        paged_decode_attention(*inputs, num_splits=num_splits, out=out)
    cl.copy_(torch.randint(1, 513, cl.shape, dtype=torch.int32, device="cuda"))
    q.copy_(torch.randn_like(q))
    out.fill_(float("nan"))
    graph.replay()
    ref = paged_attention_reference(*inputs, compute_dtype=torch.float64).double()
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2, f"seed {seed}"


# ---- benchmark arithmetic, CLI input checks and selftest checks (pure parts) ----------------------
def test_attention_bytes_and_targets():
    from gpuprobe.analytic import attention_bytes, decode_costs
    from gpuprobe.ceilings import kernel_bench as bench
    from gpuprobe.specs import get_model

    shape = bench.HeadShape.of_model("qwen2-0.5b")
    assert shape == bench.HeadShape(14, 2, 64)
    # B=256, C=2048: K and V, 2 KV heads x 64 dims x 2 bytes per token, plus q and out
    assert bench.attention_call_bytes(256, 2048, shape) == 2 * 256 * 2 * 2048 * 64 * 2 + 2 * 256 * 14 * 64 * 2
    # one count: the cost model's attention op moves the same bytes per layer
    one = attention_bytes(256, 2048, num_heads=14, num_kv_heads=2, head_dim=64, elt_bytes=2)
    spec = get_model("qwen2-0.5b")
    cost = next(c for c in decode_costs(spec, 256, 2048, "bf16") if c.op == "attention")
    assert cost.dram_bytes == one.total * spec.num_layers and cost.kv_read_bytes == one.kv_read * spec.num_layers
    assert bench.pct(3.0e12, 1.0, 3.0e12) == pytest.approx(100.0)
    row = {"pct_copy_bw": 91.0, "ratio_vs_sdpa_dense": 1.02, "num_splits": 1}
    assert bench.attention_target(256, 2048, row) == "met"
    assert bench.attention_target(256, 2048, {**row, "pct_copy_bw": 80.0}).startswith("missed: 80%")
    assert "SDPA" in bench.attention_target(256, 2048, {**row, "ratio_vs_sdpa_dense": 1.3})
    assert bench.attention_target(8, 32768, {"pct_copy_bw": 75.0, "num_splits": 17}) == "met"
    assert bench.attention_target(8, 32768, {"pct_copy_bw": 75.0, "num_splits": 1}) == ""  # v1 beside it
    assert bench.attention_target(64, 1024, row) == ""


def test_parse_knobs():
    from gpuprobe.ceilings import kernel_bench as bench

    assert bench.parse_knobs(None, bench.ATTENTION_KNOB_NAMES) == [{}]
    grid = bench.parse_knobs("block_kv=32,64 num_splits=1,auto", bench.ATTENTION_KNOB_NAMES)
    assert grid == [{"block_kv": 32, "num_splits": 1}, {"block_kv": 32, "num_splits": None},
                    {"block_kv": 64, "num_splits": 1}, {"block_kv": 64, "num_splits": None}]
    for bad in ("block_kv", "tile=3", "num_warps=0", "num_warps=x"):
        with pytest.raises(ValueError):
            bench.parse_knobs(bad, bench.ATTENTION_KNOB_NAMES)


def test_attention_bench_cli_rejects_bad_input(capsys):
    from gpuprobe.cli import main

    assert main(["attention-bench", "--knobs", "tile=3"]) == 2
    assert main(["attention-bench", "--knobs", "block_kv=48"]) == 2
    assert main(["attention-bench", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "block_kv must be a power of two" in err and "unknown model" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_selftest_checks_skip_without_gpu(tmp_path):
    from gpuprobe.tools.selftest.checks import kernels as checks
    from gpuprobe.tools.selftest.registry import CheckContext, Skip, all_checks

    registered = all_checks()
    for name in ("paged_attention_correct", "paged_attention_bandwidth", "splitk_bandwidth", "decode_gemm"):
        assert registered[name] is not None and registered[name].owner == "kernels"
        with pytest.raises(Skip):
            registered[name].func(CheckContext(out_dir=tmp_path, gpu=True, budget_s=60))
    assert checks.evaluate_correctness({"a": 5e-3, "b": 2e-2, "c": float("nan")}) == ["b", "c"]


def test_selftest_bandwidth_claims():
    from gpuprobe.tools.selftest.checks import kernels as checks

    assert checks.evaluate_large_batch({"pct_copy_bw": 92.0, "ratio_vs_sdpa_dense": 1.0}) == []
    assert len(checks.evaluate_large_batch({"pct_copy_bw": 85.0, "ratio_vs_sdpa_dense": 1.2})) == 2
    sk = {"num_splits": 17, "pct_copy_bw": 74.0, "time_us": 120.0}
    assert checks.evaluate_splitk(sk, {"time_us": 800.0}) == []
    assert len(checks.evaluate_splitk({**sk, "pct_copy_bw": 50.0, "time_us": 900.0}, {"time_us": 800.0})) == 2
    assert checks.evaluate_splitk({**sk, "num_splits": 1}, {"time_us": 800.0}) == ["the heuristic chose no split"]
