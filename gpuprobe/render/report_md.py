"""``report.md`` of a measured roofline: verdicts backed by numbers, the figures, the cross-checks, and
exactly how the data was made (commands, versions, clocks, ncu settings).

Everything comes from the :class:`~gpuprobe.roofline.RooflineResult` (roofline.json), so a report can
be rebuilt on any machine from the JSON alone.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from gpuprobe.ops import GEMM_OPS, GROUPS, op_order
from gpuprobe.roofline.schema import RooflinePoint, RooflineResult

_WORD = {"memory": "memory-bound", "compute": "compute-bound",
         "latency": "latency-bound (neither DRAM nor compute near its peak)"}
_FIGURES = (
    ("bandwidth", "bandwidth_vs_batch.png", "DRAM throughput per op against batch, SM utilisation beside it"),
    ("roofline", "roofline.png", "measured points per op across batch, with the DRAM roof and the FP32 and "
                                 "tensor-core compute roofs"),
    ("breakdown", "time_breakdown.png", "each op's share of the step time against batch"),
    ("throughput", "throughput.png", "tokens/s against batch (CUDA-graph replay and eager steps)"),
)


def _f(x: float | None, fmt: str = ".0f", none: str = "n/a") -> str:
    return none if x is None else format(x, fmt)


def _major_ops(result: RooflineResult) -> list[str]:
    ops = {p.op for p in result.points}
    return sorted((o for o in ops if o == "attention" or o in GEMM_OPS or o in GROUPS), key=op_order)


def verdict(p: RooflinePoint, mode: str) -> str:
    """One line: ``attention: DRAM 93% of peak, SM 11%, at batch 512: memory-bound``."""
    dram = p.dram_pct_of_measured if p.dram_pct_of_measured is not None else p.dram_pct_of_ncu_peak
    basis = "of peak" if p.dram_pct_of_measured is not None else "of ncu's peak"
    parts = [f"DRAM {_f(dram)}% {basis}"]
    if mode == "ncu":
        parts.append(f"SM {_f(p.sm_pct)}%")
        if p.tensor_pct is not None and (p.op in GEMM_OPS or p.op in ("attention", "mlp")):
            parts.append(f"tensor {_f(p.tensor_pct)}%")
    elif p.tensor_pct is not None:
        parts.append(f"{_f(p.tensor_pct)}% of the tensor roof")
    word = _WORD.get(p.limiter or "", p.bound + "-bound by intensity" if p.bound else "unclassified")
    return f"{p.op}: {', '.join(parts)}, at batch {p.batch}: {word}"


def attention_claim(result: RooflineResult) -> str | None:
    """The project's central claim, judged on this run: decode attention stays memory-bound at any batch."""
    pts = result.points_by_op().get("attention")
    if not pts:
        return None
    ridge = result.ceilings.ridge
    below = all(p.bound == "memory" for p in pts if p.bound)
    max_i = max((p.intensity for p in pts if p.intensity is not None), default=None)
    last = pts[-1]
    mem_from = next((p.batch for p in pts if p.limiter == "memory"), None)
    sm_max = max((p.sm_pct for p in pts if p.sm_pct is not None), default=None)
    dram_first = pts[0].dram_pct_of_measured if pts[0].dram_pct_of_measured is not None else pts[0].dram_pct_of_ncu_peak
    dram_last = last.dram_pct_of_measured if last.dram_pct_of_measured is not None else last.dram_pct_of_ncu_peak
    holds = below and last.limiter == "memory"
    text = (f"**Claim: decode attention stays memory-bound at any batch size. "
            f"{'Holds' if holds else 'Not shown'} in this run.** Attention's intensity stays "
            f"{'below' if below else 'NOT below'} the ridge ({_f(max_i, '.1f')} FLOP/B at most against "
            f"{ridge:.0f}); its DRAM throughput goes from {_f(dram_first)}% at batch {pts[0].batch} to "
            f"{_f(dram_last)}% at batch {last.batch}")
    if sm_max is not None:
        text += f" while its SM throughput stays at or below {sm_max:.0f}%"
    if mem_from is not None:
        text += f"; limiter `memory` from batch {mem_from}"
    return text + "."


def gemm_trend(result: RooflineResult) -> list[str]:
    """Intensity of each GEMM from the smallest to the largest batch, and where it crosses the ridge."""
    lines = []
    for op, pts in sorted(result.points_by_op().items(), key=lambda kv: op_order(kv[0])):
        if op not in GEMM_OPS and op != "mlp":
            continue
        pts = [p for p in pts if p.intensity is not None]
        if len(pts) < 2:
            continue
        cross = next((p.batch for p in pts if p.bound == "compute"), None)
        lines.append(f"{op}: intensity {pts[0].intensity:.1f} -> {pts[-1].intensity:.1f} FLOP/B from batch "
                     f"{pts[0].batch} to {pts[-1].batch}"
                     + (f"; past the ridge from batch {cross}" if cross else "; below the ridge throughout"))
    return lines


