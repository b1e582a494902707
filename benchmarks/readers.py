#!/usr/bin/env python3
"""The trace and ncu CSV readers at the scale of real traces, next to the plain baseline, in one run.

Traces of 10k, 100k, 1M and 5M kernels are built by replicating a real shared export (nvtx-examples
cuDF: 268 kernels, 1161 runtime calls, 892 NVTX ranges): each copy is shifted in time past the end of
the previous one and its correlation ids past the previous copy's, so every kernel still joins its own
launch call and every call still sits inside its own NVTX ranges. ncu CSV raw pages of 10k and 100k
kernels repeat the rows of the real H100 raw page (display units) with fresh launch IDs.

For each size it prints the wall time and peak memory (resident set of a fresh child process) of

* ``gpuprobe``: :func:`gpuprobe.load_report` (the whole per-kernel table: names, NVTX stacks, ops);
* ``baseline``: for a trace, ``pandas.read_sql_query("SELECT * FROM CUPTI_ACTIVITY_KIND_KERNEL")``;
  for a CSV page, ``pandas.read_csv`` and a groupby of the durations by kernel name.

::

    python benchmarks/readers.py                       # 10k, 100k, 1M, 5M kernels; CSV 10k, 100k
    python benchmarks/readers.py --kernels 10000,100000 --csv-kernels 10000 --workdir /tmp/traces
"""
from __future__ import annotations

import argparse
import lzma
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_TRACE = REPO / "tests" / "fixtures" / "nsys" / "nvtx-examples_cudf.sqlite.xz"
SOURCE_CSV = REPO / "tests" / "fixtures" / "ncu" / "h100_qwen2-0.5b_decode2layers_b64_c1024_raw.csv.xz"

#: Tables whose rows are replicated (with times and correlation ids shifted); others are copied once.
_TIMED = {"CUPTI_ACTIVITY_KIND_KERNEL": True, "CUPTI_ACTIVITY_KIND_RUNTIME": True,
          "CUPTI_ACTIVITY_KIND_MEMCPY": True, "CUPTI_ACTIVITY_KIND_MEMSET": True,
          "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION": True, "NVTX_EVENTS": False}
_NVTX_RANGES = (59, 60)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA src.table_info("{table}")')]


