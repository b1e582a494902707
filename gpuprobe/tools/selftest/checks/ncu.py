"""Nsight Compute checks of ``gpuprobe selftest --gpu``: counters readable, counter FLOPs exact on a
GEMM, the CSV and .ncu-rep readers agree on one report, and a torch program profiles end to end.

Counter permission is probed once per run (:mod:`gpuprobe.tools.selftest.counters`); where the node
refuses counters (``ERR_NVGPUCTRPERM``, ``LibraryNotLoaded``) or has no ncu, every check here is
skipped with that reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpuprobe.errors import GpuprobeError
from gpuprobe.ncu import load_ncu_report
from gpuprobe.ncu.ncu_report_loader import origin
from gpuprobe.ncu.runner import run_ncu
from gpuprobe.tools.selftest.counters import FAILING, counter_probe
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda

#: Plain bf16 GEMMs, tile-aligned (multiples of 128), each inside its own NVTX range ``gemm_MxNxK``.
GEMM_SHAPES = ((1024, 1024, 1024), (256, 4096, 2048), (2048, 512, 4096))

GEMM_PROGRAM = '''\
import torch
nv = torch.cuda.nvtx
shapes = {shapes!r}
for m, n, k in shapes:
    a = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(k, n, dtype=torch.bfloat16, device="cuda")
    (a @ b).sum().item()  # warm-up: cuBLAS picks and loads its kernel outside the range
    nv.range_push(f"gemm_{{m}}x{{n}}x{{k}}")
    c = a @ b
    nv.range_pop()
torch.cuda.synchronize()
print("done")
'''

#: Two decoder layers of Qwen2-0.5B shape (hidden 896, 14/2 heads of 64, MLP 4864), dense KV cache,
#: NVTX ranges decode/ > layer{i}/ > qkv_proj|attention|o_proj|gate_up_proj|act|down_proj/.
DECODE_PROGRAM = '''\
import sys, torch
import torch.nn.functional as F
H, NH, NKV, HD, I = 896, 14, 2, 64, 4864
B, CTX = int(sys.argv[1]), int(sys.argv[2])
dt, dev = torch.bfloat16, "cuda"
nv = torch.cuda.nvtx
x = torch.randn(B, H, dtype=dt, device=dev)
W = [dict(qkv=torch.randn(H, (NH + 2 * NKV) * HD, dtype=dt, device=dev) * 0.02,
          o=torch.randn(NH * HD, H, dtype=dt, device=dev) * 0.02,
          gu=torch.randn(H, 2 * I, dtype=dt, device=dev) * 0.02,
          d=torch.randn(I, H, dtype=dt, device=dev) * 0.02) for _ in range(2)]
kc = [torch.randn(B, NKV, CTX, HD, dtype=dt, device=dev) for _ in range(2)]
vc = [torch.randn(B, NKV, CTX, HD, dtype=dt, device=dev) for _ in range(2)]
def step():
    h = x
    for i, l in enumerate(W):
        nv.range_push(f"layer{i}")
        nv.range_push("qkv_proj"); qkv = h @ l["qkv"]; nv.range_pop()
        nv.range_push("attention")
        q = qkv[:, :NH * HD].reshape(B, NH, 1, HD)
        a = F.scaled_dot_product_attention(q, kc[i], vc[i], enable_gqa=True)
        nv.range_pop()
        nv.range_push("o_proj"); h = h + a.reshape(B, NH * HD) @ l["o"]; nv.range_pop()
        nv.range_push("gate_up_proj"); g, u = (h @ l["gu"]).chunk(2, -1); nv.range_pop()
        nv.range_push("act"); m = F.silu(g) * u; nv.range_pop()
        nv.range_push("down_proj"); h = h + m @ l["d"]; nv.range_pop()
        nv.range_pop()
    return h
step(); torch.cuda.synchronize()
nv.range_push("decode"); step(); nv.range_pop()
torch.cuda.synchronize()
print("done")
'''


def _need_gpu_and_ncu(ctx: CheckContext):
    """The ncu install, once CUDA is here and this run's counter probe said counters are readable."""
    from gpuprobe.ncu.runner import find_ncu

    require_cuda()
    inst = find_ncu()
    if inst is None:
        raise Skip("ncu is not installed")
    probe = counter_probe(ctx, timeout_s=max(10.0, min(60.0, ctx.budget_s / 3)))
    if not probe.usable:
        raise Skip(probe.skip_reason())
    return inst


