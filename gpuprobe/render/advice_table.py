"""The advisor's table and summary: one row per measured batch (tokens/s, latency, KV cache, verdict),
then B_opt, the memory it frees and the replicas that fit."""
from __future__ import annotations

from typing import Any

from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num, fmt_text


def _gib(v: Any) -> str:
    """Bytes as GiB, or MiB below 1 GiB, with the unit."""
    if v is None:
        return "-"
    return f"{v / 2**30:.2f} GiB" if abs(v) >= 2**30 else f"{v / 2**20:.1f} MiB"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _verdict(v, c) -> str:
    if v.chosen:
        return "B_opt"
    bits = []
    if v.outlier:
        bits.append("outlier")
    if not v.meets_slo:
        bits.append("over SLO")
    if c.rule == "paper":
        if v.efficiency is not None and not v.efficiency > c.params["min_efficiency"]:
            bits.append("E too low")
        if v.within_latency_limit is False:
            bits.append("over latency limit")
    elif not bits and not v.passes:
        bits.append("below bar")
    return ", ".join(bits) or ("passes" if v.passes else "")


def advice_columns(adv) -> list[Column]:
    """The table's columns; the efficiency column with the paper rule, peak memory when measured."""
    c, curve = adv.choice, adv.curve
    derived = " (derived)" if c.latency_source == "derived" else ""
    cols = [Column("batch", "batch", fmt=fmt_int),
            Column("tokens_per_s", "tokens/s", fmt=lambda x: "-" if x is None else _rate(x)),
            Column("of_best_pct", "% of best", fmt=fmt_num),
            Column("step_latency_s", "step ms" + derived, fmt=lambda x: fmt_num(x, 1e-3))]
    if c.rule == "paper":
        cols.append(Column("efficiency", "E(B)", fmt=fmt_num))
    cols.append(Column("kv_cache_bytes", "KV cache", fmt=_gib))
    if curve.has("memory_bytes"):
        cols.append(Column("peak_memory_bytes", "peak memory", fmt=_gib))
    cols += [Column("verdict", "verdict", fmt=fmt_text, numeric=False),
             Column("chosen", "chosen", fmt=lambda x: "yes" if x else "", numeric=False)]
    return cols


def advice_rows(adv) -> list[dict]:
    c, m, curve = adv.choice, adv.memory, adv.curve
    rows = []
    for v in c.verdicts:
        rows.append({"batch": v.batch, "tokens_per_s": v.tokens_per_s,
                     "of_best_pct": 100.0 * v.tokens_per_s / c.best_tokens_per_s if c.best_tokens_per_s else None,
                     "step_latency_s": v.latency_s, "efficiency": v.efficiency,
                     "kv_cache_bytes": m.kv_bytes_by_batch.get(v.batch),
                     "peak_memory_bytes": curve.point(v.batch).memory_bytes if curve.has("memory_bytes") else None,
                     "verdict": _verdict(v, c), "chosen": bool(v.chosen)})
    return rows


def advice_summary(adv) -> list[str]:
    """B_opt, the KV cache and memory it frees, replicas that fit, serving settings, and every note."""
    c, m, curve = adv.choice, adv.memory, adv.curve
    out = []
    if c.b_opt is None:
        out.append(f"No B_opt: {c.reason}")
    else:
        out.append(f"B_opt = {c.b_opt} ({c.rule} rule): {_rate(c.tokens_per_s_at_b_opt)} tokens/s, "
                   f"{c.tokens_per_s_at_b_opt / c.best_tokens_per_s:.1%} of the best measured "
                   f"({_rate(c.best_tokens_per_s)} at batch {c.best_batch}).")
        if m.kv_bytes_at_b_opt is not None:
            out.append(f"KV cache at B_opt x context {m.context}: {_gib(m.kv_bytes_at_b_opt)} "
                       f"against {_gib(m.kv_bytes_at_largest)} at batch {m.largest_batch} ({m.kv_source}).")
        if m.memory_freed_bytes is not None:
            out.append(f"Memory freed: {_gib(m.memory_freed_bytes)} ({m.memory_freed_basis.replace('_', ' ')}).")
        if m.replicas_that_fit is not None:
            out.append(f"Replicas that fit in {m.gpu_name or 'the GPU'} ({_gib(m.gpu_memory_bytes)}) at B_opt: "
                       f"{m.replicas_that_fit} (each {_gib(m.replica_bytes)} incl. {_gib(m.fixed_cost_bytes)} fixed "
                       f"cost, {m.fixed_cost_source}); at batch {m.largest_batch}: {m.replicas_at_largest}.")
        if m.serving:
            out.append(f"Serving-engine settings: {m.serving['max_concurrent_sequences']} concurrent sequences, "
                       f"memory fraction {m.serving['gpu_memory_fraction']:.2f} (vLLM: {m.serving['vllm_flags']}).")
    out += [f"note: {n}" for n in c.notes + m.notes + curve.notes]
    out += [f"note: batch {s['batch']} was not measured ({s['status']}{': ' + s['reason'] if s.get('reason') else ''})"
            for s in curve.skipped]
    out += [f"not reported, input lacks: {miss}" for miss in m.missing if miss != "b_opt"]
    return out


def print_advice(adv, fmt: str | None = None, stream=None) -> None:
    """The table in ``fmt`` (the summary beneath it in the table format)."""
    curve = adv.curve
    title = f"{curve.model or 'curve'} from {curve.source}" if curve.source else None
    emit(advice_columns(adv), advice_rows(adv), fmt, title=title, notes=advice_summary(adv), stream=stream)
