"""Nsight Systems checks of ``gpuprobe selftest --gpu`` (where nsys is installed): ``gpuprobe profile
--nsys`` attributes a torch decode step's kernels to its NVTX ops, and ``gpuprobe roofline --mode nsys``
measures the engine's graph-replayed steps with every graph kernel aligned to an op."""
from __future__ import annotations

import json
import subprocess
import sys

from gpuprobe.nsys import load_trace
from gpuprobe.nsys.runner import find_nsys
from gpuprobe.tools.selftest.checks.ncu import DECODE_PROGRAM
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip, check, require_cuda


def _need_gpu_and_nsys() -> None:
    require_cuda()
    if find_nsys() is None:
        raise Skip("nsys is not installed")


def _gpuprobe(ctx: CheckContext, args: list[str], margin_s: float = 5.0) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run([sys.executable, "-m", "gpuprobe", *args], capture_output=True, text=True,
                           timeout=max(15.0, ctx.budget_s - margin_s))
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"gpuprobe {args[0]} ran past {e.timeout:.0f} s") from None
    (ctx.out_dir / f"{args[0]}_output.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise CheckFailed(f"gpuprobe {args[0]} exited {r.returncode}: {(r.stderr or r.stdout)[-800:]}")
    return r


@check("profile_nsys", owner="nsys", gpu=True, budget_s=120)
def profile_nsys(ctx: CheckContext) -> dict:
    """`gpuprobe profile --nsys` on a 2-layer Qwen2-0.5B-shaped torch decode step: every op of both layers
    named from NVTX at launch time, one decode step found, kernel time inside it."""

    _need_gpu_and_nsys()
    script = ctx.out_dir / "decode_target.py"
    script.write_text(DECODE_PROGRAM)
    _gpuprobe(ctx, ["profile", "--nsys", "--out", str(ctx.out_dir), "--name", "decode",
                    "--timeout", str(int(max(10, ctx.budget_s - 30))), "--", sys.executable, str(script), "64", "1024"])
    tr = load_trace(ctx.out_dir / "decode.sqlite")
    st = tr.steps()
    want = {"qkv_proj", "attention", "o_proj", "gate_up_proj", "act", "down_proj"}
    in_step = tr.labelled()
    in_step = in_step[in_step["step"].notna()]
    figures = {"kernels": len(tr.kernels), "nsys_version": tr.kernels.attrs.get("nsys_version"),
               "steps": st.summary["n_steps"], "kernels_in_step": len(in_step),
               "ops": sorted(st.op_median_s), "layers": sorted({int(x) for x in in_step["layer"].dropna()}),
               "step_kernel_time_us": round(st.summary["kernel_time_s_median"] * 1e6, 2),
               "step_idle_us": round(st.summary["idle_s_median"] * 1e6, 2)}
    ctx.log(str(figures))
    problems = []
    if st.summary["n_steps"] != 1:
        problems.append(f"{st.summary['n_steps']} decode steps found, 1 expected")
    if not want <= set(st.op_median_s):
        problems.append(f"ops missing: {sorted(want - set(st.op_median_s))}")
    if figures["layers"] != [0, 1]:
        problems.append(f"layers {figures['layers']}")
    if (in_step["op_source"] != "nvtx").any():
        problems.append("kernels of the step not named by their NVTX op: "
                        + ", ".join(sorted(set(in_step[in_step["op_source"] != "nvtx"]["kernel_short"])))[:300])
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures


@check("roofline_nsys", owner="nsys", gpu=True, budget_s=300)
def roofline_nsys(ctx: CheckContext) -> dict:
    """`gpuprobe roofline --mode nsys` at two batch sizes: roofline.json in mode nsys, at least 95% of the
    graph-replayed kernels aligned to an eager op, attention's time per step grows with batch."""
    _need_gpu_and_nsys()
    out = ctx.out_dir / "roofline"
    _gpuprobe(ctx, ["roofline", "--mode", "nsys", "--model", "qwen2-0.5b", "--batch", "8,128", "--context", "1024",
                    "--out", str(out)])
    d = json.loads((out / "roofline.json").read_text())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    att = {p["batch"]: p for p in d["points"] if p["op"] == "attention"}
    aligned = [(r["result"]["nsys"]["aligned"], r["result"]["nsys"]["graph_kernels"]) for r in records
               if r.get("status") == "ok"]
    figures = {"mode": d["mode"], "batches": d.get("batch"), "points": len(d["points"]),
               "attention_us": {b: round(p["time_s"] * 1e6, 2) for b, p in att.items()},
               "attention_dram_pct": {b: p.get("dram_pct_of_measured") for b, p in att.items()},
               "aligned_of_graph_kernels": aligned}
    ctx.log(str(figures))
    problems = []
    if d["mode"] != "nsys" or sorted(att) != [8, 128]:
        problems.append(f"mode {d['mode']}, attention points at {sorted(att)}")
    elif not att[128]["time_s"] > att[8]["time_s"]:
        problems.append("attention at batch 128 is not slower than at batch 8")
    if not aligned or any(g == 0 or a < 0.95 * g for a, g in aligned):
        problems.append(f"graph kernels aligned: {aligned}")
    if problems:
        raise CheckFailed("; ".join(problems), figures)
    return figures