def _write(ctx: CheckContext, name: str, text: str) -> Path:
    p = ctx.out_dir / name
    p.write_text(text)
    return p


@check("ncu_counter_permission", owner="ncu", gpu=True, budget_s=60, estimate_s=5)
def ncu_counter_permission(ctx: CheckContext) -> dict:
    """ncu is found and this user can read the GPU performance counters (the doctor's probe of this run)."""
    require_cuda()
    probe = counter_probe(ctx, timeout_s=max(10.0, ctx.budget_s - 5))
    ctx.log(f"{probe.status} ({probe.source}): {probe.message}")
    figures = {"status": probe.status, "source": probe.source, "probe_s": probe.seconds}
    if probe.status == FAILING:
        raise CheckFailed(probe.message.strip().splitlines()[0] if probe.message.strip() else "probe failed",
                          figures)
    if not probe.usable:
        raise Skip(probe.skip_reason())
    return figures


@check("gemm_counter_flops", owner="ncu", gpu=True, budget_s=60, estimate_s=25)
def gemm_counter_flops(ctx: CheckContext) -> dict:
    """Counter FLOPs (sm__ops_path_tensor_src_*) of plain bf16 GEMMs equal 2MNK within 2% (tile-aligned shapes)."""

    inst = _need_gpu_and_ncu(ctx)
    script = _write(ctx, "gemm_target.py", GEMM_PROGRAM.format(shapes=GEMM_SHAPES))
    include = [f"gemm_{m}x{n}x{k}/" for m, n, k in GEMM_SHAPES]
    res = run_ncu([sys.executable, str(script)], ctx.out_dir / "gemm.ncu-rep", nvtx_include=include,
                  timeout_s=max(10.0, ctx.budget_s - 10), ncu=inst, diagnose=False)
    df = load_ncu_report(res.report)
    figures: dict = {"kernels": len(df), "ncu_s": round(res.seconds, 1), "reader": df.attrs.get("reader")}
    worst = 0.0
    for m, n, k in GEMM_SHAPES:
        rng = f"gemm_{m}x{n}x{k}"
        rows = df[[rng in s for s in df["nvtx_stack"]]]
        counted = float(rows["flops_tensor"].sum())
        ratio = counted / (2.0 * m * n * k)
        figures[f"{rng}_ratio"] = round(ratio, 5)
        figures[f"{rng}_kernels"] = ", ".join(rows["kernel_short"])
        worst = max(worst, abs(ratio - 1.0))
    figures["worst_abs_error"] = round(worst, 5)
    ctx.log(str(figures))
    if worst > 0.02:
        raise CheckFailed(f"tensor counter FLOPs differ from 2MNK by {worst:.1%}", figures)
    return figures


