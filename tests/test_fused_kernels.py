"""The engine's fused elementwise kernels in Triton's interpreter against float64 references.

Fresh random inputs (the seed is in every failure message), odd hidden sizes, head dims 64/80/128,
batch 1 and 33, bf16/fp16/fp32; outputs are filled with NaN first so an element the kernel does not
write fails; cache slots outside the slot mapping must keep their (random) contents bit for bit.
"""
from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton")

from gpuprobe.kernels.activation import activation_reference, fused_activation  # noqa: E402
from gpuprobe.kernels.norm import add_norm_bytes, add_norm_reference, fused_add_norm  # noqa: E402
from gpuprobe.kernels.rotary import rotary_bytes, rotary_kv_write, rotate_reference  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: (rtol, atol) of a result rounded to the dtype once or twice, against float64.
TOL = {"bf16": (2e-2, 2e-2), "fp16": (3e-3, 3e-3), "fp32": (2e-5, 2e-5)}


def _seed() -> int:
    return random.SystemRandom().randrange(2**31)


def _randn(g: torch.Generator, *shape, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _close(got: torch.Tensor, want: torch.Tensor, dtype: str, seed: int, what: str) -> None:
    rtol, atol = TOL[dtype]
    assert not torch.isnan(got).any(), f"{what}: unwritten (NaN) elements (seed {seed})"
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what} (seed {seed}): {m}")


# ---- residual add + norm ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("rows,hidden", [(1, 896), (33, 1000), (33, 1539), (1, 64)])
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_add_norm_matches_float64(dtype, rows, hidden, kind):
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    wide = _randn(g, rows, hidden + 24, scale=2.0, dtype=dt)
    x = wide[:, :hidden]  # a row stride that is not the width
    res = _randn(g, rows, hidden, dtype=dt)
    res_before = res.clone()
    w = _randn(g, hidden, scale=0.3, dtype=dt) + 1
    b = _randn(g, hidden, scale=0.1, dtype=dt) if kind == "layer" else None
    out = torch.full((rows, hidden), float("nan"), dtype=dt)
    ref, ref_res = add_norm_reference(x, w, 1e-6, residual=res_before, bias=b, kind=kind)
    assert fused_add_norm(x, w, 1e-6, residual=res, bias=b, kind=kind, out=out) is out
    _close(out, ref, dtype, seed, "out")
    _close(res, ref_res, dtype, seed, "residual (written in place)")
    # the stored residual is exactly the sum rounded to the dtype, as the unfused `x + o` gives (not
    # for bf16 here: the interpreter converts fp32 to bf16 by truncation, a GPU rounds to nearest)
    if dtype != "bf16":
        assert torch.equal(res, (x.double() + res_before.double()).to(dt)), f"residual rounding (seed {seed})"


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_without_residual_and_final_norm(dtype, kind):
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    x, res = _randn(g, 33, 1000, dtype=dt), _randn(g, 33, 1000, dtype=dt)
    w = _randn(g, 1000, scale=0.3, dtype=dt) + 1
    b = _randn(g, 1000, scale=0.1, dtype=dt) if kind == "layer" else None
    out = torch.full_like(x, float("nan"))
    fused_add_norm(x, w, 1e-5, bias=b, kind=kind, out=out)  # the first layer: no residual yet
    _close(out, add_norm_reference(x, w, 1e-5, bias=b, kind=kind)[0], dtype, seed, "plain norm")
    before = res.clone()
    out2 = fused_add_norm(x, w, 1e-5, residual=res, bias=b, kind=kind, store_residual=False)  # final norm
    _close(out2, add_norm_reference(x, w, 1e-5, residual=before, bias=b, kind=kind)[0], dtype, seed, "final norm")
    assert torch.equal(res, before), "store_residual=False must leave the residual alone"


def test_add_norm_bad_inputs_and_bytes():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="kind"):
        fused_add_norm(x, torch.ones(8), 1e-6, kind="batch")
    with pytest.raises(ValueError, match="RMSNorm has no bias"):
        fused_add_norm(x, torch.ones(8), 1e-6, bias=torch.ones(8))
    with pytest.raises(ValueError, match="residual"):
        fused_add_norm(x, torch.ones(8), 1e-6, residual=torch.randn(2, 8, dtype=torch.float16))
    # by hand: x and residual read, out and residual written (2 rows x 896 x 2 B each), weight 896 x 2 B
    assert add_norm_bytes(2, 896, 2) == 4 * 2 * 896 * 2 + 896 * 2
    assert add_norm_bytes(2, 896, 2, residual=False) == 2 * 2 * 896 * 2 + 896 * 2


