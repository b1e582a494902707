"""The table of ``gpuprobe replicate``: one row per run of N replicas (aggregate tokens/s, latency,
utilisation, memory, energy per token), and what the runs say against one replica."""
from __future__ import annotations

from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num, fmt_text


def config_row(r) -> dict:
    """One run as a Pareto configuration: label, tokens/s, joules per token, step latency (replicas' mean p50)."""
    lat = [x.result.get("step_latency_p50_s", x.result.get("step_latency_mean_s")) for x in r.ok if x.result]
    lat = [x for x in lat if x is not None]
    return {"label": f"{r.replicas}x B={r.config.get('batch')}{' mps' if r.mps else ''}",
            "tokens_per_s": r.aggregate_tokens_per_s, "joules_per_token": r.joules_per_token,
            "step_latency_s": sum(lat) / len(lat) if lat else None}


REPLICATE_COLUMNS = (
    Column("replicas", "replicas", fmt=fmt_int), Column("batch", "batch", fmt=fmt_int),
    Column("mps", "MPS", fmt=lambda x: "yes" if x else "no", numeric=False),
    Column("ok", "ok", fmt=fmt_int, field="replicas_ok"),
    Column("tokens_per_s", "tokens/s (all)", "tok/s", "aggregate tokens/s", fmt=lambda x: fmt_num(x)),
    Column("step_latency_s", "step ms (p50)", "ms", "step latency, ms (replicas' mean p50)",
           fmt=lambda x: fmt_num(x, 1e-3)),
    Column("gpu_util_pct", "GPU util %", "util%", "GPU utilisation, %", fmt=fmt_num),
    Column("memory_used_bytes", "mem used GiB", "GiB", "GPU memory used, GiB (max)", fmt=lambda x: fmt_num(x, 2**30)),
    Column("joules_per_token", "J/token", "J/tok", "energy per token, J", fmt=fmt_num),
    Column("throttled", "throttled", fmt=fmt_text, numeric=False),
)


def replicate_rows(runs) -> list[dict]:
    rows = []
    for r in runs:
        tel = r.telemetry or {}
        cfg = config_row(r)
        rows.append({"replicas": r.replicas, "batch": r.config.get("batch"), "mps": bool(r.mps), "ok": len(r.ok),
                     "tokens_per_s": r.aggregate_tokens_per_s, "step_latency_s": cfg["step_latency_s"],
                     "gpu_util_pct": tel.get("gpu_util_pct_mean"), "memory_used_bytes": tel.get("memory_used_bytes_max"),
                     "joules_per_token": r.joules_per_token,
                     "throttled": ", ".join(tel.get("throttle_reasons") or []) or "no"})
    return rows


def replicate_notes(runs) -> list[str]:
    """Each run against one replica, failed replicas, missing NVML readings."""
    notes = []
    base = runs[0] if runs and runs[0].replicas == 1 and runs[0].aggregate_tokens_per_s else None
    for r in runs[1:] if base else []:
        if r.aggregate_tokens_per_s:
            notes.append(f"{r.replicas} replicas at batch {r.config.get('batch')}: "
                         f"{r.aggregate_tokens_per_s / base.aggregate_tokens_per_s:.2f}x the tokens/s of 1 replica "
                         f"at batch {base.config.get('batch')}")
    for r in runs:
        for f in r.failed:
            notes.append(f"replica {f.index} of {r.replicas} x batch {r.config.get('batch')} failed: {f.reason}")
        if r.telemetry and not r.telemetry.get("available", True):
            notes.append(f"note: no NVML readings ({r.telemetry.get('reason')})")
    return notes


def print_runs(runs, fmt: str | None = None, stream=None) -> None:
    emit(REPLICATE_COLUMNS, replicate_rows(runs), fmt, title="replicas on one GPU, released together",
         notes=replicate_notes(runs), stream=stream)
