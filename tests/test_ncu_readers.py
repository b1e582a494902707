"""Readers of real H100 Nsight Compute output: raw CSV (display and base units), details page, .ncu-rep."""
from __future__ import annotations

import csv
import io
import lzma
import math
import shutil
import tempfile
from pathlib import Path

import pytest

from _ncu_data import B32_BASE, B32_REP, B32_SOL, B64_DETAILS, B64_RAW, path, raw
from gpuprobe.errors import UserError
from gpuprobe.ncu.readers import ReportFormatError, parse_nvtx_cell, read_csv, read_report, short_kernel_name

LAYER_OPS = ["qkv_proj", "attention", "o_proj", "o_proj", "mlp", "mlp", "mlp", "mlp", "mlp", "mlp"]


@pytest.mark.parametrize("name, kernels, fmt", [
    (B64_RAW, 20, "csv-raw"), (B64_DETAILS, 20, "csv-details"), (B32_BASE, 10, "csv-raw"),
    (B32_REP, 10, "ncu-rep"), (B32_SOL, 10, "ncu-rep"),
])
def test_kernel_counts_and_stacks(name, kernels, fmt):
    df = raw(name)
    assert len(df) == kernels and df.attrs["format"] == fmt
    assert list(df["id"]) == list(range(kernels))
    layers = 2 if kernels == 20 else 1
    want = [("decode", f"layer{i}", op) for i in range(layers) for op in LAYER_OPS]
    assert [tuple(s) for s in df["nvtx_stack"]] == want
    assert all(r == () for r in df["nvtx_ranges"])


def test_rep_and_csv_name_the_same_kernels():
    rep, csv_ = raw(B32_REP), raw(B32_BASE)
    assert list(rep["kernel_short"]) == list(csv_["kernel_short"])
    assert rep["kernel_short"][3] == "vectorized_elementwise_kernel"
    assert csv_["kernel_name"][3].startswith("void at::vectorized_elementwise_kernel<8,")
    assert rep["kernel_name"][3].startswith("void at::native::vectorized_elementwise_kernel<(int)8,")
    assert list(rep["grid"]) == list(csv_["grid"]) and list(rep["block"]) == list(csv_["block"])
    assert rep["grid"][1] == (1, 2, 32) and rep["block"][0] == (384, 1, 1)
    assert rep.attrs["device_name"] == csv_.attrs["device_name"] == "NVIDIA H100 80GB HBM3"


def test_short_kernel_name_matches_ncu_report_function_name():
    import ncu_report

    with tempfile.TemporaryDirectory() as tmp:
        rep = Path(tmp) / "r.ncu-rep"
        with lzma.open(path(B32_REP)) as f, open(rep, "wb") as g:
            shutil.copyfileobj(f, g)
        ctx = ncu_report.load_report(str(rep))
        r = ctx.range_by_idx(0)
        for i in range(r.num_actions()):
            a = r.action_by_idx(i)
            assert short_kernel_name(a.name(a.NameBase_DEMANGLED)) == a.name()


@pytest.mark.parametrize("name, short", [
    ("void at::vectorized_elementwise_kernel<8, at::CUDAFunctor_add<c10::BFloat16>, std::array<char *, 3>>(int, T2, T3)",
     "vectorized_elementwise_kernel"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, 0, float>(...)",
     "splitKreduce_kernel"),
    ("nvjet_sm90_tst_64x8_64x16_2x4_h_bz_NNT", "nvjet_sm90_tst_64x8_64x16_2x4_h_bz_NNT"),
    ("void (anonymous namespace)::softmax_warp_forward<float, float, 4>(float *, int)", "softmax_warp_forward"),
    ("_paged_attention_kernel", "_paged_attention_kernel"),
])
def test_short_kernel_name(name, short):
    assert short_kernel_name(name) == short


def test_display_units_are_converted():
    df = raw(B64_RAW)
    # Mbyte, us, Tbyte/s, Ghz, Kbyte/cycle columns of the same kernel, in base units
    assert df["dram__bytes_read.sum"][1] == pytest.approx(33_692_416)
    assert df["gpu__time_duration.sum"][1] == pytest.approx(17.024e-6)
    assert df["dram__cycles_elapsed.avg.per_second"][1] == pytest.approx(2.614286e9)
    assert df["dram__bytes.sum.peak_sustained"][1] == pytest.approx(1280)
    assert df.attrs["units"]["dram__bytes.sum.per_second"] == "byte/s"
    # Tbyte/s rate against Mbyte bytes over us time: one unit system
    rate = (df["dram__bytes_read.sum"] + df["dram__bytes_write.sum"]) / df["gpu__time_duration.sum"]
    assert (rate / df["dram__bytes.sum.per_second"]).between(0.995, 1.005).all()
    # thousands separators: '2,162,688' per-cycle peak
    assert df["sm__ops_path_tensor_src_fp8_sparsity_on.sum.peak_sustained"][0] == 2_162_688