# ---- activation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("rows,cols", [(1, 4864), (33, 1539), (33, 896)])
@pytest.mark.parametrize("act,gated", [("silu", True), ("relu", False), ("gelu", False), ("gelu_tanh", True)])
def test_activation_matches_float64(dtype, rows, cols, act, gated):
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    width = cols * (2 if gated else 1)
    x = _randn(g, rows, width + 16, scale=2.0, dtype=dt)[:, :width]  # a slice: row stride != width
    out = torch.full((rows, cols), float("nan"), dtype=dt)
    assert fused_activation(x, act, gated=gated, out=out) is out
    _close(out, activation_reference(x, act, gated=gated), dtype, seed, f"{act} gated={gated}")


def test_activation_bad_inputs():
    with pytest.raises(ValueError, match="even width"):
        fused_activation(torch.randn(2, 7), "silu", gated=True)
    with pytest.raises(ValueError, match="act must be"):
        fused_activation(torch.randn(2, 8), "tanh")


# ---- rotary + KV write ---------------------------------------------------------------------------------
def _rotary_case(g, tokens, hq, hkv, d, dtype, page_size=16, padded=0):
    """A fused qkv output and its q/k/v views, positions, cos/sin tables, a random cache and slots."""
    qkv = _randn(g, tokens, (hq + 2 * hkv) * d, dtype=dtype)
    q, k, v = qkv.split((hq * d, hkv * d, hkv * d), dim=-1)
    q, k, v = (t.view(tokens, -1, d) for t in (q, k, v))
    max_pos = 3000
    positions = torch.randint(0, max_pos, (tokens,), generator=g)
    inv = torch.rand(d // 2, generator=g, dtype=torch.float64)
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat((ang.cos(), ang.cos()), dim=-1).to(dtype)
    sin = torch.cat((ang.sin(), ang.sin()), dim=-1).to(dtype)
    pages = tokens // page_size + 3
    kc = _randn(g, pages, page_size, hkv, d, dtype=dtype)
    vc = _randn(g, pages, page_size, hkv, d, dtype=dtype)
    slots = torch.randperm(pages * page_size, generator=g)[:tokens]
    if padded:
        slots[torch.randperm(tokens, generator=g)[:padded]] = -1
    return q, k, v, positions, cos, sin, kc, vc, slots


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("tokens", [1, 33])
@pytest.mark.parametrize("hq,hkv,d", [(14, 2, 64), (8, 8, 80), (12, 2, 128), (40, 8, 128)])
def test_rotary_kv_write_matches_float64(dtype, tokens, hq, hkv, d):
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    q, k, v, pos, cos, sin, kc, vc, slots = _rotary_case(g, tokens, hq, hkv, d, dt, padded=3 if tokens > 1 else 0)
    kc0, vc0 = kc.clone(), vc.clone()
    q_out = torch.full((tokens, hq, d), float("nan"), dtype=dt)
    assert rotary_kv_write(q, k, v, kc, vc, slots, pos, cos, sin, q_out=q_out) is q_out
    _close(q_out, rotate_reference(q, cos, sin, pos), dtype, seed, "q")
    real = slots >= 0
    flat_k, flat_v = kc.view(-1, hkv, d), vc.view(-1, hkv, d)
    _close(flat_k[slots[real]], rotate_reference(k, cos, sin, pos)[real], dtype, seed, "k in the cache")
    assert torch.equal(flat_v[slots[real]], v[real]), f"v must be copied exactly (seed {seed})"
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool)
    untouched[slots[real]] = False
    assert torch.equal(flat_k[untouched], kc0.view(-1, hkv, d)[untouched]), f"K slots outside the mapping (seed {seed})"
    assert torch.equal(flat_v[untouched], vc0.view(-1, hkv, d)[untouched]), f"V slots outside the mapping (seed {seed})"


@pytest.mark.parametrize("page_size", [8, 16])
def test_kv_write_without_rotation(page_size):
    """OPT: no RoPE; k and v go into the cache unchanged, q is returned as it is."""
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    q, k, v, _, _, _, kc, vc, slots = _rotary_case(g, 33, 4, 4, 64, torch.bfloat16, page_size=page_size)
    kc0 = kc.clone()
    assert rotary_kv_write(q, k, v, kc, vc, slots) is q
    assert torch.equal(kc.view(-1, 4, 64)[slots], k) and torch.equal(vc.view(-1, 4, 64)[slots], v), f"seed {seed}"
    others = torch.ones(kc.shape[0] * page_size, dtype=torch.bool)
    others[slots] = False
    assert torch.equal(kc.view(-1, 4, 64)[others], kc0.view(-1, 4, 64)[others])