def verdict_lines(result: RooflineResult) -> list[str]:
    """Verdicts at the largest batch for attention and the GEMMs, the claim, and the GEMM trends."""
    by_op = result.points_by_op()
    out = [verdict(by_op[op][-1], result.mode) for op in _major_ops(result)]
    claim = attention_claim(result)
    if claim:
        out.append(claim.replace("**", ""))
    out += gemm_trend(result)
    flagged = [c for c in result.extra.get("crosschecks", []) if c.get("flagged")]
    if result.extra.get("crosschecks"):
        out.append(f"cross-checks: {len(result.extra['crosschecks']) - len(flagged)} agree within 10%, "
                   f"{len(flagged)} flagged (see report.md)")
    return out


def _step_table(result: RooflineResult) -> list[str]:
    att = {p.batch: p for p in result.points_by_op().get("attention", [])}
    rows = ["| batch | status | graph step | tokens/s (graph) | tokens/s (eager) | attention DRAM % | "
            "attention SM % | SM clock (MHz, min) | throttled |", "|---|---|---|---|---|---|---|---|---|"]
    for s in result.extra.get("steps", []):
        a = att.get(s["batch"])
        dram = (a.dram_pct_of_measured if a and a.dram_pct_of_measured is not None else
                (a.dram_pct_of_ncu_peak if a else None))
        gs = s.get("graph_step_s")
        thr = s.get("throttled")
        clock = (s.get("sm_clock_mhz") or {}).get("window_min")
        rows.append(f"| {s['batch']} | {s['status']} | {_f(gs * 1e3, '.3f') + ' ms' if gs else 'n/a'} | "
                    f"{_f(s.get('graph_tokens_per_s'), ',.0f')} | {_f(s.get('eager_tokens_per_s'), ',.0f')} | "
                    f"{_f(dram)} | {_f(a.sm_pct if a else None)} | {_f(clock)} | "
                    f"{'n/a' if thr is None else ('**yes**: ' + ', '.join(s.get('throttle_reasons') or []) if thr else 'no')} |")
    return rows


