"""The nsys reader on the real exports in tests/fixtures/nsys/ (see its README): every figure checked
against an independent SQL query or CSV read written here."""
from __future__ import annotations

import csv
import importlib.util
import lzma
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gpuprobe.nsys import is_nsys_input, load_trace

FIX = Path(__file__).resolve().parent / "fixtures" / "nsys"
WITH_KERNELS = sorted(p.name for p in FIX.glob("*.sqlite.xz") if not p.name.startswith("dynamicvit"))
NO_KERNELS = FIX / "dynamicvit_nsys_profile.sqlite.xz"
DSOCR_DECODE = FIX / "per-stage_decode_cuda_gpu_kern_sum.csv"


def _plain(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name[:-3]
    with lzma.open(FIX / name) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def test_fixture_set_is_complete():
    assert len(WITH_KERNELS) == 10 and NO_KERNELS.is_file() and DSOCR_DECODE.is_file()


@pytest.mark.parametrize("name", WITH_KERNELS)
def test_kernel_count_and_time_equal_sql(name, tmp_path):
    db = _plain(name, tmp_path)
    con = sqlite3.connect(db)
    n, total_ns = con.execute("SELECT count(*), sum(\"end\" - start) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()
    first = con.execute("SELECT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.demangledName "
                        "ORDER BY k.start, k.\"end\" LIMIT 1").fetchone()[0]
    con.close()
    df = load_trace(FIX / name).kernels
    assert len(df) == n
    assert df["time_s"].sum() * 1e9 == pytest.approx(total_ns, rel=1e-9)
    assert df["kernel_name"].iloc[0] == first
    assert (df["time_s"] > 0).all() and (df["end_s"] >= df["start_s"]).all()
    # the ncu table's shape; counters a trace cannot have are missing, never 0
    for col in ("id", "kernel_name", "kernel_short", "grid", "block", "device", "stream", "nvtx_stack",
                "nvtx_ranges", "op", "layer", "start_s", "end_s", "correlation_id", "thread_id",
                "graph_node_id", "graph_id", "dram_bytes", "flops"):
        assert col in df.columns, col
    assert df["dram_bytes"].isna().all() and df["flops"].isna().all()
    assert df["graph_id"].isna().all()  # no fixture traced graphs node by node
    assert df.attrs["format"] == "nsys-sqlite" and df.attrs["source"] == str(FIX / name)
    assert all(isinstance(g, tuple) and len(g) == 3 for g in df["grid"])


@pytest.mark.parametrize("name", WITH_KERNELS)
def test_version_and_gpu_from_metadata(name, tmp_path):
    db = _plain(name, tmp_path)
    con = sqlite3.connect(db)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    meta = next((t for t in ("META_DATA_EXPORT", "EXPORT_META_DATA") if t in tables), None)
    version = con.execute(f"SELECT value FROM {meta} WHERE name = 'EXPORT_PRODUCT_VERSION'").fetchone()[0] if meta else None
    devices = {r[0] for r in con.execute("SELECT DISTINCT deviceId FROM CUPTI_ACTIVITY_KIND_KERNEL")}
    con.close()
    df = load_trace(FIX / name).kernels
    assert df.attrs["nsys_version"] == version
    assert set(df["device"].dropna().astype(int)) == devices
    expected = {"fuser_8fa9ec2": "H100", "fuser_ee4fcf3": "H200", "cuda-kernel": "A4500", "pipit_perl": "A100",
                "pipit_saxpy": "A100", "sc23": "T4", "memfusion": "3090", "gpu4": "T4", "extrap": "1060",
                "nvtx-examples": "RTX 8000"}
    key = next(k for k in expected if name.startswith(k))
    assert expected[key] in (df.attrs["device_name"] or "")


def test_xz_temporary_file_is_removed(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    load_trace(FIX / "gpu4_old_report2.sqlite.xz")
    assert list(tmp_path.iterdir()) == []


def _independent_stacks(db: Path) -> list[tuple[str, ...]]:
    """Launch-time join in plain SQL: the runtime call of each kernel (same process, same correlation id),
    then every push/pop range of that call's thread that encloses the call, outermost (earliest) first."""
    con = sqlite3.connect(db)
    kernels = con.execute(
        "SELECT k.rowid, r.globalTid, r.start, r.\"end\" FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "LEFT JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId "
        "AND (r.globalTid & ~16777215) = k.globalPid ORDER BY k.start, k.\"end\"").fetchall()
    out = []
    for _, tid, s, e in kernels:
        rows = con.execute(
            "SELECT n.start, n.\"end\", coalesce(n.text, si.value) FROM NVTX_EVENTS n "
            "LEFT JOIN StringIds si ON si.id = n.textId WHERE n.eventType = 59 AND n.globalTid = ? "
            "AND n.start <= ? AND n.\"end\" >= ? ORDER BY n.start, n.\"end\" DESC", (tid, s, e)).fetchall()
        out.append(tuple(r[2] for r in rows))
    con.close()
    return out


@pytest.mark.parametrize("name", ["fuser_8fa9ec2_report1.sqlite.xz", "fuser_ee4fcf3_report1.sqlite.xz"])
def test_fuser_nvtx_attribution_equals_launch_time_join(name, tmp_path):
    expected = _independent_stacks(_plain(name, tmp_path))
    df = load_trace(FIX / name).kernels
    assert [tuple(s) for s in df["nvtx_stack"]] == expected
    assert sum(1 for s in expected if s) >= 2  # the check means something: kernels do sit in ranges
    assert max(len(s) for s in expected) >= 3  # nested ones
    assert df["thread_id"].notna().all()


def test_domains_are_named(tmp_path):
    df = load_trace(FIX / "memfusion_report1.sqlite.xz").kernels
    stacks = [s for s in df["nvtx_stack"] if s]
    assert stacks and all(x.startswith("TensorRT@") for s in stacks for x in s)
    cudf = load_trace(FIX / "nvtx-examples_cudf.sqlite.xz").kernels  # NVTX rows mix text and textId
    names = {x for s in cudf["nvtx_stack"] for x in s}
    assert any(n.startswith("libcudf@") for n in names) and any(n.startswith("cudf_python@") for n in names)


def test_no_kernel_table_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "report", str(NO_KERNELS)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "no CUPTI_ACTIVITY_KIND_KERNEL table" in lines[0] and "--trace=cuda" in lines[0]
    assert str(NO_KERNELS) in lines[0]


def test_not_sqlite_is_one_line(tmp_path):
    bad = tmp_path / "x.sqlite"
    bad.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "report", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nsys export" in r.stderr


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_dsocr_decode_kern_sum_csv():
    rows = _csv_rows(DSOCR_DECODE)
    df = load_trace(DSOCR_DECODE).kernels
    assert df.attrs["format"] == "nsys-csv" and df.attrs["report"] == "cuda_gpu_kern_sum"
    assert len(df) == len(rows)
    assert df["time_s"].sum() * 1e9 == pytest.approx(sum(float(r["Total Time (ns)"]) for r in rows), rel=1e-12)
    assert int(df["instances"].sum()) == sum(int(r["Instances"]) for r in rows)
    gemv = [r for r in rows if "gemvx" in r["Name"]]
    assert df[df["kernel_short"] == "gemvx::kernel"]["time_s"].sum() * 1e9 == pytest.approx(
        sum(float(r["Total Time (ns)"]) for r in gemv))
    top = df.sort_values("time_s", ascending=False).iloc[0]
    assert top["kernel_short"] == "gemvx::kernel"
    flash = df[df["kernel_short"] == "flash_fwd_splitkv_kernel"]
    assert len(flash) == 1 and int(flash["instances"].iloc[0]) == 768
    assert flash["time_s"].iloc[0] == pytest.approx(4254167e-9)
    assert df["start_s"].isna().all() and df["grid"].isna().all() and df["dram_bytes"].isna().all()


def test_dsocr_decode_classes_from_rule_table():
    df = load_trace(DSOCR_DECODE).kernels
    assert set(df[df["kernel_short"] == "gemvx::kernel"]["op"]) == {"gemm"}
    assert set(df[df["kernel_short"] == "flash_fwd_splitkv_kernel"]["op"]) == {"attention"}


def test_without_rule_table_ops_are_other_short_names(monkeypatch):
    from gpuprobe import kernel_rules

    monkeypatch.setattr(kernel_rules, "classifier", lambda user_rules=None: (lambda name: None))
    df = load_trace(DSOCR_DECODE).kernels
    assert set(df["op_source"]) == {"none"}
    assert all(op == f"other:{s}" for op, s in zip(df["op"], df["kernel_short"]))


def test_cuda_gpu_trace_csv_matches_sqlite(tmp_path):
    """A cuda_gpu_trace CSV (the documented header, default ns units) written from a real export's rows
    reads to the same kernels as the export itself; memory operations are left out."""
    name = "memfusion_report1.sqlite.xz"
    db = _plain(name, tmp_path)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT k.start, k.\"end\" - k.start, k.correlationId, gridX, gridY, gridZ, blockX, blockY, "
                       "blockZ, k.deviceId, k.streamId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k "
                       "JOIN StringIds s ON s.id = k.demangledName ORDER BY k.start").fetchall()
    con.close()
    path = tmp_path / "trace_cuda_gpu_trace.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Start (ns)", "Duration (ns)", "CorrId", "GrdX", "GrdY", "GrdZ", "BlkX", "BlkY", "BlkZ",
                    "Reg/Trd", "StcSMem (MB)", "DymSMem (MB)", "Bytes (MB)", "Throughput (MBps)", "SrcMemKd",
                    "DstMemKd", "Device", "Ctx", "Strm", "Name"])
        w.writerow([rows[0][0] - 5, 3, 1, "", "", "", "", "", "", "", "", "", "0.1", "10", "Pageable", "Device",
                    "NVIDIA GeForce RTX 3090 (0)", 1, 7, "[CUDA memcpy Host-to-Device]"])
        for st, dur, corr, gx, gy, gz, bx, by, bz, dev, strm, nm in rows:
            w.writerow([st, dur, corr, gx, gy, gz, bx, by, bz, 32, 0, 0, "", "", "", "",
                        f"NVIDIA GeForce RTX 3090 ({dev})", 1, strm, nm])
    assert is_nsys_input(path)
    csv_df = load_trace(path).kernels
    sql_df = load_trace(FIX / name).kernels
    assert csv_df.attrs["report"] == "cuda_gpu_trace" and csv_df.attrs["device_name"] == "NVIDIA GeForce RTX 3090"
    assert len(csv_df) == len(sql_df)
    for col in ("kernel_name", "grid", "block", "correlation_id", "stream"):
        assert list(csv_df[col]) == list(sql_df[col]), col
    assert list(csv_df["time_s"]) == pytest.approx(list(sql_df["time_s"]))
    assert list(csv_df["start_s"]) == pytest.approx(list(sql_df["start_s"]))