def replicate_trace(source: Path, dest: Path, kernels: int) -> int:
    """Write ``dest``: ``source`` (an nsys SQLite export, ``.xz`` or not) replicated to at least ``kernels``
    kernels; returns the number of kernels written."""
    with tempfile.TemporaryDirectory(prefix="gpuprobe-bench-") as tmp:
        plain = Path(tmp) / "source.sqlite"
        opener = lzma.open if source.suffix == ".xz" else open
        with opener(source, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        dest.unlink(missing_ok=True)
        conn = sqlite3.connect(dest)
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        conn.execute("ATTACH DATABASE ? AS src", (str(plain),))
        per_copy = conn.execute("SELECT count(*) FROM src.CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
        copies = max(1, -(-kernels // per_copy))
        lo, hi = conn.execute(
            "SELECT min(s), max(e) FROM (SELECT min(start) s, max(end) e FROM src.CUPTI_ACTIVITY_KIND_KERNEL "
            "UNION ALL SELECT min(start), max(end) FROM src.CUPTI_ACTIVITY_KIND_RUNTIME "
            "UNION ALL SELECT min(start), max(coalesce(end, start)) FROM src.NVTX_EVENTS)").fetchone()
        span = int(hi - lo) + 1_000_000
        corr = int(conn.execute("SELECT max(correlationId) FROM (SELECT max(correlationId) correlationId FROM "
                                "src.CUPTI_ACTIVITY_KIND_KERNEL UNION ALL SELECT max(correlationId) FROM "
                                "src.CUPTI_ACTIVITY_KIND_RUNTIME)").fetchone()[0]) + 1
        for name, sql in conn.execute("SELECT name, sql FROM src.sqlite_master WHERE type='table' "
                                      "AND name NOT LIKE 'sqlite_%'").fetchall():
            conn.execute(sql)
            cols = _columns(conn, name)
            if name not in _TIMED:
                conn.execute(f'INSERT INTO main."{name}" SELECT * FROM src."{name}"')
                continue
            exprs = []
            for c in cols:
                if c in ("start", "end"):
                    exprs.append(f'"{c}" + r.k * {span}')
                elif c == "correlationId" and _TIMED[name]:
                    exprs.append(f'"{c}" + r.k * {corr}')
                else:
                    exprs.append(f't."{c}"')
            where = f" WHERE t.eventType IN {_NVTX_RANGES}" if name == "NVTX_EVENTS" else ""
            conn.execute(f'WITH RECURSIVE r(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM r WHERE k < {copies - 1}) '
                         f'INSERT INTO main."{name}" SELECT {", ".join(exprs)} FROM r, src."{name}" t{where} '
                         f'ORDER BY r.k, t.rowid')
            if name == "NVTX_EVENTS":  # domain and thread-name events once
                conn.execute(f'INSERT INTO main."{name}" SELECT * FROM src."{name}" '
                             f'WHERE eventType NOT IN {_NVTX_RANGES}')
        conn.commit()
        conn.execute("DETACH DATABASE src")
        conn.close()
    return copies * per_copy


def replicate_csv(source: Path, dest: Path, kernels: int) -> int:
    """Write ``dest``: the raw CSV page ``source`` with its kernel rows repeated to ``kernels`` rows (fresh IDs)."""
    import csv
    import io

    opener = lzma.open if source.suffix == ".xz" else open
    with opener(source, "rt", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    h = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    header, units, body = rows[h], rows[h + 1], [r for r in rows[h + 2:] if r]
    with open(dest, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(header)
        w.writerow(units)
        for i in range(kernels):
            r = list(body[i % len(body)])
            r[0] = str(i)
            w.writerow(r)
    return kernels


# ---------------------------------------------------------------- measuring, each in a fresh process

_CHILD = r"""
import resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if kind == "gpuprobe":
    import gpuprobe
    df = gpuprobe.load_report(path)
    n = len(df)
    total = float(df["time_s"].sum())
elif kind == "sql":
    import sqlite3, pandas as pd
    conn = sqlite3.connect(path)
    df = pd.read_sql_query("SELECT * FROM CUPTI_ACTIVITY_KIND_KERNEL", conn)
    n = len(df)
    total = float((df["end"] - df["start"]).sum()) * 1e-9
elif kind == "csv":
    import pandas as pd
    df = pd.read_csv(path, skiprows=[1], thousands=",", low_memory=False)
    col = "gpu__time_duration.sum"
    g = pd.to_numeric(df[col], errors="coerce").groupby(df["Kernel Name"]).sum()
    n = len(df)
    total = float(g.sum()) * 1e-6  # the page's unit for this column: us
elif kind == "cli":
    from gpuprobe.cli import main
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["report", path, "--format", "tsv"])
    n, total = rc, float("nan")
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
print(f"{dt:.3f} {peak:.3f} {n} {total!r}")
"""


def measure(kind: str, path: Path) -> dict:
    """Run one reader in a fresh Python process: seconds, peak resident GB, rows, total kernel seconds."""
    out = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path)], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {path} failed:\n{out.stderr[-2000:]}")
    dt, peak, n, total = out.stdout.split()[-4:]
    return {"seconds": float(dt), "peak_gb": float(peak), "rows": int(n), "total_s": float(total)}


def _sizes(text: str) -> list[int]:
    from gpuprobe.parsing import parse_int_list

    return parse_int_list(text, "kernels")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kernels", default="10000,100000,1000000,5000000", help="trace sizes (kernels)")
    p.add_argument("--csv-kernels", default="10000,100000", help="ncu CSV page sizes (kernels)")
    p.add_argument("--workdir", default=None, help="where the built files go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the built files")
    p.add_argument("--cli", action="store_true", help="also time `gpuprobe report FILE` (the CLI's overhead)")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpuprobe-readers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'input':<24} {'kernels':>9} {'gpuprobe s':>10} {'peak GB':>8} {'baseline s':>10} {'peak GB':>8} "
          f"{'ratio':>6}" + (f" {'cli s':>7}" if args.cli else ""))
    try:
        for n in _sizes(args.kernels) if args.kernels else []:
            path = work / f"cudf_x{n}.sqlite"
            if not path.exists():
                t0 = time.perf_counter()
                replicate_trace(SOURCE_TRACE, path, n)
                print(f"  built {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
            base = measure("sql", path)
            ours = measure("gpuprobe", path)
            if ours["rows"] != base["rows"] or abs(ours["total_s"] - base["total_s"]) > 1e-6 * max(base["total_s"], 1):
                raise SystemExit(f"{path}: gpuprobe read {ours['rows']} kernels, {ours['total_s']} s; the kernel "
                                 f"table holds {base['rows']}, {base['total_s']} s")
            line = (f"{'nsys sqlite (cuDF x)':<24} {ours['rows']:>9,} {ours['seconds']:>10.2f} {ours['peak_gb']:>8.2f} "
                    f"{base['seconds']:>10.2f} {base['peak_gb']:>8.2f} {ours['seconds'] / base['seconds']:>6.2f}")
            if args.cli:
                line += f" {measure('cli', path)['seconds']:>7.2f}"
            print(line, flush=True)
            if not args.keep and n >= 1_000_000:
                path.unlink()
        for n in _sizes(args.csv_kernels) if args.csv_kernels else []:
            path = work / f"h100_raw_x{n}.csv"
            if not path.exists():
                replicate_csv(SOURCE_CSV, path, n)
            base = measure("csv", path)
            ours = measure("gpuprobe", path)
            line = (f"{'ncu csv raw (H100 x)':<24} {ours['rows']:>9,} {ours['seconds']:>10.2f} {ours['peak_gb']:>8.2f} "
                    f"{base['seconds']:>10.2f} {base['peak_gb']:>8.2f} {ours['seconds'] / base['seconds']:>6.2f}")
            if args.cli:
                line += f" {measure('cli', path)['seconds']:>7.2f}"
            print(line, flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    _ = resource  # peak memory is measured in the children
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
