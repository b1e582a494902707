"""The Triton kernels compile for Hopper (sm_90) on this CPU machine, fit shared memory, and do not spill.

Compiles the launchers' default configurations (with and without alignment hints), the largest
tiles, and the split-K reduce, through ``triton.compile(ASTSource(...), GPUTarget("cuda", 90, 32))``
and ``ptxas -v``. The whole knob grid: ``python -m gpuprobe.kernels.hopper_build``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("triton")

from gpuprobe.kernels import hopper_build as hb  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "kernels"

needs_ptxas = pytest.mark.skipif(hb._ptxas_path() is None, reason="no ptxas (Triton's bundled one or on PATH)")


def test_parse_ptxas_log_clean():
    regs, st, ld = hb.parse_ptxas_log((FIXTURES / "ptxas_v_sm90_clean.log").read_text())
    assert (regs, st, ld) == (56, 0, 0)


def test_parse_ptxas_log_spills():
    regs, st, ld = hb.parse_ptxas_log((FIXTURES / "ptxas_v_sm90_spills.log").read_text())
    assert (regs, st, ld) == (255, 84, 76)
    assert hb.parse_ptxas_log("no such lines") == (None, None, None)


def test_build_result_ok_rule():
    good = hb.BuildResult("k", {}, shared_bytes=hb.HOPPER_MAX_SHARED_BYTES, registers=64, spill_store_bytes=0,
                          spill_load_bytes=0)
    assert good.ok
    assert not hb.BuildResult("k", {}, shared_bytes=hb.HOPPER_MAX_SHARED_BYTES + 1, spill_store_bytes=0,
                              spill_load_bytes=0).ok
    assert not hb.BuildResult("k", {}, shared_bytes=1024, spill_store_bytes=4, spill_load_bytes=0).ok
    assert not hb.BuildResult("k", {}, shared_bytes=1024, spill_store_bytes=None, spill_load_bytes=None).ok


def test_gemm_grid_respects_shared_estimate():
    grid = hb.gemm_grid()
    assert grid and all(hb.gemm_shared_estimate(c["block_m"], c["block_n"], c["block_k"], c["num_stages"])
                        <= hb.HOPPER_MAX_SHARED_BYTES for c in grid)
    assert len(hb.attention_grid()) == 2 * len(hb.ATTENTION_SHAPES) * 27 * 2


def _fmt(r: hb.BuildResult) -> str:
    return (f"{r.kernel} {r.config}: shared {r.shared_bytes} B, {r.registers} regs, "
            f"spills {r.spill_store_bytes}/{r.spill_load_bytes}, error {r.error}")


OVER_LIMIT = dict(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=4)  # 256 KiB of tiles


@pytest.fixture(scope="module")
def built() -> list[hb.BuildResult]:
    """bf16 attention defaults and largest tiles, the reduce, the GEMM configs: compiled once for sm_90."""
    def wanted(kind, cfg):  # bf16 only (fp16 takes the same code path); unaligned variants unsplit only
        return cfg.get("dtype") == "bf16" and (cfg.get("aligned", True) or not (cfg.get("splitk") or cfg.get("split")))

    jobs = [j for j in hb.quick_jobs() if wanted(*j)]
    jobs.append(("gemm", dict(dtype="bf16", **OVER_LIMIT)))
    results = hb.build(jobs)
    assert len(results) == len(jobs)
    return results


@needs_ptxas
def test_attention_configs_fit_hopper(built):
    att = [r for r in built if r.kernel.startswith("paged_decode_attention")]
    kinds = {r.kernel for r in att}
    assert kinds == {"paged_decode_attention_v1_kernel", "paged_decode_attention_splitk_kernel",
                     "paged_decode_attention_reduce_kernel"}
    assert {r.config["head_dim"] for r in att} == {64, 80, 96, 128}
    bad = [_fmt(r) for r in att if not r.ok]
    assert not bad, "\n".join(bad)
    assert all(0 < r.shared_bytes <= hb.HOPPER_MAX_SHARED_BYTES and r.registers <= hb.HOPPER_MAX_REGISTERS
               for r in att)


@needs_ptxas
def test_gemm_configs_fit_hopper(built):
    gemm = [r for r in built[:-1] if r.kernel == "decode_gemm_kernel"]
    assert gemm
    bad = [_fmt(r) for r in gemm if not r.ok]
    assert not bad, "\n".join(bad)


@needs_ptxas
def test_over_limit_config_is_reported(built):
    r = built[-1]
    assert r.config["num_stages"] == 4 and r.config["block_k"] == 128
    assert r.error is None and r.shared_bytes > hb.HOPPER_MAX_SHARED_BYTES and not r.ok


def test_build_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown build kind"):
        hb.build([("conv", {})])


@needs_ptxas
def test_fused_elementwise_kernels_fit_hopper(built):
    """Fused add+norm, rotary + KV write and activation at every registry shape, aligned and not: no spills."""
    fused = [r for r in built if r.kernel in ("fused_add_norm_kernel", "rotary_kv_write_kernel", "activation_kernel")]
    assert {r.kernel for r in fused} == {"fused_add_norm_kernel", "rotary_kv_write_kernel", "activation_kernel"}
    assert {r.config["hidden"] for r in fused if "hidden" in r.config} == set(hb.NORM_HIDDEN)
    assert any(not r.config["aligned"] for r in fused)
    bad = [_fmt(r) for r in fused if not r.ok]
    assert not bad, "\n".join(bad)