def test_nvtx_kern_sum_csv(tmp_path):
    path = tmp_path / "r_nvtx_kern_sum.csv"
    path.write_text("NVTX Range,Style,PID,TID,NVTX Inst,Kern Inst,Total Time (ns),Avg (ns),Med (ns),Min (ns),"
                    "Max (ns),StdDev (ns),Kernel Name\n"
                    ":attention,PushPop,11,11,4,4,8000,2000.0,2000.0,1900,2100,80.0,\"void flash_fwd_kernel<128>(Params)\"\n"
                    ":qkv_proj,PushPop,11,11,4,8,12000,1500.0,1500.0,1400,1600,50.0,\"nvjet_hsh_64x8_64x16_4x1_v_bz_TNT\"\n")
    df = load_trace(path).kernels
    assert df.attrs["report"] == "nvtx_kern_sum"
    assert list(df["op"]) == ["attention", "qkv_proj"] and set(df["op_source"]) == {"nvtx"}
    assert list(df["instances"]) == [4, 8] and df["time_s"].sum() == pytest.approx(20e-6)


def test_load_report_dispatches_nsys_inputs():
    from gpuprobe.reports import load_report

    df = load_report(FIX / "sc23_openmp_report3.sqlite.xz")
    assert df.attrs["format"] == "nsys-sqlite" and len(df) == 50
    assert not is_nsys_input(Path(__file__).resolve().parent / "fixtures" / "ncu" / "missing.ncu-rep")