def test_dense_cache_through_a_transposed_view():
    """A dense ``[B, Hkv, L, D]`` cache written through its ``[B, L, Hkv, D]`` view, slot ``b * L + pos``."""
    seed = _seed()
    g = torch.Generator().manual_seed(seed)
    b, hq, hkv, d, length = 5, 8, 2, 80, 37
    q, k, v, pos, cos, sin, _, _, _ = _rotary_case(g, b, hq, hkv, d, torch.float32)
    pos = torch.randint(0, length, (b,), generator=g)
    dense = _randn(g, 2, b, hkv, length, d)
    before = dense.clone()
    slots = torch.arange(b) * length + pos
    rotary_kv_write(q, k, v, dense[0].transpose(1, 2), dense[1].transpose(1, 2), slots, pos, cos, sin)
    rows = torch.arange(b)
    _close(dense[0][rows, :, pos], rotate_reference(k, cos, sin, pos), "fp32", seed, "dense K")
    assert torch.equal(dense[1][rows, :, pos], v)
    before[0][rows, :, pos] = dense[0][rows, :, pos]
    before[1][rows, :, pos] = v
    assert torch.equal(dense, before), "only the new tokens' rows may change"


def test_rotary_bad_inputs_and_bytes():
    q, k = torch.randn(2, 4, 64), torch.randn(2, 2, 64)
    cache = torch.zeros(4, 16, 2, 64)
    slots = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="cos and sin"):
        rotary_kv_write(q, k, k, cache, cache, slots, positions=slots)
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        rotary_kv_write(q, k, k, cache, cache, slots.int())
    with pytest.raises(ValueError, match="even"):
        rotary_kv_write(torch.randn(2, 4, 63), torch.randn(2, 2, 63), torch.randn(2, 2, 63),
                        torch.zeros(4, 16, 2, 63), torch.zeros(4, 16, 2, 63), slots)
    # by hand, Qwen2-0.5B heads (14/2/64) at B=1, bf16: q,k,v read 18x64x2, q,k,v written 18x64x2,
    # half cos + half sin rows 64x2, position and slot 8 + 8
    assert rotary_bytes(1, 14, 2, 64, 2) == 2 * 18 * 64 * 2 + 64 * 2 + 16
    assert rotary_bytes(1, 4, 4, 64, 2, rotate=False) == 2 * 2 * 4 * 64 * 2 + 8


def test_launchers_do_not_launch_on_meta():
    """Shapes only on the meta device (the engine plans large configurations there)."""
    meta = dict(device="meta", dtype=torch.bfloat16)
    x = torch.empty(512, 3584, **meta)
    assert fused_add_norm(x, torch.empty(3584, **meta), 1e-6, residual=torch.empty_like(x)).device.type == "meta"
    assert fused_activation(torch.empty(512, 2 * 18944, **meta)).shape == (512, 18944)
    q, k = torch.empty(512, 28, 128, **meta), torch.empty(512, 4, 128, **meta)
    cache = torch.empty(100, 16, 4, 128, **meta)
    ids = torch.empty(512, dtype=torch.int64, device="meta")
    out = rotary_kv_write(q, k, k, cache, cache, ids, ids, torch.empty(4096, 128, **meta), torch.empty(4096, 128, **meta))
    assert out.shape == q.shape and out.device.type == "meta"


# ---- compiled on a GPU ----------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_kernels_on_gpu_match_float64():
    """The same checks with the compiled kernels, bf16, at Llama-2-13B and Qwen2-0.5B sizes."""
    from gpuprobe.kernels.activation import check_activation
    from gpuprobe.kernels.norm import check_add_norm
    from gpuprobe.kernels.rotary import check_rotary_kv_write

    for rows, hidden, kind in ((1, 896, "rms"), (33, 5120, "rms"), (33, 2048, "layer")):
        err = check_add_norm(rows, hidden, torch.bfloat16, kind=kind, device="cuda")
        assert err["out_max_abs_err"] < 0.1 and err["residual_max_abs_err"] < 0.05, (rows, hidden, kind, err)
    for act, gated in (("silu", True), ("relu", False), ("gelu_tanh", True)):
        assert check_activation(33, 13824, torch.bfloat16, act=act, gated=gated, device="cuda") < 1.0  # |y| < 128
    for hq, hkv, d in ((14, 2, 64), (40, 40, 128), (32, 32, 96)):
        err = check_rotary_kv_write(33, hq, hkv, d, torch.bfloat16, device="cuda")
        assert max(err.values()) < 0.05 and err["v_max_abs_err"] == 0.0, (hq, hkv, d, err)