@check("csv_vs_rep_pair", owner="ncu", gpu=True, budget_s=75, estimate_s=30)
def csv_vs_rep_pair(ctx: CheckContext) -> dict:
    """One report read as .ncu-rep and as `ncu --import --csv` (base and display units) gives the same table."""
    from gpuprobe.ncu.compare import compare_tables
    from gpuprobe.ncu.readers import read_csv, read_ncu_rep

    inst = _need_gpu_and_ncu(ctx)
    module = origin()  # the PyPI package, or extras/python/ncu_report.py of the Nsight Compute install
    ctx.log(f"ncu_report: {module or 'none loads'}")
    if module is None:
        raise CheckFailed("no ncu_report module loads here (neither `import ncu_report` nor extras/python/"
                          "ncu_report.py beside ncu): .ncu-rep files are read only through `ncu --import` CSV",
                          {"ncu": str(inst.path)})
    script = _write(ctx, "pair_target.py", DECODE_PROGRAM)
    res = run_ncu([sys.executable, str(script), "8", "256"], ctx.out_dir / "pair.ncu-rep",
                  nvtx_include=["decode/layer0/"], timeout_s=max(10.0, ctx.budget_s - 25), ncu=inst,
                  diagnose=False)
    out = {}
    for units, args in (("base", ["--print-units", "base"]), ("display", [])):
        r = subprocess.run([str(inst.path), "--import", str(res.report), "--csv", "--page", "raw", *args],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise CheckFailed(f"ncu --import failed (exit {r.returncode}): {r.stderr[-500:]}")
        path = ctx.out_dir / f"pair_raw_{units}units.csv"
        path.write_text(r.stdout)
        out[units] = read_csv(path)
    try:
        rep = read_ncu_rep(res.report)  # no CSV fallback here: this compares the module with the CSV
    except GpuprobeError as e:
        raise CheckFailed(f"ncu_report ({module}) cannot read the report: {e}") from None
    figures: dict = {"kernels": len(rep), "ncu_report": module, "ncu_s": round(res.seconds, 1)}
    failed = []
    for units, df in out.items():
        # CSV prints rates with two decimals and display units with six digits: compare at that precision
        cmp = compare_tables(rep, df, rtol=1e-5 if units == "base" else 1e-4, atol=0.01)
        figures[f"{units}_metrics_compared"] = cmp.metrics_compared
        figures[f"{units}_mismatches"] = len(cmp.mismatches)
        figures[f"{units}_max_rel_diff"] = cmp.max_rel_diff
        if not cmp.ok:
            failed.append(f"{units}: kernels {cmp.same_kernels}, stacks {cmp.same_stacks}, first mismatches "
                          f"{cmp.mismatches[:3]}")
    ctx.log(str(figures))
    if failed:
        raise CheckFailed("; ".join(failed), figures)
    return figures


@check("profile_torch_program", owner="ncu", gpu=True, budget_s=90, estimate_s=35)
def profile_torch_program(ctx: CheckContext) -> dict:
    """`gpuprobe profile` on a 2-layer Qwen2-0.5B-shaped torch decode step: ops attributed, qkv FLOPs = 2MNK,
    attention DRAM reads within 3% of the KV bytes."""
    from gpuprobe.ncu.counter_roofline import kernel_table, op_table

    _need_gpu_and_ncu(ctx)
    script = _write(ctx, "decode_target.py", DECODE_PROGRAM)
    b, c = 64, 1024
    try:
        r = subprocess.run([sys.executable, "-m", "gpuprobe", "profile", "--out", str(ctx.out_dir), "--name", "decode",
                            "--nvtx-include", "decode/layer0/", "--timeout", str(int(max(10, ctx.budget_s - 20))),
                            "--", sys.executable, str(script), str(b), str(c)],
                           capture_output=True, text=True, timeout=max(15.0, ctx.budget_s - 5))
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"gpuprobe profile ran past {e.timeout:.0f} s") from None
    (ctx.out_dir / "profile_stdout.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise CheckFailed(f"gpuprobe profile exited {r.returncode}: {(r.stderr or r.stdout)[-800:]}")

    df = load_ncu_report(ctx.out_dir / "decode.ncu-rep")
    ops = op_table(kernel_table(df)).set_index("op")
    want = {"qkv_proj", "attention", "o_proj", "gate_up_proj", "act", "down_proj"}
    kv_bytes = 2 * b * 2 * c * 64 * 2  # K and V, batch, kv heads, context, head dim, bf16
    qkv_flops = 2 * b * 896 * (14 + 4) * 64
    figures = {
        "kernels": len(df), "ops": sorted(ops.index),
        "attention_read_ratio": float(ops.loc["attention", "dram_read_bytes"] / kv_bytes) if "attention" in ops.index else None,
        "qkv_flops_ratio": float(ops.loc["qkv_proj", "flops_tensor"] / qkv_flops) if "qkv_proj" in ops.index else None,
    }
    ctx.log(str(figures))
    problems = []
    if not want <= set(ops.index):
        problems.append(f"ops missing: {sorted(want - set(ops.index))}")
    if figures["attention_read_ratio"] is None or abs(figures["attention_read_ratio"] - 1) > 0.03:
        problems.append(f"attention reads / KV bytes = {figures['attention_read_ratio']}")
    if figures["qkv_flops_ratio"] is None or abs(figures["qkv_flops_ratio"] - 1) > 0.02:
        problems.append(f"qkv_proj counter FLOPs / 2MNK = {figures['qkv_flops_ratio']}")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
