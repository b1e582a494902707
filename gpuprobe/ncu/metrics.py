"""Named metric sets for ``ncu --metrics``: what each measurement collects, by name.

Every name is a Hopper (GH100) metric from ``ncu --query-metrics --chip gh100`` plus a rollup
(``.sum``, ``.avg``...) and optional submetric (``.pct_of_peak_sustained_elapsed``,
``.peak_sustained``, ``.per_second``); a test checks each base name against that list.

* ``roofline``: kernel time; DRAM bytes read and written; DRAM, SM and tensor-pipe throughput in %
  of peak; tensor math ops (docs/contracts.md section 3: ``sm__ops_path_tensor_src_*``, which sum HGMMA
  and HMMA) and tensor instructions; FP32/FP16/FP64 add/mul/fma thread instructions; clocks; and
  the per-cycle peaks from which the report's own ceilings are computed.
* ``memory``: ``roofline`` plus L1 and L2 traffic and hit rates.
* ``stalls``: ``roofline`` plus warp-state (stall reason) ratios.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpuprobe.errors import UserError

TIME = "gpu__time_duration.sum"
DRAM_READ = "dram__bytes_read.sum"
DRAM_WRITE = "dram__bytes_write.sum"
DRAM_BYTES = "dram__bytes.sum"
DRAM_BYTES_PER_S = "dram__bytes.sum.per_second"
DRAM_PCT = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
GPU_DRAM_PCT = "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed"
SM_PCT = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
MEM_PCT = "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"
TENSOR_PIPE_PCT = "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed"
TENSOR_HMMA_PCT_ACTIVE = "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"
TENSOR_INST = "sm__inst_executed_pipe_tensor.sum"

#: Tensor-path math ops by source type (each already counts 2 per multiply-add).
TENSOR_OPS = {
    "bf16": "sm__ops_path_tensor_src_bf16_dst_fp32.sum",
    "fp16": "sm__ops_path_tensor_src_fp16.sum",
    "tf32": "sm__ops_path_tensor_src_tf32_dst_fp32.sum",
}
#: Dense (sparsity off) per-cycle tensor peaks for the ceilings, by source type.
TENSOR_PEAK_PER_CYCLE = {
    "bf16": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum.peak_sustained",
    "fp16": "sm__ops_path_tensor_op_hgmma_src_fp16_sparsity_off.sum.peak_sustained",
    "tf32": "sm__ops_path_tensor_op_hgmma_src_tf32_dst_fp32_sparsity_off.sum.peak_sustained",
}


def thread_inst(op: str) -> str:
    """``fadd`` -> ``smsp__sass_thread_inst_executed_op_fadd_pred_on.sum``."""
    return f"smsp__sass_thread_inst_executed_op_{op}_pred_on.sum"


#: Non-tensor FLOP instructions: precision -> (add, mul, fma) metric names.
THREAD_FLOPS = {
    "fp32": (thread_inst("fadd"), thread_inst("fmul"), thread_inst("ffma")),
    "fp16": (thread_inst("hadd"), thread_inst("hmul"), thread_inst("hfma")),
    "fp64": (thread_inst("dadd"), thread_inst("dmul"), thread_inst("dfma")),
}

def thread_inst_sm(op: str) -> str:
    """``fadd`` -> ``sm__sass_thread_inst_executed_op_fadd_pred_on.sum``: the same count rolled up per SM,
    the spelling some reports use instead of the ``smsp__`` one."""
    return f"sm__sass_thread_inst_executed_op_{op}_pred_on.sum"


#: The ``sm__`` spellings of :data:`THREAD_FLOPS`, read when the ``smsp__`` ones are absent.
THREAD_FLOPS_SM = {
    "fp32": (thread_inst_sm("fadd"), thread_inst_sm("fmul"), thread_inst_sm("ffma")),
    "fp16": (thread_inst_sm("hadd"), thread_inst_sm("hmul"), thread_inst_sm("hfma")),
    "fp64": (thread_inst_sm("dadd"), thread_inst_sm("dmul"), thread_inst_sm("dfma")),
}

#: Elapsed SM cycles; divided by :data:`SM_HZ` it gives a kernel's duration when the report has none.
SM_CYCLES = "sm__cycles_elapsed.avg"
SM_HZ = "sm__cycles_elapsed.avg.per_second"
SMSP_HZ = "smsp__cycles_elapsed.avg.per_second"
DRAM_HZ = "dram__cycles_elapsed.avg.per_second"
LTS_HZ = "lts__cycles_elapsed.avg.per_second"
DRAM_PEAK_PER_CYCLE = "dram__bytes.sum.peak_sustained"
FFMA_PEAK_PER_CYCLE = "sm__sass_thread_inst_executed_op_ffma_pred_on.sum.peak_sustained"
L2_BYTES = "lts__t_bytes.sum"
L2_PEAK_PER_CYCLE = "lts__t_bytes.sum.peak_sustained"
L1_BYTES = "l1tex__t_bytes.sum"

ROOFLINE: tuple[str, ...] = (
    TIME, DRAM_READ, DRAM_WRITE, DRAM_PCT, SM_PCT, MEM_PCT, TENSOR_PIPE_PCT, TENSOR_INST,
    *TENSOR_OPS.values(),
    *THREAD_FLOPS["fp32"], *THREAD_FLOPS["fp16"], *THREAD_FLOPS["fp64"],
    SM_HZ, DRAM_HZ, LTS_HZ,
    DRAM_PEAK_PER_CYCLE, FFMA_PEAK_PER_CYCLE, *TENSOR_PEAK_PER_CYCLE.values(), L2_PEAK_PER_CYCLE,
)

MEMORY: tuple[str, ...] = ROOFLINE + (
    L2_BYTES, L1_BYTES,
    "lts__t_sector_hit_rate.pct", "l1tex__t_sector_hit_rate.pct",
    "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    "l1tex__throughput.avg.pct_of_peak_sustained_active",
    "dram__bytes.sum.per_second",
)

STALL_REASONS = (
    "barrier", "branch_resolving", "dispatch_stall", "drain", "gmma", "imc_miss", "lg_throttle",
    "long_scoreboard", "math_pipe_throttle", "membar", "mio_throttle", "misc", "no_instruction",
    "not_selected", "selected", "short_scoreboard", "sleeping", "tex_throttle", "wait",
)

STALLS: tuple[str, ...] = ROOFLINE + tuple(
    f"smsp__average_warps_issue_stalled_{r}_per_issue_active.ratio" for r in STALL_REASONS
) + ("sm__warps_active.avg.pct_of_peak_sustained_active",)


@dataclass(frozen=True)
class MetricSet:
    name: str
    metrics: tuple[str, ...]
    description: str
    sections: tuple[str, ...] = ()


METRIC_SETS: dict[str, MetricSet] = {
    "roofline": MetricSet("roofline", ROOFLINE, "time, DRAM bytes, % of peak, tensor and FP FLOP counters, clocks, peaks"),
    "memory": MetricSet("memory", MEMORY, "roofline + L1/L2 traffic and hit rates"),
    "stalls": MetricSet("stalls", STALLS, "roofline + warp stall reasons"),
}


def get_metric_set(name: str) -> MetricSet:
    try:
        return METRIC_SETS[name]
    except KeyError:
        raise UserError(f"unknown metric set '{name}'; choose one of: {', '.join(METRIC_SETS)}") from None


_ROLLUPS = (".sum", ".avg", ".max", ".min")


def base_metric_name(metric: str) -> str:
    """``dram__bytes_read.sum.per_second`` -> ``dram__bytes_read`` (the name ``--query-metrics`` lists)."""
    name = metric
    for sep in _ROLLUPS + (".pct", ".ratio", ".pct_of_peak_sustained_elapsed", ".peak_sustained"):
        i = name.find(sep)
        if i > 0:
            name = name[:i]
    return name