def _op_table(result: RooflineResult, batch: int) -> list[str]:
    rows = ["| op | time | DRAM % (measured) | DRAM % (ncu peak) | SM % | tensor % | intensity | bound | "
            "limiter | executed/useful FLOPs | kernels | scaled |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted((p for p in result.points if p.batch == batch), key=lambda p: op_order(p.op)):
        pad = p.flops_executed / p.flops_useful if p.flops_executed is not None and p.flops_useful else None
        t = p.time_s
        rows.append(f"| {p.op} | {_f(t * 1e6 if t else None, '.1f')} µs | {_f(p.dram_pct_of_measured)} | "
                    f"{_f(p.dram_pct_of_ncu_peak)} | {_f(p.sm_pct)} | {_f(p.tensor_pct)} | "
                    f"{_f(p.intensity, '.3g')} | {p.bound or 'n/a'} | {p.limiter or 'n/a'} | {_f(pad, '.2f')} | "
                    f"{p.n_kernels if p.n_kernels is not None else 'n/a'} | "
                    f"{'x' + format(result.layers / p.layers_profiled, '.0f') if p.scaled and p.layers_profiled and result.layers else 'no'} |")
    return rows


def _crosscheck_table(checks: list[Mapping[str, Any]]) -> list[str]:
    if not checks:
        return ["No counter cross-checks (they need ncu mode)."]
    rows = ["| check | op | batch | counters | analytic | ratio | | note |", "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        unit = "FLOP" if c["name"] == "gemm_flops" else "B"
        rows.append(f"| {c['name']} | {c['op']} | {c['batch']} | {_f(c.get('measured'), '.4g')} {unit} | {c['expected']:.4g} {unit} | "
                    f"{_f(c.get('ratio'), '.3f')} | {'**FLAGGED**' if c['flagged'] else 'ok'} | {c['note']} |")
    return rows


def _provenance(result: RooflineResult) -> list[str]:
    p = result.provenance
    sweep = result.extra.get("sweep") or {}
    bw = result.extra.get("copy_bandwidth") or {}
    lines = ["```", p.get("command") or "(command not recorded)", "```"]
    if p.get("ncu_command_example"):
        lines += ["One point's profile (the others differ in `--batch`):", "```",
                  " ".join(str(x) for x in p["ncu_command_example"]), "```"]
    facts = [
        ("GPU", f"{p.get('device_name') or p.get('gpu_display_name')} (registry `{result.gpu}`)"),
        ("driver", p.get("driver")), ("CUDA (torch build)", p.get("cuda_version")),
        ("torch", p.get("torch_version")), ("triton", p.get("triton_version")),
        ("Nsight Compute", p.get("ncu_version")), ("gpuprobe", f"{p.get('gpuprobe_version')} ({p.get('git_sha') or 'no git'})"),
        ("python", p.get("python")),
        ("ncu settings", None if not p.get("ncu_version") else
         f"metric set `{p.get('metric_set')}`, `--clock-control {p.get('clock_control')}` (clocks left as they were), "
         f"`--cache-control {p.get('cache_control')}`"
         + (" (caches flushed before each kernel: DRAM bytes are cold-cache figures)" if p.get("cache_control") == "all" else "")
         + f", `--replay-mode {p.get('replay_mode')}`, NVTX filter {', '.join('`' + x + '`' for x in p.get('nvtx_filter') or [])}"),
        ("clocks seen", ", ".join(f"{k} {v:.4g}" for k, v in (p.get("clocks_seen") or {}).items() if v is not None) or None),
        ("copy bandwidth (100% of DRAM)", None if not bw.get("bytes_per_s") else
         f"{bw['bytes_per_s'] / 1e12:.3f} TB/s from {bw.get('source')}"),
        ("ceilings of `bound`", f"DRAM {result.ceilings.dram_bytes_per_s / 1e12:.2f} TB/s ({result.ceilings.dram_source}), "
                                f"{result.ceilings.compute_roof} {result.ceilings.flops_per_s / 1e12:.0f} TFLOP/s "
                                f"({result.ceilings.compute_source}), ridge {result.ceilings.ridge:.0f} FLOP/B"),
        ("limiter rule", ", ".join(f"{k}: {v}" for k, v in (result.limiter_rule or {}).items() if k != "threshold_pct")),
        ("sweep", None if not sweep else f"{len(result.extra.get('steps', []))} points, wall time "
                                         f"{sweep.get('wall_s')} s" + (" (interrupted)" if sweep.get("interrupted") else "")),
    ]
    lines += [f"- {k}: {v}" for k, v in facts if v]
    return lines


def render_report(result: RooflineResult, figures: Mapping[str, str] | None = None) -> str:
    """The Markdown text of report.md (``figures``: key -> file name of the figures that exist)."""
    figures = dict(figures or {})
    head = (f"# Measured roofline: {result.model} on {result.gpu} ({result.mode} mode)\n\n"
            f"Context {result.context if result.context else 'mixed'} tokens, {result.dtype}, attention "
            f"`{result.extra.get('attention')}`, batches {', '.join(map(str, result.batch or []))}; "
            f"{'one representative layer and lm_head profiled, scaled to the whole step' if result.extra.get('layers_mode') == 'one' and result.mode == 'ncu' else 'every layer measured'}. "
            f"Written {time.strftime('%Y-%m-%d %H:%M')}.\n")
    md = [head, "## Verdicts", ""]
    by_op = result.points_by_op()
    md += [f"- {verdict(by_op[op][-1], result.mode)}" for op in _major_ops(result)]
    claim = attention_claim(result)
    if claim:
        md += ["", claim]
    trend = gemm_trend(result)
    if trend:
        md += [""] + [f"- {t}" for t in trend]
    if result.mode == "timing":
        md += ["", "Timing mode: no counters. DRAM % is the cost model's minimum bytes over the CUDA-event time "
                   "(a lower bound on the real traffic); the tensor % is useful FLOP/s over the tensor roof."]
    md += ["", "## Figures", ""]
    for key, name, caption in _FIGURES:
        if key in figures:
            md += [f"**{caption}**", "", f"![{caption}]({figures[key]})", ""]
    md += ["## Step time and throughput per batch", ""] + _step_table(result)
    throttled = [s["batch"] for s in result.extra.get("steps", []) if s.get("throttled")]
    if throttled:
        md += ["", f"**Points measured while the GPU throttled: batch {', '.join(map(str, throttled))}** "
                   "(their times may be slow; re-run them with --resume after removing their records)."]
    if result.batch:
        top = max(result.batch)
        md += ["", f"## Per op at batch {top}", ""] + _op_table(result, top)
    md += ["", "## Cross-checks (counters against the cost model; over 10% flagged)", ""]
    md += _crosscheck_table(result.extra.get("crosschecks", []))
    failed = result.extra.get("failed_points") or []
    if failed:
        md += ["", "## Points that did not finish", ""] + [f"- batch {f['batch']}: {f['status']}: {f['reason']}"
                                                           for f in failed]
    md += ["", "## How this was made", ""] + _provenance(result)
    return "\n".join(md) + "\n"


def write_report(result: RooflineResult, out_dir: str | Path, figures: Mapping[str, str] | None = None) -> Path:
    """Write ``report.md`` into ``out_dir``; returns its path."""
    path = Path(out_dir) / "report.md"
    path.write_text(render_report(result, figures))
    return path
