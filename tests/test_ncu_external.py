"""Reports made by other people (tests/fixtures/ncu_external: other GPUs, ncu versions, section sets, no
NVTX) read right through `gpuprobe report` and `load_ncu_report`: exit 0, strict JSON, one row per kernel,
times equal to what NVIDIA's ncu_report (or the CSV cell) says, or null; roofs from the report's own
peaks where the registry does not know the GPU."""
from __future__ import annotations

import csv
import io
import json
import lzma
import math
import shutil
import sys
import types
from pathlib import Path

import pytest

from gpuprobe.cli import main

EXT = Path(__file__).resolve().parent / "fixtures" / "ncu_external"
REPS = ["cs599k_silu-v8.ncu-rep.xz", "esmm_profile_small.ncu-rep.xz", "fuzigrad_output.ncu-rep.xz",
        "ncar_MW_Baseline.ncu-rep.xz", "sglang_profile.ncu-rep.xz"]
CSVS = ["esmm_metrics_details.csv.xz", "leleucas_nsightV.csv.xz", "leleucas_bert_flashattn_nsight.csv.xz"]
ALL = REPS + CSVS
_UNIT_S = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3, "second": 1.0, "s": 1.0}


def _strict(text: str):
    def bad(c):
        raise ValueError(f"not strict JSON: {c}")

    return json.loads(text, parse_constant=bad)


def _rep_times(name: str, tmp: Path) -> list[float | None]:
    """Kernel times straight from ncu_report (None where the report holds no duration)."""
    import ncu_report

    plain = tmp / name[:-3]
    with lzma.open(EXT / name) as f, open(plain, "wb") as g:
        shutil.copyfileobj(f, g)
    ctx = ncu_report.load_report(str(plain))
    out = []
    for ri in range(ctx.num_ranges()):
        rng = ctx.range_by_idx(ri)
        for ai in range(rng.num_actions()):
            m = rng.action_by_idx(ai).metric_by_name("gpu__time_duration.sum")
            v = None if m is None else m.value()
            out.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else
                       float(v) * _UNIT_S[m.unit()])
    return out


def _csv_cells(name: str) -> dict[int, dict[str, tuple[str, str]]]:
    """Per launch ID of a details page: metric name -> (unit, value text), read with the csv module."""
    rows = list(csv.reader(io.StringIO(lzma.open(EXT / name, "rt").read())))
    h = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    head = rows[h]
    m, u, v = head.index("Metric Name"), head.index("Metric Unit"), head.index("Metric Value")
    out: dict[int, dict[str, tuple[str, str]]] = {}
    for r in rows[h + 1:]:
        if len(r) > v and r[0].isdigit():
            out.setdefault(int(r[0]), {})[r[m]] = (r[u], r[v])
    return out


def _csv_times(name: str) -> tuple[list[float], bool]:
    """(times, derived): the Duration cell, else SM cycles / SM clock, per launch."""
    cells = _csv_cells(name)
    times, derived = [], False
    for lid in sorted(cells):
        c = cells[lid]
        if "gpu__time_duration.sum" in c:
            unit, val = c["gpu__time_duration.sum"]
            times.append(float(val.replace(",", "")) * _UNIT_S[unit])
        else:
            cyc = float(c["sm__cycles_elapsed.avg"][1].replace(",", ""))
            hz = float(c["sm__cycles_elapsed.avg.per_second"][1].replace(",", ""))
            times.append(cyc / hz)
            derived = True
    return times, derived


