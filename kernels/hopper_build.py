"""Compile the kernels of this package for Hopper (sm_90) without a GPU, and read their resources.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` runs the whole Triton and
``ptxas`` pipeline on a CPU machine. From the result this module reads

* **shared memory per block**: ``compiled.metadata.shared`` (bytes; Hopper allows 232,448 = 227 KiB
  of dynamic shared memory per block), and
* **registers and spills**: Triton runs ``ptxas -v`` but drops its log, and only fills ``n_regs`` /
  ``n_spills`` when a driver loads the cubin. So the PTX (``compiled.asm["ptx"]``) is assembled
  again with ``ptxas -v --gpu-name sm_90a`` and the "Used N registers" and "N bytes spill
  stores / loads" lines are parsed.

Arguments are typed the way Triton's JIT specialises a real launch: pointers and strides that
are multiples of 16 carry ``tt.divisibility=16``, and strides equal to 1 (the contiguous head_dim /
row) become the constant 1. Written against Triton 3.9 and kept to APIs that Triton 3.6 (the GPU
node's) also has; version differences are guarded in :func:`_ast_source` and :func:`_ptxas_path`.

Run ``python -m gpuprobe.kernels.hopper_build`` for the table of every knob configuration.

Triton and the kernel modules load inside the builders: a process whose Triton was imported under
``TRITON_INTERPRET=1`` cannot compile, and :func:`build` then runs the builders in a child process.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from .activation_table import ACTIVATIONS
from .common import is_interpreted, next_pow2

#: Largest dynamic shared memory of one block on Hopper (sm_90), in bytes.
HOPPER_MAX_SHARED_BYTES = 232_448
#: Registers per thread Hopper allows.
HOPPER_MAX_REGISTERS = 255

_TL_DTYPES = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}


@dataclass
class BuildResult:
    """Resources of one compiled kernel configuration."""

    kernel: str
    config: dict[str, Any]
    shared_bytes: int | None = None
    registers: int | None = None
    spill_store_bytes: int | None = None
    spill_load_bytes: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.error is None and self.shared_bytes is not None and self.shared_bytes <= HOPPER_MAX_SHARED_BYTES
                and self.spill_store_bytes == 0 and self.spill_load_bytes == 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --------------------------------------------------------------------------------------------------
# Triton plumbing (guarded across versions)
# --------------------------------------------------------------------------------------------------
def interpreting() -> bool:
    """True when ``@triton.jit`` builds interpreted kernels in this process (``TRITON_INTERPRET=1``).

    Such a process cannot compile: even ``triton.language``'s own helpers (``tl.cdiv``, ``tl.max``)
    were built interpreted. :func:`build` then compiles in a child process with the interpreter off.
    """
    from . import paged_attention  # imports Triton, which this module loads only when it compiles

    return is_interpreted(paged_attention.paged_decode_attention_v1_kernel)


def _ast_source(fn, signature: dict[str, str], constexprs: dict[str, Any], divisible: Iterable[str]):
    from triton.compiler import ASTSource

    names = list(fn.arg_names)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible if n in signature}
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def _ptxas_path(arch: int = 90) -> str | None:
    """The ptxas Triton itself uses for ``arch`` (it must accept the PTX version Triton emits)."""
    try:  # Triton >= 3.5: get_ptxas(arch) picks the bundled ptxas for that architecture
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(arch)
        except TypeError:  # older signature: get_ptxas()
            tool = get_ptxas()
        path = getattr(tool, "path", tool)
        if isinstance(path, str) and os.path.exists(path):
            return path
    except Exception:  # noqa: BLE001 - older layouts
        pass
    try:
        import triton

        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        if os.path.exists(bundled):
            return bundled
    except Exception:  # noqa: BLE001
        pass
    return shutil.which("ptxas")


_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> tuple[int | None, int | None, int | None]:
    """(registers, spill store bytes, spill load bytes) from a ``ptxas -v`` log (max over functions)."""
    regs = [int(x) for x in _REGS.findall(log)]
    spills = [(int(a), int(b)) for a, b in _SPILLS.findall(log)]
    return (max(regs) if regs else None,
            max((s for s, _ in spills), default=None) if spills else None,
            max((l for _, l in spills), default=None) if spills else None)


def ptxas_resources(ptx: str, arch: str = "sm_90a") -> tuple[int | None, int | None, int | None, str]:
    """Assemble ``ptx`` with ``ptxas -v`` and return (registers, spill stores, spill loads, log)."""
    ptxas = _ptxas_path()
    if ptxas is None:
        return None, None, None, "ptxas not found"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    return (*parse_ptxas_log(log), log)


def compile_for_hopper(fn, signature: dict[str, str], constexprs: dict[str, Any], divisible: Iterable[str],
                       *, num_warps: int, num_stages: int, config: dict[str, Any]) -> BuildResult:
    """Compile one configuration of ``fn`` for sm_90 and report its shared memory, registers, spills."""
    import triton
    from triton.backends.compiler import GPUTarget

    name = getattr(fn, "__name__", None) or fn.fn.__name__
    res = BuildResult(kernel=name, config=dict(config, num_warps=num_warps, num_stages=num_stages))
    try:
        src = _ast_source(fn, signature, constexprs, divisible)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as e:  # noqa: BLE001 - a failed compile is a result
        res.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return res
    res.shared_bytes = int(getattr(compiled.metadata, "shared", 0))
    ptx = compiled.asm.get("ptx") if hasattr(compiled, "asm") else None
    if ptx is None:
        res.error = "no PTX in the compiled kernel"
        return res
    regs, st, ld, log = ptxas_resources(ptx)
    res.registers, res.spill_store_bytes, res.spill_load_bytes = regs, st, ld
    if st is None:
        res.error = f"could not read spills from ptxas: {log.strip()[:200]}"
    return res


# --------------------------------------------------------------------------------------------------
# The kernels' signatures
# --------------------------------------------------------------------------------------------------
def _attention_common(dtype: str) -> tuple[dict[str, str], list[str]]:
    t = _TL_DTYPES[dtype]
    sig = {"q_ptr": f"*{t}", "k_cache_ptr": f"*{t}", "v_cache_ptr": f"*{t}", "block_table_ptr": "*i32",
           "context_lens_ptr": "*i32", "qk_scale": "fp32", "stride_qb": "i32", "stride_qh": "i32",
           "stride_kp": "i32", "stride_ks": "i32", "stride_kh": "i32", "stride_vp": "i32", "stride_vs": "i32",
           "stride_vh": "i32", "stride_bt": "i32", "max_pages": "i32"}
    divisible = ["q_ptr", "k_cache_ptr", "v_cache_ptr", "block_table_ptr", "context_lens_ptr", "stride_qb",
                 "stride_qh", "stride_kp", "stride_ks", "stride_kh", "stride_vp", "stride_vs", "stride_vh"]
    return sig, divisible


def build_attention(*, dtype: str = "bf16", head_dim: int = 64, group: int = 7, page_size: int = 16,
                    block_kv: int = 64, num_warps: int = 4, num_stages: int = 2,
                    splitk: bool = False, aligned: bool = True) -> BuildResult:
    """Compile the v1 (or split-K) paged attention kernel of one configuration for sm_90.

    ``aligned=False`` drops the divisibility hints (a launch with odd strides or offset views):
    the worst case for registers.
    """
    from . import paged_attention as pa

    fn = pa.paged_decode_attention_splitk_kernel if splitk else pa.paged_decode_attention_v1_kernel
    sig, divisible = _attention_common(dtype)
    if splitk:
        sig = {"part_out_ptr": "*fp32", "part_lse_ptr": "*fp32", **sig}
        divisible += ["part_out_ptr", "part_lse_ptr"]
    else:
        sig = {"out_ptr": f"*{_TL_DTYPES[dtype]}", **sig, "stride_ob": "i32", "stride_oh": "i32"}
        divisible += ["out_ptr", "stride_ob", "stride_oh"]
    constexprs = dict(GROUP=group, GROUP_PAD=max(16, next_pow2(group)), HEAD_DIM=head_dim,
                      D_PAD=max(16, next_pow2(head_dim)), PAGE_SIZE=page_size, BLOCK_KV=block_kv,
                      UPCAST=False, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    config = dict(dtype=dtype, head_dim=head_dim, group=group, page_size=page_size, block_kv=block_kv,
                  splitk=splitk, aligned=aligned)
    return compile_for_hopper(fn, sig, constexprs, divisible if aligned else [], num_warps=num_warps, num_stages=num_stages,
                              config=config)


def build_attention_reduce(*, dtype: str = "bf16", head_dim: int = 64, splits_pad: int = 64) -> BuildResult:
    """Compile the split-K reduce kernel for sm_90."""
    from . import paged_attention as pa

    fn = pa.paged_decode_attention_reduce_kernel
    sig = {"out_ptr": f"*{_TL_DTYPES[dtype]}", "part_out_ptr": "*fp32", "part_lse_ptr": "*fp32",
           "stride_ob": "i32", "stride_oh": "i32", "num_q_heads": "i32", "num_splits": "i32"}
    constexprs = dict(SPLITS_PAD=splits_pad, HEAD_DIM=head_dim, D_PAD=max(16, next_pow2(head_dim)))
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    return compile_for_hopper(fn, sig, constexprs, ["out_ptr", "part_out_ptr", "part_lse_ptr", "stride_ob",
                                                    "stride_oh"],
                              num_warps=4 if head_dim > 64 else 2, num_stages=1,
                              config=dict(dtype=dtype, head_dim=head_dim, splits_pad=splits_pad))


def build_gemm(*, dtype: str = "bf16", block_m: int = 16, block_n: int = 64, block_k: int = 128,
               num_warps: int = 4, num_stages: int = 4, split: bool = False, aligned: bool = True) -> BuildResult:
    """Compile the decode GEMM (row-major x and W) for sm_90; ``split`` writes fp32 partials.

    ``aligned=False`` drops the divisibility hints (shapes not multiples of 16): the worst case.
    """
    from . import gemm

    fn = gemm.decode_gemm_kernel
    t = _TL_DTYPES[dtype]
    sig = {"x_ptr": f"*{t}", "w_ptr": f"*{t}", "y_ptr": "*fp32" if split else f"*{t}", "M": "i32", "N": "i32",
           "K": "i32", "k_per_split": "i32", "stride_xm": "i32", "stride_wk": "i32", "stride_ym": "i32",
           "stride_ys": "i32"}
    constexprs = dict(stride_xk=1, stride_wn=1, stride_yn=1, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                      UPCAST=False, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    divisible = ["x_ptr", "w_ptr", "y_ptr", "N", "K", "k_per_split", "stride_xm", "stride_wk", "stride_ym"]
    return compile_for_hopper(fn, sig, constexprs, divisible if aligned else [], num_warps=num_warps,
                              num_stages=num_stages, config=dict(dtype=dtype, block_m=block_m, block_n=block_n,
                                                                 block_k=block_k, split=split, aligned=aligned))


def build_norm(*, dtype: str = "bf16", hidden: int = 896, kind: str = "rms", residual: bool = True,
               aligned: bool = True) -> BuildResult:
    """Compile the fused residual add + norm for one hidden size at the launcher's block and warps."""
    from . import norm

    fn = norm.fused_add_norm_kernel
    t = _TL_DTYPES[dtype]
    block, warps = norm.norm_launch_config(hidden)
    sig = {"out_ptr": f"*{t}", "x_ptr": f"*{t}", "residual_ptr": f"*{t}", "weight_ptr": f"*{t}", "bias_ptr": f"*{t}",
           "n_cols": "i32", "stride_out": "i32", "stride_x": "i32", "stride_res": "i32", "eps": "fp32"}
    constexprs = dict(HAS_RESIDUAL=residual, STORE_RESIDUAL=residual, HAS_BIAS=kind == "layer",
                      LAYERNORM=kind == "layer", BLOCK=block)
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    divisible = ["out_ptr", "x_ptr", "residual_ptr", "weight_ptr", "bias_ptr", "n_cols", "stride_out", "stride_x",
                 "stride_res"]
    return compile_for_hopper(fn, sig, constexprs, divisible if aligned else [], num_warps=warps, num_stages=1,
                              config=dict(dtype=dtype, hidden=hidden, kind=kind, residual=residual, aligned=aligned))


