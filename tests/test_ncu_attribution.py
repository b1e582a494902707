"""Op and layer per kernel from NVTX stacks; per-op sums checked against an independent CSV parse."""
from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from _ncu_data import B32_BASE, B32_REP, B64_RAW, loaded, path
from gpuprobe.ncu import Attribution, default_rule, load_ncu_report
from gpuprobe.ncu.counter_roofline import kernel_table, op_table


def test_default_rule():
    assert default_rule(("decode", "layer3", "attention"), "k") == Attribution("attention", 3)
    assert default_rule(("decode", "layer0", "mlp", "act"), "k") == Attribution("act", 0)  # innermost known
    assert default_rule(("decode", "layer0", "mlp", "my_helper"), "k") == Attribution("mlp", 0)
    assert default_rule(("decode", "lm_head"), "gemv") == Attribution("lm_head", None)
    assert default_rule((), "my_own_kernel") == Attribution("other:my_own_kernel", None)
    assert default_rule((), "splitKreduce_kernel") == Attribution("gemm", None)  # the kernel rule table
    assert default_rule(("warmup",), "k") == Attribution("other:k", None)
    assert default_rule(("app@decode", "app@layer1", "app@qkv_proj"), "k") == Attribution("qkv_proj", 1)


def test_rule_is_replaceable():
    def by_kernel(stack, short):
        return Attribution(short, None)

    df = load_ncu_report(path(B32_BASE), rule=by_kernel)
    assert df["op"][0] == "nvjet_sm90_tst_64x8_64x16_2x4_h_bz_NNT"
    assert df["layer"].isna().all()


def test_fixture_ops_and_layers():
    df = loaded(B64_RAW)
    assert df["op"].tolist()[:10] == ["qkv_proj", "attention", "o_proj", "o_proj"] + ["mlp"] * 6
    assert df["layer"].tolist() == [0] * 10 + [1] * 10


def _independent_sums(csv_path, metric, unit_factor):
    """Per-op sums straight from the CSV text: innermost quoted NVTX range, numbers without separators."""
    rows = list(csv.reader(open(csv_path, newline="")))
    h = rows[0]
    nv = next(i for i, c in enumerate(h) if c.startswith("thread Domain"))
    j = h.index(metric)
    sums = defaultdict(float)
    for r in rows[2:]:
        inner = r[nv].split('"')[-2].split(":")[1]
        sums[inner] += float(r[j].replace(",", "")) * unit_factor[rows[1][j]]
    return dict(sums)


@pytest.mark.parametrize("name, metric, col", [
    (B64_RAW, "dram__bytes_read.sum", "dram_read_bytes"),
    (B64_RAW, "gpu__time_duration.sum", "time_s"),
    (B32_BASE, "dram__bytes_read.sum", "dram_read_bytes"),
    (B32_BASE, "gpu__time_duration.sum", "time_s"),
])
def test_per_op_sums_match_an_independent_parse(name, metric, col):
    want = _independent_sums(path(name), metric, {"Mbyte": 1e6, "Kbyte": 1e3, "byte": 1, "us": 1e-6, "ns": 1e-9})
    ops = op_table(kernel_table(loaded(name))).set_index("op")
    assert set(ops.index) == set(want)
    for op, v in want.items():
        assert ops.loc[op, col] == pytest.approx(v, rel=1e-9)


def test_op_table_shape_and_share():
    ops = op_table(kernel_table(loaded(B64_RAW)))
    assert ops["op"].tolist() == ["qkv_proj", "attention", "o_proj", "mlp"]  # op order, groups after ops
    assert ops["n_kernels"].tolist() == [2, 2, 4, 12]
    assert ops["layers_profiled"].tolist() == [2, 2, 2, 2]
    assert ops["time_share"].sum() == pytest.approx(1.0)
    assert ops.set_index("op").loc["attention", "limiter"] == "memory"


def test_scale_to_layers():
    k = kernel_table(loaded(B32_REP))
    one, scaled = op_table(k), op_table(k, scale_to_layers=24)
    assert (scaled["time_s"] / one["time_s"]).tolist() == pytest.approx([24.0] * len(one))
    assert scaled["scaled"].all() and not one["scaled"].any()