@pytest.mark.parametrize("name", ALL)
def test_report_reads_every_external_file(name, capsys, tmp_path, monkeypatch):
    assert main(["report", str(EXT / name), "--json", "--by", "kernel", "--out", str(tmp_path / "out")]) == 0
    d = _strict(capsys.readouterr().out)
    assert _strict((tmp_path / "out" / "roofline.json").read_text())["points"]  # the written file is strict too
    times = _rep_times(name, tmp_path) if name in REPS else _csv_times(name)[0]
    assert len(d["points"]) == len(times)  # one row per kernel
    for p, want in zip(d["points"], times):
        if want is None:
            assert p["time_s"] is None
        else:
            assert p["time_s"] == pytest.approx(want, rel=1e-6)
        assert p["kernel"] and p["kernel_id"] is not None
    assert d["gpu"] != "h100-sxm"  # none of these is an H100: never the default GPU's roofs
    # the table as a person sees it, at 80 columns: exit 0, no line wider
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["report", str(EXT / name), "--format", "table"]) == 0
    assert max(len(x) for x in capsys.readouterr().out.splitlines()) <= 80


def test_times_derived_from_cycles_are_marked(capsys):
    name = "leleucas_bert_flashattn_nsight.csv.xz"
    times, derived = _csv_times(name)
    assert derived
    from gpuprobe.ncu import load_ncu_report

    df = load_ncu_report(EXT / name)
    assert list(df["time_s"]) == pytest.approx(times, rel=1e-9) and df["time_derived"].all()
    assert any("sm__cycles_elapsed.avg / sm__cycles_elapsed.avg.per_second" in x for x in df.attrs["derived"])
    assert main(["report", str(EXT / name), "--json", "--by", "kernel"]) == 0
    assert all(p["time_derived"] for p in _strict(capsys.readouterr().out)["points"])


def test_missing_time_stays_missing_per_op(capsys):
    """SGLang's flash_fwd kernel holds no data: its time is null, not 0, and no share is invented."""
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--json"]) == 0
    pts = {p["op"]: p for p in _strict(capsys.readouterr().out)["points"]}
    flash = [p for op, p in pts.items() if "flash_fwd" in op or op == "attention"]
    assert flash and all(p["time_s"] is None and p["dram_bytes"] is None for p in flash)
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    flash_line = next(x for x in lines if "flash_fwd" in x or x.startswith("attention"))
    assert "\t\t" in flash_line and "\t0\t" not in flash_line and "\t0.0\t" not in flash_line  # empty, never 0


