"""Foundation check: the analytic cost model against real H100 counters shipped with gpuprobe."""
from __future__ import annotations

from importlib import resources

from gpuprobe.analytic import op_costs_per_layer
from gpuprobe.ncu import load_ncu_report
from gpuprobe.specs import get_model
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, check

FIXTURE = "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv"
BATCH, CONTEXT = 32, 512
#: DRAM reads may exceed the analytic minimum (cold caches, tile over-fetch) but not by much.
READ_RATIO_RANGE = (0.98, 1.10)


def fixture_read_ratios() -> dict[str, float]:
    """Counter DRAM read bytes / analytic minimum read bytes, per op of layer 0 (B=32, C=512)."""

    with resources.as_file(resources.files("gpuprobe.data") / FIXTURE) as path:
        df = load_ncu_report(path)
    reads = df.groupby("op")["dram_read_bytes"].sum()
    analytic = {c.op: c for c in op_costs_per_layer(get_model("qwen2-0.5b"), BATCH, CONTEXT, "bf16")}
    return {op: float(reads[op]) / analytic[op].dram_read_bytes for op in ("attention", "qkv_proj")}


@check("analytic_vs_fixture", owner="foundation", gpu=False, budget_s=60, estimate_s=5)
def analytic_vs_fixture(ctx: CheckContext) -> dict:
    """Analytic DRAM reads of attention and qkv_proj match real H100 counters within 10%."""
    ratios = fixture_read_ratios()
    figures = {f"{op}_read_ratio": round(r, 4) for op, r in ratios.items()}
    lo, hi = READ_RATIO_RANGE
    bad = {op: r for op, r in ratios.items() if not lo <= r <= hi}
    if bad:
        raise CheckFailed(f"counter / analytic DRAM reads outside [{lo}, {hi}]: {bad}", figures)
    return figures
