"""Damaged Nsight Systems exports: every one is a clean refusal (one line naming the file) or a table whose
kernel count and total time agree with a plain SQL query of the damaged file; never a traceback, a hang
or a number absorbed in silence.

The damage is structural and made from real shared exports (tests/fixtures/nsys/): the file cut short,
pages overwritten, tables and columns dropped or renamed, text, reals and NULLs where integers belong,
ends before starts, a kernel table that is a view over a dropped table, a database locked by another
writer, names a million characters long, StringIds gone. A fixed seed; ``GPUPROBE_FUZZ_CASES`` sets the
count (default a small CI sample; the project's run used 700).
"""
from __future__ import annotations

import faulthandler
import lzma
import os
import random
import sqlite3
from pathlib import Path

import pytest

from gpuprobe.errors import UserError
from gpuprobe.nsys import load_trace

FIX = Path(__file__).resolve().parent / "fixtures" / "nsys"
BASES = ("nvtx-examples_cudf.sqlite.xz", "fuser_8fa9ec2_report1.sqlite.xz", "memfusion_report1.sqlite.xz",
         "gpu4_old_report2.sqlite.xz", "pipit_saxpy-mpi-cuda_nsys_perlmutter0.sqlite.xz",
         "extrap_con_kernel.sqlite.xz")
CASES = int(os.environ.get("GPUPROBE_FUZZ_CASES", "160"))
SEED = 25
K = "CUPTI_ACTIVITY_KIND_KERNEL"
#: Edits that change a unit, a sign or a row: they must be refused or warned about, never pass silently.
MUST_SPEAK = {"negative_duration", "null_start", "text_in_time", "real_in_time", "drop_stringids"}

_plain: dict[str, bytes] = {}


def _base(name: str) -> bytes:
    if name not in _plain:
        _plain[name] = lzma.open(FIX / name).read()
    return _plain[name]


def _sql_mutation(kind: str, rnd: random.Random):
    """A function of a connection that damages the database in one way."""
    def cols(con, table):
        return [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]

    def tables(con):
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]

    def pick_rows(con, table, n=3):
        ids = [r[0] for r in con.execute(f'SELECT rowid FROM "{table}"')]
        return rnd.sample(ids, min(n, len(ids))) if ids else []

    def run(con):
        if kind == "drop_table":
            t = rnd.choice([t for t in tables(con) if t != "sqlite_sequence"])
            con.execute(f'DROP TABLE "{t}"')
        elif kind == "rename_table":
            t = rnd.choice(tables(con))
            con.execute(f'ALTER TABLE "{t}" RENAME TO "{t}_old"')
        elif kind in ("drop_column", "rename_column"):
            t = rnd.choice([K, K, "StringIds", "NVTX_EVENTS", "CUPTI_ACTIVITY_KIND_RUNTIME"])
            if t not in tables(con):
                t = K
            c = rnd.choice(cols(con, t))
            try:
                if kind == "drop_column":
                    con.execute(f'ALTER TABLE "{t}" DROP COLUMN "{c}"')
                else:
                    con.execute(f'ALTER TABLE "{t}" RENAME COLUMN "{c}" TO "{c}_x"')
            except sqlite3.OperationalError:  # a PRIMARY KEY or NOT NULL column: rename the table instead
                con.execute(f'ALTER TABLE "{t}" RENAME TO "{t}_x"')
        elif kind in ("text_in_int", "null_in_int", "real_in_int"):
            t = rnd.choice([K, "CUPTI_ACTIVITY_KIND_RUNTIME", "NVTX_EVENTS", "StringIds"])
            if t not in tables(con):
                t = K
            c = rnd.choice([c for c in cols(con, t) if c not in ("text", "value", "jsonText")])
            v = {"text_in_int": "'x9'", "null_in_int": "NULL", "real_in_int": "0.5"}[kind]
            rows = pick_rows(con, t)
            _rebuild_without_not_null(con, t)
            con.executemany(f'UPDATE "{t}" SET "{c}" = {v} WHERE rowid = ?', [(r,) for r in rows])
        elif kind in ("negative_duration", "null_start", "text_in_time", "real_in_time"):
            rows = pick_rows(con, K, rnd.randint(1, 3))
            _rebuild_without_not_null(con, K)
            sql = {"negative_duration": 'UPDATE "{K}" SET "end" = start - 1000 WHERE rowid = ?',
                   "null_start": 'UPDATE "{K}" SET start = NULL WHERE rowid = ?',
                   "text_in_time": 'UPDATE "{K}" SET "end" = \'late\' WHERE rowid = ?',
                   "real_in_time": 'UPDATE "{K}" SET "end" = "end" + 0.25 WHERE rowid = ?'}[kind]
            con.executemany(sql.format(K=K), [(r,) for r in rows])
        elif kind == "kernel_view":
            con.execute(f'ALTER TABLE "{K}" RENAME TO k_base')
            con.execute(f'CREATE VIEW "{K}" AS SELECT * FROM k_base')
            con.execute("DROP TABLE k_base")
        elif kind == "huge_name":
            if "StringIds" in tables(con):
                r = pick_rows(con, "StringIds", 1)
                con.executemany("UPDATE StringIds SET value = ? WHERE rowid = ?",
                                [("k" * rnd.choice([70_000, 1_000_000]), x) for x in r])
        elif kind == "drop_stringids":
            if "StringIds" in tables(con):
                con.execute("DROP TABLE StringIds")
        elif kind == "wrong_nesting":
            if "NVTX_EVENTS" in tables(con):
                for r in pick_rows(con, "NVTX_EVENTS", 5):
                    con.execute('UPDATE NVTX_EVENTS SET "end" = start - 5 WHERE rowid = ?', (r,))
    return run


