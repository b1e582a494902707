"""Decode throughput of qwen2-0.5b at context 1024, batch 1..1024: fused and unfused kernels, graph and eager.

Prints the kernels one decode layer launches with the fused Triton kernels and with the unfused
PyTorch ops (torch profiler on a GPU), then one table per batch: tokens/s and step time of the fused
graph step, the unfused graph step, the fused eager step, the graph speed-up and each graph step over
the weight-read floor. Writes the sweep's files (throughput.csv/.json/.png, results.jsonl) to --out.
Target (docs/contracts.md section 10): the graph-mode step at batch 1 within 2x of weight bytes / measured
copy bandwidth. ``--compile`` adds the graph of the ``torch.compile``-fused unfused step (tens of
seconds of compilation per batch size). Without a GPU it prints the kernel counts only (counted on the
CPU through Triton's interpreter: ATen compute ops and Triton launches), no step times.

    python benchmarks/throughput.py --out runs/throughput-h100
    python benchmarks/throughput.py --compile --batch 1,8,64,256 --out runs/throughput-h100-fused
"""
from __future__ import annotations

import argparse
import os

from gpuprobe.ceilings.bandwidth import copy_bandwidth_and_source
from gpuprobe.measure.sweep import run_sweep
from gpuprobe.measure.throughput import rows_from_records, weight_read_floor_s
from gpuprobe.parsing import parse_int_list
from gpuprobe.render.plots.throughput import series
from gpuprobe.render.throughput import write_results
from gpuprobe.run.script import run_script
from gpuprobe.specs.gpus import normalize_dtype


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2-0.5b")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", default="1-1024")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--attention", default=None)
    p.add_argument("--dtype", default="bf16", type=normalize_dtype)
    p.add_argument("--out", default="gpuprobe-out/bench-throughput")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--compile", action="store_true", help="also measure the torch.compile-fused step in graph mode")
    a = p.parse_args(argv)

    import torch  # the engine's library, loaded once the arguments are read

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: the kernels run interpreted
    counts = kernels_per_layer(a.model, a.context, a.attention, cuda)
    print(f"\n{a.model}: kernels per decode layer (B=1, context {a.context}, attention {counts['attention']}, "
          f"{counts['how']}): fused {counts['fused']}, unfused {counts['unfused']}")
    if not cuda:
        print("no CUDA GPU here: kernel counts only; the step-time table needs one.")
        return 0
    attention = counts["attention"]
    batches = parse_int_list(a.batch)
    modes = [(True, False, "fused"), (True, False, "unfused"), (False, False, "fused")]  # (graphs, compile, kernels)
    if a.compile:
        modes.append((True, True, "unfused"))
    points = [dict(model=a.model, batch=b, context=a.context, attention=attention, dtype=a.dtype, steps=a.steps,
                   warmup=8, graphs=g, seed=0, device="cuda", page_size=16, compile=c, kernel_mode=k)
              for g, c, k in modes for b in batches]
    records = run_sweep(points, "gpuprobe.measure.throughput:measure_throughput_point", a.out, resume=a.resume,
                        timeout_s=900,
                        label=lambda pt: f"{'graph' if pt['graphs'] else 'eager'}{'+compile' if pt['compile'] else ''} "
                                         f"{pt['kernel_mode']} batch {pt['batch']}")
    rows = rows_from_records(records)
    write_results(rows, a.out, {"model": a.model, "context": a.context, "attention": attention, "dtype": a.dtype,
                                "kernels_per_layer": counts})
    bw, source = copy_bandwidth_and_source()
    by = {(series(r), r["batch"]): r for r in rows}
    print(f"\n{a.model}, context {a.context}, {a.dtype}, attention {attention}; copy bandwidth "
          f"{bw / 1e12:.2f} TB/s ({source})\n")
    compiled = f" {'compile ms':>10} {'x floor':>8} {'compile s':>10}" if a.compile else ""
    print(f"{'':>6} {'fused: ' + str(counts['fused']) + ' kernels/layer':>42} "
          f"{'unfused: ' + str(counts['unfused']) + ' kernels/layer':>30}")
    print(f"{'batch':>6} {'graph tok/s':>12} {'graph ms':>9} {'eager ms':>9} {'x floor':>9} "
          f"{'graph ms':>10} {'x floor':>8} {'fused gain':>10}{compiled}")

    def ok_s(row):
        return row["step_latency_s"] if row and row["status"] == "ok" else None

    def ms(x):
        return f"{x * 1e3:.3f}" if x else "-"

    for b in batches:
        g, u, e, c = (by.get((name, b)) for name in ("graph", "graph+unfused", "eager", "graph+compile"))
        gs, us, es, cs = ok_s(g), ok_s(u), ok_s(e), ok_s(c)
        weights = next((r["weights_bytes"] for r in (g, u, e, c) if r and r["weights_bytes"]), None)
        floor = weight_read_floor_s(weights, bw) if weights else None

        def ratio(x):
            return f"{x / floor:.2f}" if x and floor else "-"

        line = (f"{b:>6} {(f'{b / gs:,.0f}' if gs else (g or {}).get('status', '-')):>12} {ms(gs):>9} {ms(es):>9} "
                f"{ratio(gs):>9} {ms(us):>10} {ratio(us):>8} {(f'{us / gs:.2f}x' if gs and us else '-'):>10}")
        if a.compile:
            took = c["compile_s"] if cs else None
            line += f" {ms(cs):>10} {ratio(cs):>8} {(f'{took:.1f}' if took else '-'):>10}"
        print(line)
    return 0


def kernels_per_layer(model: str, context: int, attention: str | None, cuda: bool) -> dict:
    """Kernels of one decode layer at B=1, fused and unfused: torch profiler on a GPU, the CPU counter
    (Triton interpreted, bf16, a one-layer model) without one."""
    import torch

    from gpuprobe.engine.attention import default_attention  # imports torch and Triton: after TRITON_INTERPRET

    if cuda:
        from gpuprobe.engine.kernel_count import kernels_per_layer_gpu

        att = attention or default_attention(torch.device("cuda"))
        got = {m: kernels_per_layer_gpu(model, m, attention=att, batch=1, context=context)["per_layer"]
               for m in ("fused", "unfused")}
        return {**got, "attention": att, "how": "CUDA kernels, torch profiler"}
    from gpuprobe.engine.kernel_count import kernels_per_layer_cpu

    att = attention or "triton"
    got = {m: kernels_per_layer_cpu(model, m, attention=att, batch=1, context=context, dtype="bf16").per_layer
           for m in ("fused", "unfused")}
    return {**got, "attention": att, "how": "counted on the CPU: ATen compute ops + Triton launches"}


if __name__ == "__main__":
    run_script(main)