def test_display_and_base_units_give_the_same_numbers(tmp_path):
    """The base-unit page rewritten in display units (Mbyte, us, Ghz, with separators) reads the same."""
    rows = list(csv.reader(open(path(B32_BASE), newline="")))
    head, units = rows[0], rows[1]
    conv = {"dram__bytes_read.sum": ("Mbyte", 1e-6), "gpu__time_duration.sum": ("us", 1e-3),
            "sm__cycles_elapsed.avg.per_second": ("Ghz", 1e-9), "lts__t_bytes.sum": ("Kbyte", 1e-3)}
    for name, (unit, f) in conv.items():
        j = head.index(name)
        units[j] = unit
        for r in rows[2:]:
            r[j] = f"{float(r[j].replace(',', '')) * f:,.6f}"
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
    disp = read_csv(tmp_path / "display.csv", text=buf.getvalue())
    base = raw(B32_BASE)
    for name in conv:
        assert disp[name].tolist() == pytest.approx(base[name].tolist(), rel=1e-6)


def test_details_page_agrees_with_raw_page():
    """Same report, two pages: the details page rounds to 3-4 digits."""
    det, rawp = raw(B64_DETAILS), raw(B64_RAW)
    assert list(det["kernel_short"]) == list(rawp["kernel_short"])
    for m in ("gpu__time_duration.sum", "dram__bytes_read.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
              "dram__bytes.sum.per_second", "sm__cycles_elapsed.avg.per_second"):
        for a, b in zip(det[m], rawp[m]):
            assert a == pytest.approx(b, rel=6e-3, abs=5e-3 * max(abs(b), 1e-12) + (0.006 if m.endswith("elapsed") else 0))


def test_rep_and_csv_two_runs_agree_within_run_to_run_noise():
    """The .ncu-rep and the base-unit CSV are two runs of one workload: DRAM within 0.3%, time within 7%."""
    from gpuprobe.ncu.compare import compare_tables

    rep, csv_ = raw(B32_REP), raw(B32_BASE)
    c = compare_tables(rep, csv_, ["dram__bytes_read.sum"], rtol=3e-3)
    assert c.ok and c.metrics_compared == 1
    c = compare_tables(rep, csv_, ["gpu__time_duration.sum"], rtol=0.07)
    assert c.ok
    # counts of executed instructions are deterministic: identical across runs
    c = compare_tables(rep, csv_, ["smsp__sass_thread_inst_executed_op_ffma_pred_on.sum", "sm__inst_executed_pipe_tensor.sum"])
    assert c.ok and c.max_rel_diff == 0.0
    # and a real difference is caught
    assert not compare_tables(rep, csv_, ["gpu__time_duration.sum"], rtol=1e-3).ok


def test_nvtx_cell_parsing():
    cell = ('581  "<default domain>:decode:none:none:none:none:none:none"  '
            '"<default domain>:layer0:none:none:none:none:none:none"  "app:step:none:none:none:none:none:none" ')
    assert parse_nvtx_cell(cell) == ("decode", "layer0", "app@step")
    assert parse_nvtx_cell("") == ()
    assert parse_nvtx_cell('3:<default domain>:step:none:none:none:none:none:none', start_end=True) == ()
    assert parse_nvtx_cell('"3:<default domain>:step:none:none:none:none:none:none"', start_end=True) == ("step",)


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"hello,world\n1,2\n", "no header row"),
    (b"\x00\x01\x02binary", "NUL"),
    (b"NVR\x00garbage", "no kernel results"),
    (b"\xff\xfe\xfa", "not text"),
])
def test_wrong_files_give_one_line(tmp_path, content, words):
    p = tmp_path / "r.csv"
    p.write_bytes(content)
    with pytest.raises(ReportFormatError) as e:
        read_report(p)
    assert words in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_csv(tmp_path):
    text = path(B32_BASE).read_text()
    p = tmp_path / "t.csv"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(ReportFormatError, match="fields where the header has"):
        read_report(p)
    lines = text.splitlines(keepends=True)
    p.write_text("".join(lines[:2]))
    with pytest.raises(ReportFormatError, match="no kernel rows"):
        read_report(p)