def test_time_values_are_finite_and_missing_stays_missing():
    df = load_trace(FIX / "nvtx-examples_cudf.sqlite.xz").kernels
    assert df.attrs["nsys_version"] is None  # 2020 export: no version table, still loads
    assert all(math.isfinite(x) for x in df["time_s"]) and df["graph_node_id"].isna().all()
    assert isinstance(df["layer"].dtype, pd.Int64Dtype)


def test_user_rules_are_matched_before_the_table(tmp_path):
    """`--rules`: a user's rule wins over the built-in table; kernels it does not name keep their class."""
    rules = tmp_path / "rules.csv"
    rules.write_text("pattern,op,example,engine\ngemvx,reduce,gemvx::kernel,test\n")
    df = load_trace(DSOCR_DECODE, rules=rules).kernels
    assert set(df[df["kernel_short"] == "gemvx::kernel"]["op"]) == {"reduce"}
    assert set(df[df["kernel_short"] == "gemvx::kernel"]["op_source"]) == {"rules"}
    assert set(df[df["kernel_short"].str.startswith("flash_fwd_splitkv")]["op"]) == {"attention"}
    assert df[df["op"] == "attention"]["time_s"].sum() == pytest.approx((4254167 + 2467978) * 1e-9)

def test_nvtx_payloads_land_on_their_ranges(tmp_path):
    """Payloads (integer or floating) stay with their own range, as an independent query reads them; those
    of rows that are not kept ranges (a range ending before it starts, a domain's creation) go with them."""
    from gpuprobe.nsys.sqlite_reader import open_export, read_nvtx

    db = _plain("fuser_ee4fcf3_report1.sqlite.xz", tmp_path)
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT rowid FROM NVTX_EVENTS WHERE eventType = 59 ORDER BY rowid")]
        conn.executemany("UPDATE NVTX_EVENTS SET int64Value = ? WHERE rowid = ?",
                         [(1000 + i, r) for i, r in enumerate(ids[::7])])
        conn.executemany("UPDATE NVTX_EVENTS SET doubleValue = ? WHERE rowid = ?",
                         [(0.5 + i, r) for i, r in enumerate(ids[3::11])])
        conn.execute('UPDATE NVTX_EVENTS SET "end" = start - 5 WHERE rowid = ?', (ids[7],))  # dropped, had one
        conn.execute("UPDATE NVTX_EVENTS SET int64Value = 77 WHERE eventType NOT IN (59, 60)")
        want = [r[0] for r in conn.execute(
            "SELECT CAST(coalesce(int64Value, uint64Value, int32Value, uint32Value, doubleValue, floatValue) "
            "AS REAL) FROM NVTX_EVENTS WHERE eventType IN (59, 60) AND globalTid IS NOT NULL AND "
            '("end" IS NULL OR "end" >= start) ORDER BY start, rowid')]
    with open_export(db) as conn:
        got = read_nvtx(conn, db, [])["payload"].tolist()
    assert sum(v is not None for v in want) > 100
    assert [None if math.isnan(v) else v for v in got] == want
