"""The torch.compile-fused step on a CPU (inductor's C++ backend): the same greedy tokens and logits as
the eager step, one graph with no breaks, the KV cache written in place, buffers kept across steps,
no recompilation as sequences advance; profiling stays eager; the throughput worker, CLI flag and
selftest check with compile."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from engine_helpers import engine_checks_on_cpu, save_hf  # noqa: E402
from gpuprobe.engine import Engine  # noqa: E402
from gpuprobe.engine.compiled import COMPILE_OPTIONS, no_recompile  # noqa: E402
from gpuprobe.engine.nvtx import RecordingBackend, use_backend  # noqa: E402

PROMPTS = [[3, 14, 15, 92, 65], list(range(20, 37)), [7] * 9]  # ragged: pages crossed at different steps
NEW = 6
BUFFERS = ("tokens", "next_tokens", "positions", "context_lens", "slot_mapping", "block_table")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_hf("qwen2", tmp_path_factory.mktemp("tinyq_compile"))


@pytest.fixture(scope="module")
def engines(tiny_dir):
    kw = dict(dtype="fp32", device="cpu", attention="torch", page_size=4)
    return Engine.from_pretrained(tiny_dir, **kw), Engine.from_pretrained(tiny_dir, compile=True, **kw)


def _batch(eng):
    """The batch ``generate(PROMPTS, NEW)`` builds, prefilled and pointed at the first new token."""
    b = eng.new_batch([len(p) for p in PROMPTS], [len(p) + NEW for p in PROMPTS])
    eng.start(b, PROMPTS)
    return b


def test_options_never_add_cudagraphs():
    assert COMPILE_OPTIONS == {"mode": "default", "fullgraph": False, "dynamic": False}


def test_compiled_step_matches_eager_in_place_without_recompiling(engines):
    eager, fused = engines
    assert not eager.compile and fused.compile
    be, bf = _batch(eager), _batch(fused)
    ptrs = {n: getattr(bf, n).data_ptr() for n in BUFFERS}
    pool_ptr = bf.cache.pool.data_ptr()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    breaks_before = sum(torch._dynamo.utils.counters["graph_break"].values())
    assert fused.warm_compiled(bf) > 0 and fused.compiled_step.compile_s is not None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs_before + 1  # it did compile
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == breaks_before  # one graph, no breaks
    with no_recompile():  # advancing changes no guarded shape: a captured graph would stay valid
        for j in range(NEW - 1):
            le, lf = eager.fast_step(be), fused.fast_step(bf)
            assert (le - lf).abs().max().item() < 1e-4, f"step {j}"
            assert torch.equal(be.next_tokens, bf.next_tokens), f"step {j}"
            be.advance()
            bf.advance()
    assert {n: getattr(bf, n).data_ptr() for n in BUFFERS} == ptrs and bf.cache.pool.data_ptr() == pool_ptr
    # the fused step wrote each new token's K/V into the same pool slots as the eager one (in place)
    used = [p for s in bf.seqs for p in s.pages]
    torch.testing.assert_close(bf.cache.pool[:, :, used], be.cache.pool[:, :, used], atol=1e-5, rtol=1e-5)
    assert bf.cache.pool[:, :, used].abs().sum() > 0
    eager.release(be)
    fused.release(bf)


def test_generate_compiled_gives_eager_tokens(engines):
    eager, fused = engines
    want = eager.generate(PROMPTS, NEW)
    with no_recompile():  # the batch generate builds has the shapes compiled above
        got = fused.generate(PROMPTS, NEW)
    assert got == want and len(set(map(tuple, want))) > 1


def test_profiling_step_stays_eager(engines):
    """``step(nvtx=True)`` never runs the compiled step: per-op ranges need eager kernels."""
    _, fused = engines
    b = _batch(fused)

    class Boom:
        def __call__(self, *a):
            raise AssertionError("the compiled step ran")

    real, fused._compiled = fused._compiled, Boom()
    try:
        rec = RecordingBackend()
        with use_backend(rec):
            fused.step(b, nvtx=True)
        assert rec.balanced and "decode/layer1/rope/" in rec.paths
        assert fused.time_step(b, warmup=0).per_op["qkv_proj"] > 0
        with pytest.raises(AssertionError, match="compiled step ran"):
            fused.fast_step(b)
    finally:
        fused._compiled = real
        fused.release(b)


def test_compile_flag_needs_a_compiling_engine(engines):
    eager, _ = engines
    from gpuprobe.errors import UserError

    assert eager.warm_compiled(_batch(eager)) is None
    with pytest.raises(UserError, match="compile=True"):
        eager.compiled_step  # noqa: B018


def test_triton_backend_compiles_through_its_custom_op(tiny_dir):
    """The Triton launcher is one opaque op in the graph (no break), interpreted here."""
    pytest.importorskip("triton")
    kw = dict(dtype="fp32", device="cpu", page_size=4)
    ref = Engine.from_pretrained(tiny_dir, attention="torch", **kw)
    tri = Engine.from_pretrained(tiny_dir, attention="triton", compile=True, **kw)
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    br, bt = ref.prepare(2, 21, seed=3), tri.prepare(2, 21, seed=3)
    torch.testing.assert_close(tri.fast_step(bt), ref.step(br), atol=1e-4, rtol=1e-4)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == breaks
    torch.testing.assert_close(tri.cache.pool, ref.cache.pool, atol=1e-5, rtol=1e-5)


# ---- throughput worker, CLI, selftest check -------------------------------------------------------
def test_cli_compile_flag_records_compiled(tiny_dir, tmp_path):
    from gpuprobe.cli import main

    out = tmp_path / "tp"
    args = ["throughput", "--device", "cpu", "--model", str(tiny_dir), "--batch", "1", "--context", "12",
            "--steps", "2", "--warmup", "1", "--dtype", "fp32", "--inline", "--compile", "--out", str(out)]
    assert main(args) == 0
    df = pd.read_csv(out / "throughput.csv")
    assert list(df["compiled"]) == [True] and df["compile_s"][0] > 0 and list(df["status"]) == ["ok"]
    assert json.loads((out / "throughput.json").read_text())["meta"]["compiled"] is True


def test_rows_of_failed_compiled_points_say_compiled():
    from gpuprobe.measure.throughput import rows_from_records
    from gpuprobe.render.plots.throughput import series

    rec = {"point": {"batch": 1, "graphs": True, "compile": True}, "status": "failed", "reason": "x", "result": None}
    old = {"point": {"batch": 2, "graphs": True}, "status": "ok", "reason": None,
           "result": {"batch": 2, "mode": "graph", "status": "ok"}}  # a row from before the column existed
    rows = rows_from_records([rec, old])
    assert [(r["batch"], r["compiled"], series(r)) for r in rows] == [(2, False, "graph"), (1, True, "graph+compile")]


def test_compiled_check_body_on_cpu(tiny_dir, tmp_path, monkeypatch):
    """Both steps measured and reported, kernels per step for both (None here: no CUDA profiler), the
    target judged on the better one."""
    from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, all_checks

    assert all_checks()["throughput_b1_compiled"].owner == "engine"
    from gpuprobe.specs.gpus import get_gpu

    checks = engine_checks_on_cpu(monkeypatch, tiny_dir, 1e15)  # floor ~0: the claim fails
    monkeypatch.setattr("gpuprobe.tools.selftest.targets.spec_here", lambda: get_gpu("h200"))  # an H200's target
    ctx = CheckContext(out_dir=tmp_path, gpu=True, budget_s=240)
    with pytest.raises(CheckFailed, match="batch-1 step") as err:
        checks.throughput_b1_compiled(ctx)
    fig = err.value.figures
    assert fig["unfused_step_ms"] > 0 and fig["fused_step_ms"] > 0 and fig["compile_s"] > 0
    assert fig["unfused_kernels_per_step"] is None and fig["fused_kernels_per_step_error"]
    assert fig["best_step_over_floor"] == min(fig["unfused_step_over_floor"], fig["fused_step_over_floor"])
    assert fig["fused_rel_diff_vs_eager"] < 1e-5 and fig["fused_argmax_equals_eager"] is True  # fp32 here
    assert fig["unfused_rel_diff_vs_eager"] == 0
    saved = json.loads((tmp_path / "throughput_b1_compiled.json").read_text())
    assert saved["fused"]["compiled"] is True and saved["unfused"]["compiled"] is False


def test_compiled_check_reports_a_compile_failure(tiny_dir, tmp_path, monkeypatch):
    from gpuprobe.engine.compiled import CompiledStep
    from gpuprobe.tools.selftest.registry import CheckContext

    def broken(self, batch):
        raise RuntimeError("inductor could not compile")

    monkeypatch.setattr(CompiledStep, "warm", broken)
    checks = engine_checks_on_cpu(monkeypatch, tiny_dir, 1.0)  # floor huge: the unfused step alone passes
    fig = checks.throughput_b1_compiled(CheckContext(out_dir=tmp_path, gpu=True, budget_s=240))
    assert fig["best"] == "unfused" and fig["fused_step_ms"] is None
    assert "inductor could not compile" in fig["compile_error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_compiled_check_skips_without_gpu(tmp_path):
    from gpuprobe.tools.selftest.checks.engine import throughput_b1_compiled
    from gpuprobe.tools.selftest.registry import CheckContext, Skip

    with pytest.raises(Skip, match="CUDA"):
        throughput_b1_compiled(CheckContext(out_dir=tmp_path, gpu=False, budget_s=240))


def test_compare_eager_catches_a_lost_kv_write(tiny_dir, monkeypatch):
    """The figure the GPU check judges correctness on moves when the fused step stops writing the cache."""
    from gpuprobe.engine import compiled
    from gpuprobe.engine.attention import TorchPagedAttention
    from gpuprobe.measure.throughput import measure_throughput_point

    real = TorchPagedAttention.write
    monkeypatch.setattr(TorchPagedAttention, "write",
                        lambda self, *a: None if compiled.compiling() else real(self, *a))
    row = measure_throughput_point(str(tiny_dir), batch=1, context=12, attention="torch", dtype="fp32", steps=1,
                                   warmup=0, device="cpu", compile=True, compare_eager=True)
    assert row["eager_rel_diff"] > 1e-3