def test_non_numeric_value_in_a_unit_column(tmp_path):
    rows = list(csv.reader(open(path(B32_BASE), newline="")))
    rows[3][rows[0].index("dram__bytes_read.sum")] = "12abc"
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    with pytest.raises(ReportFormatError, match="dram__bytes_read.sum.*not a number"):
        read_csv(tmp_path / "x.csv", text=buf.getvalue())


@pytest.mark.parametrize("cut", [0, 4, 100_000, 17_000_000])
def test_truncated_or_wrong_ncu_rep(tmp_path, cut):
    data = lzma.open(path(B32_REP)).read()
    p = tmp_path / "t.ncu-rep"
    p.write_bytes(data[:cut])
    with pytest.raises(ReportFormatError):
        read_report(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_report(tmp_path / "nope.ncu-rep")
    with pytest.raises(UserError, match="is a folder"):
        read_report(tmp_path)


def test_missing_ncu_report_module_gives_the_csv_hint(monkeypatch, tmp_path):
    from gpuprobe.ncu import ncu_report_loader

    monkeypatch.setattr(ncu_report_loader, "find_ncu_report", lambda: None)
    with pytest.raises(UserError) as e:
        ncu_report_loader.require_ncu_report(tmp_path / "x.ncu-rep")
    assert "ncu --import R.ncu-rep --csv --page raw --print-units base" in str(e.value)


def test_extras_ncu_report_beside_ncu_is_found(monkeypatch, tmp_path):
    """Without the PyPI module, ncu_report.py from <nsight>/extras/python beside the found ncu is used."""
    import sys

    from gpuprobe.ncu import ncu_report_loader, runner

    root = tmp_path / "nsight-compute-2025.3.1"
    (root / "extras" / "python").mkdir(parents=True)
    (root / "extras" / "python" / "ncu_report.py").write_text("FROM_EXTRAS = True\n")
    ncu = root / "ncu"
    ncu.write_text("#!/bin/sh\nexit 0\n")
    ncu.chmod(0o755)
    monkeypatch.setattr(runner, "find_ncu", lambda: runner.NcuInstall(ncu, "2025.3.1"))
    monkeypatch.setattr(ncu_report_loader, "_cached", None)

    def no_package():
        raise ImportError("ncu_report is not installed")

    monkeypatch.setattr(ncu_report_loader, "_import_installed", no_package)
    real = sys.modules.get("ncu_report")
    try:
        mod = ncu_report_loader.find_ncu_report()
        assert getattr(mod, "FROM_EXTRAS", False)
        assert mod.__file__ == str(root / "extras" / "python" / "ncu_report.py")
    finally:
        if real is not None:
            sys.modules["ncu_report"] = real
        if str(root / "extras" / "python") in sys.path:
            sys.path.remove(str(root / "extras" / "python"))
        ncu_report_loader._cached = None


@pytest.mark.parametrize("cell", ["1000", "1,000", "1_000", "5.", ".5", "1.5e3", "-2", "n/a", "", "inf", "1,2,3",
                                  "0x10", " 7 "])
def test_raw_page_numbers_follow_the_grammar_of_parse_number(cell):
    """The raw page's vectorised number reading accepts exactly what :func:`parse_number` accepts: a cell it
    refuses fails a column with a unit (one line) and turns a unitless column into text."""
    from gpuprobe.ncu.readers import ReportFormatError, read_csv
    from gpuprobe.ncu.units import parse_number

    text = ('ID,Kernel Name,gpu__time_duration.sum,launch__func_cache_config\n"","","nsecond",""\n'
            f'0,k,"{cell}","{cell}"\n1,k,2,3\n')
    try:
        want = parse_number(cell)
    except ValueError:
        want = "refused"
    if want == "refused":
        with pytest.raises(ReportFormatError, match="row 3"):
            read_csv("x.csv", text=text)
        df = read_csv("x.csv", text=text.replace(',"nsecond",', ',"",'))
        assert df["launch__func_cache_config"].tolist() == [cell, "3"]
        return
    df = read_csv("x.csv", text=text)
    got = df["gpu__time_duration.sum"].tolist()
    assert (math.isnan(got[0]) if want is None else got[0] == pytest.approx(want * 1e-9)) and got[1] == 2e-9