def build_rotary(*, dtype: str = "bf16", num_q_heads: int = 14, num_kv_heads: int = 2, head_dim: int = 64,
                 rotate: bool = True, aligned: bool = True) -> BuildResult:
    """Compile rotary + KV write for one head shape at the launcher's warps."""
    from . import rotary

    fn = rotary.rotary_kv_write_kernel
    t = _TL_DTYPES[dtype]
    ptrs = ("q_out_ptr", "k_cache_ptr", "v_cache_ptr", "q_ptr", "k_ptr", "v_ptr", "cos_ptr", "sin_ptr")
    ints = ("stride_qn", "stride_qh", "stride_on", "stride_oh", "stride_kn", "stride_kh", "stride_vn", "stride_vh",
            "stride_cos", "stride_sin", "stride_kp", "stride_ks", "stride_kch", "stride_vp", "stride_vs", "stride_vch",
            "page_size")
    sig = {**{p: f"*{t}" for p in ptrs}, "positions_ptr": "*i64", "slot_mapping_ptr": "*i64", **{i: "i32" for i in ints}}
    constexprs = dict(NUM_Q_HEADS=num_q_heads, NUM_KV_HEADS=num_kv_heads, HALF=head_dim // 2,
                      HALF_PAD=next_pow2(head_dim // 2), HQ_PAD=next_pow2(num_q_heads),
                      HKV_PAD=next_pow2(num_kv_heads), ROTATE=rotate)
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    divisible = [*ptrs, "positions_ptr", "slot_mapping_ptr", *ints[:-1]]
    return compile_for_hopper(fn, sig, constexprs, divisible if aligned else [],
                              num_warps=rotary.rotary_launch_warps(num_q_heads, head_dim), num_stages=1,
                              config=dict(dtype=dtype, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads,
                                          head_dim=head_dim, rotate=rotate, aligned=aligned))


def build_activation(*, dtype: str = "bf16", act: str = "silu", gated: bool = True, aligned: bool = True) -> BuildResult:
    """Compile the activation kernel (gated or not) at the launcher's block and warps."""
    from .activation import BLOCK, activation_kernel as fn

    t = _TL_DTYPES[dtype]
    sig = {"out_ptr": f"*{t}", "x_ptr": f"*{t}", "n_cols": "i32", "stride_x": "i32", "stride_out": "i32"}
    sig = {n: sig.get(n, "constexpr") for n in fn.arg_names}
    return compile_for_hopper(fn, sig, dict(ACT=act, GATED=gated, BLOCK=BLOCK),
                              ["out_ptr", "x_ptr", "n_cols", "stride_x", "stride_out"] if aligned else [],
                              num_warps=4, num_stages=1, config=dict(dtype=dtype, act=act, gated=gated, aligned=aligned))


# --------------------------------------------------------------------------------------------------
# Knob grids
# --------------------------------------------------------------------------------------------------
#: Attention knobs swept by the benchmarks (and so compiled here): tokens per tile, warps, stages.
ATTENTION_KNOBS = {"block_kv": (32, 64, 128), "num_warps": (2, 4, 8), "num_stages": (1, 2, 3)}
#: (head_dim, group) pairs of the supported shapes: Qwen2-0.5B 64/7, Qwen2-1.5B 128/6,
#: Llama-3.2-1B 64/4, the odd head dims 80 and 96, and a 16-query group (the widest one-tile group).
ATTENTION_SHAPES = ((64, 7), (128, 6), (64, 4), (80, 8), (96, 2), (128, 16), (64, 1))
GEMM_KNOBS = {"block_m": (16, 32, 64, 128), "block_n": (64, 128), "block_k": (64, 128),
              "num_warps": (4, 8), "num_stages": (2, 3, 4)}


def gemm_shared_estimate(block_m: int, block_n: int, block_k: int, num_stages: int, elt_bytes: int = 2) -> int:
    """Upper estimate of the GEMM's shared memory: ``num_stages`` buffers of an x and a W tile."""
    return num_stages * (block_m * block_k + block_k * block_n) * elt_bytes


def attention_grid(dtypes=("bf16", "fp16")) -> list[dict[str, Any]]:
    """Every attention knob configuration at every supported (head_dim, group), v1 and split-K."""
    return [dict(dtype=dt, head_dim=d, group=g, block_kv=bkv, num_warps=w, num_stages=s, splitk=sk)
            for dt, (d, g), bkv, w, s, sk in itertools.product(
                dtypes, ATTENTION_SHAPES, *ATTENTION_KNOBS.values(), (False, True))]


def gemm_grid(dtypes=("bf16",)) -> list[dict[str, Any]]:
    """GEMM knob configurations whose :func:`gemm_shared_estimate` fits a Hopper block."""
    return [dict(dtype=dt, block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=s, split=sp)
            for dt, bm, bn, bk, w, s, sp in itertools.product(dtypes, *GEMM_KNOBS.values(), (False, True))
            if gemm_shared_estimate(bm, bn, bk, s) <= HOPPER_MAX_SHARED_BYTES]


def quick_attention_grid() -> list[dict[str, Any]]:
    """The launcher defaults (also without alignment hints) and the largest tiles, per head dim and dtype."""
    from .paged_attention import default_block_kv

    return [dict(dtype=dt, head_dim=d, group=g, block_kv=bkv, num_warps=w, num_stages=st, splitk=sk, aligned=al)
            for dt in ("bf16", "fp16") for d, g in ((64, 7), (80, 8), (96, 2), (128, 16))
            for bkv, w, st, al in ((default_block_kv(d), 4, 2, True), (default_block_kv(d), 4, 2, False),
                                   (128, 8, 3, True)) for sk in (False, True)]


def quick_gemm_grid() -> list[dict[str, Any]]:
    """The configurations :func:`gemm.choose_gemm_config` picks (aligned or not), and the largest that fits."""
    from .gemm import choose_gemm_config

    cfgs = {(c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages)
            for c in (choose_gemm_config(m, 896, 896) for m in (1, 32, 64, 256, 1024))}
    out = [dict(dtype="bf16", block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=s, split=sp, aligned=al)
           for bm, bn, bk, w, s in sorted(cfgs) for sp in (False, True) for al in (True, False)]
    out.append(dict(dtype="bf16", block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, split=False,
                    aligned=True))
    return out


#: Hidden sizes of the registry's models (Qwen2-0.5B 896 ... Llama-2-13B 5120) and an odd one, up to an 8192 row.
NORM_HIDDEN = (896, 1539, 2048, 4096, 5120, 8192)
#: (Hq, Hkv, D) of the registry's models: Qwen2-0.5B, Qwen2-1.5B, Llama-3.2-1B, Llama-2-7B/13B (MHA), Phi-3, OPT,
#: SmolLM2-135M (9/3/64), and head dim 80.
ROTARY_SHAPES = ((14, 2, 64), (12, 2, 128), (32, 8, 64), (32, 32, 128), (40, 40, 128), (32, 32, 96), (9, 3, 64),
                 (32, 32, 80))


def fused_jobs(dtypes=("bf16", "fp16", "fp32")) -> list["Job"]:
    """The engine's fused elementwise kernels at every registry shape (aligned, and unaligned for bf16)."""
    jobs: list[Job] = []
    for dt in dtypes:
        aligns = (True, False) if dt == "bf16" else (True,)
        for al in aligns:
            jobs += [("norm", dict(dtype=dt, hidden=h, kind=k, residual=r, aligned=al))
                     for h in NORM_HIDDEN for k in ("rms", "layer") for r in (True, False)
                     if al or h == 1539]
            jobs += [("rotary", dict(dtype=dt, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, rotate=True, aligned=al))
                     for hq, hkv, d in ROTARY_SHAPES]
            jobs += [("rotary", dict(dtype=dt, num_q_heads=32, num_kv_heads=32, head_dim=64, rotate=False, aligned=al))]
            jobs += [("activation", dict(dtype=dt, act=a.function, gated=a.gated, aligned=al))
                     for a in ACTIVATIONS.values()]  # every row of the activation table
    return jobs


#: Job kinds of :func:`build`.
BUILDERS = {"attention": "build_attention", "reduce": "build_attention_reduce", "gemm": "build_gemm",
            "norm": "build_norm", "rotary": "build_rotary", "activation": "build_activation"}

Job = tuple[str, dict[str, Any]]


def build(jobs: list[Job]) -> list[BuildResult]:
    """Compile each ``(kind, config)`` job; in a child process when this one runs interpreted."""
    for kind, _ in jobs:
        if kind not in BUILDERS:
            raise ValueError(f"unknown build kind '{kind}'; use one of {', '.join(BUILDERS)}")
    if not jobs:
        return []
    if not interpreting():
        return [globals()[BUILDERS[kind]](**cfg) for kind, cfg in jobs]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-m", __name__, "--jobs-json", json.dumps(jobs), "--json"],
                          capture_output=True, text=True, env=env)
    results = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            d.pop("ok", None)
            results.append(BuildResult(**d))
    if len(results) != len(jobs):
        raise RuntimeError(f"hopper build child process failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return results


def quick_jobs() -> list[Job]:
    """Defaults (aligned or not), the largest tiles and the reduce: what the test suite compiles."""
    return ([("attention", c) for c in quick_attention_grid()]
            + [("reduce", dict(dtype=dt, head_dim=d)) for dt in ("bf16", "fp16") for d in (64, 80, 96, 128)]
            + [("gemm", c) for c in quick_gemm_grid()]
            + fused_jobs(("bf16",)))


def all_jobs() -> list[Job]:
    """Every knob configuration the benchmarks sweep."""
    return ([("attention", c) for c in attention_grid()]
            + [("reduce", dict(dtype=dt, head_dim=d)) for dt in ("bf16", "fp16") for d in (64, 80, 96, 128)]
            + [("gemm", c) for c in gemm_grid()]
            + fused_jobs())


def main(argv: list[str] | None = None) -> int:
    import argparse

    import triton

    p = argparse.ArgumentParser(description="Compile gpuprobe's Triton kernels for sm_90 on this machine and "
                                            "report shared memory, registers and spills per configuration.")
    p.add_argument("--quick", action="store_true", help="defaults and largest tiles only")
    p.add_argument("--json", action="store_true", help="one JSON object per configuration")
    p.add_argument("--jobs-json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    jobs = [tuple(j) for j in json.loads(args.jobs_json)] if args.jobs_json else (
        quick_jobs() if args.quick else all_jobs())
    results = build(jobs)
    bad = [r for r in results if not r.ok]
    if args.json:
        for r in results:
            print(json.dumps(r.to_dict()))
    else:
        print(f"triton {triton.__version__}, target sm_90, limit {HOPPER_MAX_SHARED_BYTES} B shared / block")
        print(f"{'kernel':38} {'smem B':>8} {'regs':>5} {'spill st/ld':>12}  config")
        for r in results:
            cfg = " ".join(f"{k}={v}" for k, v in r.config.items())
            spill = f"{r.spill_store_bytes}/{r.spill_load_bytes}"
            flag = "" if r.ok else f"  <-- {r.error or 'over the shared-memory limit or spills'}"
            print(f"{r.kernel:38} {r.shared_bytes!s:>8} {r.registers!s:>5} {spill:>12}  {cfg}{flag}")
        print(f"{len(results)} configurations, {len(bad)} failing")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
