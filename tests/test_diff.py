"""`gpuprobe diff` on the real H100 fixtures: B=32 (layer 0) against B=64 (two layers), per op and kernel."""
from __future__ import annotations

import json

import pytest

from _ncu_data import B32_BASE, B32_REP, B64_RAW, loaded, path
from gpuprobe.cli import main
from gpuprobe.diff import compare, side_table, slower_than
from gpuprobe.ncu.counter_roofline import kernel_table, op_table


def _strict(text: str):
    def bad(c):
        raise ValueError(c)

    return json.loads(text, parse_constant=bad)


def test_diff_by_op_matches_each_sides_op_table(capsys):
    assert main(["diff", str(path(B32_BASE)), str(path(B64_RAW)), "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    ops_a = op_table(kernel_table(loaded(B32_BASE))).set_index("op")
    ops_b = op_table(kernel_table(loaded(B64_RAW))).set_index("op")
    rows = {r["key"]: r for r in d["rows"]}
    assert list(rows) == ["qkv_proj", "attention", "o_proj", "mlp"]
    for op, r in rows.items():
        assert r["time_a"] == pytest.approx(ops_a.loc[op, "time_s"]) and r["time_b"] == pytest.approx(ops_b.loc[op, "time_s"])
        assert r["dram_a"] == pytest.approx(ops_a.loc[op, "dram_bytes"])
        assert r["time_ratio"] == pytest.approx(r["time_b"] / r["time_a"])
        assert r["bw_a"] == pytest.approx(r["dram_a"] / r["time_a"]) and r["only"] is None
    # attention reads the KV cache: B=64, C=1024, two layers against B=32, C=512, one layer: 8x the bytes
    assert rows["attention"]["dram_ratio"] == pytest.approx(8.3, rel=0.02)
    t = d["total"]
    assert t["n_a"] == 10 and t["n_b"] == 20
    assert t["time_a"] == pytest.approx(loaded(B32_BASE)["time_s"].sum())


def test_diff_by_kernel_keeps_distinct_kernels_and_one_sided_rows(capsys):
    assert main(["diff", str(path(B32_BASE)), str(path(B64_RAW)), "--by", "kernel", "--json"]) == 0
    rows = _strict(capsys.readouterr().out)["rows"]
    only = {r["only"] for r in rows}
    assert only == {None, "A", "B"}  # cuBLAS picks other tiles at B=64: those GEMMs are on one side only
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    assert sum(r["n_a"] or 0 for r in rows) == 10 and sum(r["n_b"] or 0 for r in rows) == 20
    one_sided = [r for r in rows if r["only"]]
    assert all(r["time_ratio"] is None for r in one_sided)  # never a ratio against nothing


def test_fail_if_slower_gate(capsys):
    a, b = str(path(B32_BASE)), str(path(B64_RAW))
    assert main(["diff", a, b, "--fail-if-slower", "10", "--format", "tsv"]) == 1
    err = capsys.readouterr().err
    assert "slower than 10% in B" in err and "total" in err
    assert main(["diff", a, b, "--fail-if-slower", "1000"]) == 0
    # the same workload measured twice (two runs of B=32): within 5%
    assert main(["diff", a, str(path(B32_REP)), "--fail-if-slower", "5"]) == 0
    with pytest.raises(SystemExit) as e:  # an argparse error
        main(["diff", a, b, "--fail-if-slower", "-3"])
    assert e.value.code == 2


def test_diff_of_roofline_json(tmp_path, capsys):
    for name, sub in ((B32_REP, "a"), (B64_RAW, "b")):
        assert main(["report", str(path(name)), "--out", str(tmp_path / sub), "--format", "tsv"]) == 0
    capsys.readouterr()
    ja, jb = tmp_path / "a" / "roofline.json", tmp_path / "b" / "roofline.json"
    assert main(["diff", str(ja), str(jb), "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    direct = compare(side_table(path(B32_REP)), side_table(path(B64_RAW)))
    assert [r["key"] for r in d["rows"]] == [r["key"] for r in direct.rows]
    for r, s in zip(d["rows"], direct.rows):
        assert r["time_ratio"] == pytest.approx(s["time_ratio"])
    assert main(["diff", str(ja), str(jb), "--by", "kernel", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("kernel,op,kernels_a,kernels_b,time_a_s,time_b_s") and len(out) > 5


def test_slower_than_ignores_one_sided_rows():
    d = compare(side_table(path(B32_BASE), "kernel"), side_table(path(B64_RAW), "kernel"))
    keys = {k for k, _ in slower_than(d, 50)}
    assert "total" in keys
    assert not keys & {r["key"] for r in d.rows if r["only"]}


def test_diff_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["diff", str(tmp_path / "nope.ncu-rep"), str(path(B64_RAW))]) == 2
    bad = tmp_path / "r.json"
    bad.write_text("{\"points\": 3}")
    assert main(["diff", str(bad), str(path(B64_RAW))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("error" in x for x in err)