def _rebuild_without_not_null(con: sqlite3.Connection, table: str) -> None:
    """Copy ``table`` into one without NOT NULL or type constraints, so a damaging UPDATE is possible."""
    cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    con.execute(f'ALTER TABLE "{table}" RENAME TO "{table}__old"')
    con.execute(f'CREATE TABLE "{table}" ({", ".join(chr(34) + c + chr(34) for c in cols)})')
    con.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}__old"')
    con.execute(f'DROP TABLE "{table}__old"')


SQL_KINDS = ("drop_table", "rename_table", "drop_column", "rename_column", "text_in_int", "null_in_int",
             "real_in_int", "negative_duration", "null_start", "text_in_time", "real_in_time", "kernel_view",
             "huge_name", "drop_stringids", "wrong_nesting")
BYTE_KINDS = ("truncate", "overwrite_page", "flip_bytes", "zero_header")
KINDS = SQL_KINDS + BYTE_KINDS + ("locked",)


def make_case(i: int, folder: Path) -> tuple[str, str, Path]:
    """The ``i``-th damaged export (deterministic): (kind, base name, path)."""
    rnd = random.Random(SEED * 100_003 + i)
    kind = KINDS[i % len(KINDS)]
    base = BASES[(i // len(KINDS)) % len(BASES)]
    path = folder / f"case{i}_{kind}.sqlite"
    data = bytearray(_base(base))
    if kind in BYTE_KINDS:
        page = int.from_bytes(data[16:18], "big") or 65536
        if kind == "truncate":
            data = data[:rnd.randrange(100, len(data))]
        elif kind == "overwrite_page":
            p = rnd.randrange(0, max(1, len(data) // page))
            data[p * page:(p + 1) * page] = bytes(rnd.randrange(256) for _ in range(min(page, len(data) - p * page)))
        elif kind == "flip_bytes":
            for _ in range(rnd.randrange(1, 60)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif kind == "zero_header":
            data[16:100] = bytes(84)
        path.write_bytes(bytes(data))
        return kind, base, path
    path.write_bytes(bytes(data))
    if kind != "locked":
        con = sqlite3.connect(path)
        try:
            _sql_mutation(kind, rnd)(con)
            con.commit()
        finally:
            con.close()
    return kind, base, path


def independent(path: Path) -> tuple[int, float] | None:
    """Kernel count and total seconds by plain SQL; None when SQLite cannot answer."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            n, total = con.execute(f'SELECT count(*), total("end" - start) FROM "{K}"').fetchone()
        finally:
            con.close()
        return int(n), float(total) * 1e-9
    except sqlite3.Error:
        return None


def check_case(kind: str, path: Path) -> str:
    """Read one case; an assertion error on anything but a clean refusal or an agreeing result."""
    lock = None
    if kind == "locked":
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
    try:
        try:
            tr = load_trace(path)
        except UserError as e:
            msg = str(e)
            assert "\n" not in msg and path.name in msg, msg
            return "refused"
    finally:
        if lock is not None:
            lock.close()
    df = tr.kernels
    ref = independent(path)
    assert ref is not None, f"{kind}: read a file SQLite cannot query"
    assert len(df) == ref[0], (kind, len(df), ref)
    assert abs(float(df["time_s"].sum()) - ref[1]) <= 1e-9 * max(1.0, ref[1]) + 1e-12, (kind, ref)
    if kind in MUST_SPEAK:
        assert df.attrs.get("warnings"), f"{kind} passed in silence"
    return "read"


def run_cases(n: int, folder: Path) -> dict[str, int]:
    """Make and check ``n`` cases; a case that runs past 60 s is a hang (the process is dumped and ended)."""
    counts: dict[str, int] = {"refused": 0, "read": 0}
    failures: list[str] = []
    for i in range(n):
        kind, base, path = make_case(i, folder)
        faulthandler.dump_traceback_later(60, exit=True)
        try:
            counts[check_case(kind, path)] += 1
        except Exception as e:  # noqa: BLE001 - every failure is collected and shown
            failures.append(f"case {i} {kind} on {base}: {type(e).__name__}: {str(e)[:300]}")
        finally:
            faulthandler.cancel_dump_traceback_later()
        path.unlink(missing_ok=True)
    counts["failures"] = len(failures)
    assert not failures, "\n".join(failures[:15])
    return counts


def test_damaged_exports_are_refused_or_agree_with_sql(tmp_path):
    counts = run_cases(CASES, tmp_path)
    assert counts["refused"] and counts["read"], counts  # both outcomes occur: the mutations bite
    print(f"nsys fuzz: {CASES} cases, {counts}")


@pytest.mark.parametrize("kind", sorted(MUST_SPEAK))
def test_sign_and_row_edits_never_pass_silently(kind, tmp_path):
    i = KINDS.index(kind)
    kind, base, path = make_case(i, tmp_path)
    with pytest.raises(UserError) as e:
        load_trace(path)
    assert path.name in str(e.value) and "\n" not in str(e.value)


def test_a_locked_database_is_one_line(tmp_path):
    kind, _, path = make_case(KINDS.index("locked"), tmp_path)
    assert check_case(kind, path) in ("refused", "read")