def test_gh200_is_not_the_h200(capsys):
    from gpuprobe.specs.gpus import resolve_gpu

    gh200 = resolve_gpu(None, device_name="NVIDIA GH200 480GB", default=None)
    assert gh200 is None or gh200.name != "h200"
    assert resolve_gpu(None, device_name="NVIDIA H100 80GB HBM3", default=None).name == "h100-sxm"
    assert main(["report", str(EXT / "cs599k_silu-v8.ncu-rep.xz"), "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    assert d["gpu"] != "h200"
    dram = [r["bytes_per_s"] for r in d["roofs"] if r["name"] == "dram"]
    assert dram and all(3.8e12 < x < 4.2e12 for x in dram)  # the report says about 4.0 TB/s, the H200 4.8
    assert 3.8e12 < d["ceilings"]["dram_bytes_per_s"] < 4.2e12


def test_v100_gets_an_fp32_roofline(capsys):
    """No bf16 tensor roof on a V100 (in its report or on its datasheet): FP32 is the compute ceiling."""
    assert main(["report", str(EXT / "ncar_MW_Baseline.ncu-rep.xz"), "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    assert "v100" in d["gpu"].lower()
    c = d["ceilings"]
    assert c["compute_roof"] == "fp32" and 0.85e12 < c["dram_bytes_per_s"] < 0.95e12
    assert "tensor_bf16" not in {r["name"] for r in d["roofs"]}
    assert "FP32" in d["provenance"]["ceilings_note"]
    placed = [p for p in d["points"] if p["bound"] is not None]
    assert placed and all(p["intensity"] >= 0 for p in placed) and any(p["intensity"] > 0 for p in placed)


def test_gpu_unknown_to_the_registry_gets_the_reports_own_peaks(capsys, monkeypatch):
    """An H800 the registry does not know: only its report's peaks (DRAM, FP32), never another GPU's."""
    from gpuprobe.specs import gpus

    monkeypatch.setattr(gpus, "gpu_from_device_name", lambda name: None)
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    assert d["gpu"] == "NVIDIA H800"
    c = d["ceilings"]
    assert c["compute_roof"] == "fp32" and c["compute_source"] == "ncu_peak" and c["dram_source"] == "ncu_peak"
    assert all(r["source"] == "ncu_peak" for r in d["roofs"]) and {"dram", "fp32"} <= {r["name"] for r in d["roofs"]}
    assert "not in the GPU registry" in d["provenance"]["ceilings_note"]
    assert 3.2e12 < c["dram_bytes_per_s"] < 3.5e12


def test_report_without_any_roof_has_null_ceilings(capsys, tmp_path):
    """A details page naming no GPU and holding no peaks: rows, but no invented roofs; --plot refuses."""
    name = str(EXT / "esmm_metrics_details.csv.xz")
    assert main(["report", name, "--json"]) == 0
    d = _strict(capsys.readouterr().out)
    assert d["ceilings"] is None and d["roofs"] == [] and all(p["bound"] is None for p in d["points"])
    assert main(["report", name, "--plot", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--gpu" in err
    assert main(["report", name, "--json", "--gpu", "a10g"]) == 0
    assert _strict(capsys.readouterr().out)["ceilings"]["dram_source"] == "datasheet"


def test_sm_spelling_of_fp32_counters():
    from gpuprobe.ncu import load_ncu_report

    cells = _csv_cells("esmm_metrics_details.csv.xz")
    df = load_ncu_report(EXT / "esmm_metrics_details.csv.xz")
    for lid, row in zip(sorted(cells), df.itertuples()):
        c = {k: float(v[1].replace(",", "")) for k, v in cells[lid].items() if k.startswith("sm__sass")}
        want = (c["sm__sass_thread_inst_executed_op_fadd_pred_on.sum"] + c["sm__sass_thread_inst_executed_op_fmul_pred_on.sum"]
                + 2 * c["sm__sass_thread_inst_executed_op_ffma_pred_on.sum"])
        assert row.flops_fp32 == want and want > 0


def test_undecidable_limiter_is_null_not_nan(capsys):
    name = str(EXT / "esmm_profile_small.ncu-rep.xz")
    assert main(["report", name, "--json", "--by", "kernel"]) == 0
    d = _strict(capsys.readouterr().out)
    assert any(p["limiter"] is None for p in d["points"])
    assert main(["report", name, "--format", "table"]) == 0  # no rich NotRenderableError on a missing limiter


def test_header_after_200_lines(tmp_path):
    from gpuprobe.ncu import load_ncu_report

    df = load_ncu_report(EXT / "leleucas_nsightV.csv.xz")
    assert len(df) == 198 and df["time_s"].notna().all()
    base = (Path(__file__).parent / "fixtures" / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv").read_text()
    noisy = tmp_path / "noisy.csv"
    noisy.write_text("".join(f"==PROF== line {i}\n" for i in range(500)) + "Traceback (most recent call last):\n" + base)
    a = load_ncu_report(noisy)
    ref = load_ncu_report(Path(__file__).parent / "fixtures" / "ncu"
                          / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv")
    assert list(a["time_s"]) == list(ref["time_s"]) and list(a["op"]) == list(ref["op"])


def test_raw_page_without_units_row_is_refused(tmp_path, capsys):
    text = lzma.open(Path(__file__).parent / "fixtures" / "ncu" / "h100_qwen2-0.5b_decode2layers_b64_c1024_raw.csv.xz",
                     "rt").read()
    lines = text.splitlines(keepends=True)
    assert lines[1].startswith('"","",')  # the units row
    bad = tmp_path / "nounits.csv"
    bad.write_text(lines[0] + "".join(lines[2:]))
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nounits.csv" in err and "units row" in err


# ---------------------------------------------------------------- the kernel rule table, wired in


def test_kernels_without_nvtx_take_the_rule_tables_class(monkeypatch, capsys, tmp_path):
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--json", "--by", "kernel"]) == 0
    pts = _strict(capsys.readouterr().out)["points"]
    flash = [p for p in pts if p["kernel"].startswith("flash_fwd")]
    assert flash and all(p["kernel_op"] == "attention" for p in flash)
    # a user's rules file is matched first
    rules = tmp_path / "rules.csv"
    rules.write_text("pattern,op,example,engine\ndistribution_elementwise,sample,distribution_elementwise_grid_stride_kernel,x\n")
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--json", "--rules", str(rules)]) == 0
    ops = [p["op"] for p in _strict(capsys.readouterr().out)["points"]]
    assert ops == ["attention", "sample"] or set(ops) == {"attention", "sample"}
    assert main(["report", str(EXT / "sglang_profile.ncu-rep.xz"), "--rules", str(tmp_path / "nope.csv")]) == 2


def test_nvtx_ranges_win_over_the_rule_table(monkeypatch):
    from _ncu_data import B32_BASE, path
    from gpuprobe.ncu import load_ncu_report

    df = load_ncu_report(path(B32_BASE))
    assert set(df["op"]) == {"qkv_proj", "attention", "o_proj", "mlp"}
    stripped = df.assign(nvtx_stack=[()] * len(df))
    from gpuprobe.ncu.attribution import attribute

    ops = attribute(stripped)["op"].tolist()
    assert ops[0] == "gemm" and ops[1] == "attention" and not any(o.startswith("other:") for o in ops)


def test_distinct_kernels_stay_distinct():
    from gpuprobe.ncu.readers import kernel_key

    a = kernel_key("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>(T1::Params)")
    b = kernel_key("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_128x128_32x3_tn_align8>(T1::Params)")
    assert a != b and a.startswith("Kernel2<cutlass_80")
    add = "void at::native::vectorized_elementwise_kernel<(int)4, at::native::CUDAFunctor_add<float>, std::array<char *, (unsigned long)3>>(int, T2, T3)"
    mul = "void at::native::vectorized_elementwise_kernel<(int)4, at::native::BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float>>, std::array<char *, (unsigned long)3>>(int, T2, T3)"
    assert kernel_key(add) != kernel_key(mul)
    # the CSV's spelling and ncu_report's agree
    assert kernel_key("void at::vectorized_elementwise_kernel<4, at::CUDAFunctor_add<float>, std::array<char *, 3ul>>(int, T2, T3)") \
        == kernel_key("void at::vectorized_elementwise_kernel<(int)4, at::CUDAFunctor_add<float>, std::array<char *, (unsigned long)3>>(int, T2, T3)")
    assert kernel_key("matmul_2d_tiling", (16, 16, 1)) == "matmul_2d_tiling[16x16x1]"


def test_with_the_real_rule_table_h800_attention_and_gemm():
    """The real rule table: SGLang's flash_fwd under attention, cuBLAS/nvjet under gemm."""
    from _ncu_data import B32_BASE, path
    from gpuprobe.ncu import load_ncu_report
    from gpuprobe.ncu.attribution import attribute

    df = load_ncu_report(EXT / "sglang_profile.ncu-rep.xz")
    assert set(df[df["kernel_short"] == "flash_fwd_kernel"]["op"]) == {"attention"}
    h100 = load_ncu_report(path(B32_BASE))
    ops = attribute(h100.assign(nvtx_stack=[()] * len(h100)))
    assert set(ops[ops["kernel_short"].str.startswith("nvjet")]["op"]) == {"gemm"}
    assert set(ops[ops["kernel_short"].str.contains("sdpa")]["op"]) == {"attention"}
