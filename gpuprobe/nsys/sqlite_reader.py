"""Open an ``nsys export --type sqlite`` file and read its tables as integer columns.

Columns are read by name (the kernel table grew from 25 to 40 columns over nsys versions and columns
moved). Rows come through ``fetchmany`` in chunks into numpy arrays: no Python object per value
survives a chunk, so memory is a small constant per row. Every integer column is read through
``typeof``: a NULL is a missing value (:data:`NULL`), text or a real number where an integer belongs is
counted and refused with the rows it sits in (the file is damaged), never read as a number. Strings
are resolved once per distinct ``StringIds`` id; text that is not UTF-8 is decoded with replacement
characters, and a string longer than :data:`MAX_STRING` characters is cut (with a warning).

Frames, all times in nanoseconds as the export stores them:

* :func:`read_kernels`: one row per kernel launch (``CUPTI_ACTIVITY_KIND_KERNEL``), names categorical;
* :func:`read_launch_calls`: the CUDA runtime and driver API calls that launched those kernels
  (``CUPTI_ACTIVITY_KIND_RUNTIME`` / ``DRIVER``) with their thread, time and correlation id;
* :func:`read_nvtx`: NVTX push/pop (event type 59) and start/end (60) ranges with their domain name.

``globalTid`` packs the process id in bits 24-47 and the thread id in bits 0-23; correlation ids are
unique per process only, so joins use the pair (process, correlation id).

Anything wrong with the file raises :class:`NsysFormatError`: one line naming the file, what is wrong,
and whether exporting the report again (``nsys export``) would help. :func:`open_export` turns any
``sqlite3`` error met while reading into such a line.
"""
from __future__ import annotations

import contextlib
import lzma
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from gpuprobe.errors import UserError
from gpuprobe.paths import DecompressError, decompress_xz, require_regular_file

KERNEL_TABLE = "CUPTI_ACTIVITY_KIND_KERNEL"
LAUNCH_TABLES = ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_DRIVER")
NVTX_TABLE = "NVTX_EVENTS"
VERSION_TABLES = ("META_DATA_EXPORT", "EXPORT_META_DATA")
GPU_TABLES = ("TARGET_INFO_GPU", "TARGET_INFO_CUDA_GPU", "TARGET_INFO_CUDA_DEVICE")
#: ``NVTX_EVENTS.eventType`` values (the export's ``ENUM_NSYS_EVENT_TYPE``).
NVTX_PUSH_POP, NVTX_START_END, NVTX_DOMAIN_CREATE = 59, 60, 75
SQLITE_MAGIC = b"SQLite format 3\x00"
PID_SHIFT = 24
#: Sentinels the ``typeof`` reads put in place of NULL and of a value that is not an integer.
NULL, BAD = np.iinfo(np.int64).min, np.iinfo(np.int64).min + 1
#: Rows per ``fetchmany``: bounds the Python objects alive at once (about 100 MB at 20 columns).
CHUNK_ROWS = 200_000
#: Longest string kept (characters); longer ones (a damaged or hostile file) are cut, with a warning.
MAX_STRING = 65_536
#: Largest decompressed ``.sqlite.xz`` (bytes); beyond it, decompress by hand and pass the ``.sqlite``.
MAX_XZ_BYTES = 64 << 30
_EXPORT_AGAIN = "export the report again (`nsys export --type sqlite -o R.sqlite R.nsys-rep`)"


class NsysFormatError(UserError):
    """A file that is not a readable Nsight Systems SQLite export, or holds no kernels."""


def damaged(source: object, what: str, again: bool = True) -> NsysFormatError:
    """The one-line error of a damaged export: the file, what is wrong, whether exporting again helps."""
    hint = f"; {_EXPORT_AGAIN} if you have the .nsys-rep" if again else ""
    return NsysFormatError(f"'{source}': {' '.join(str(what).replace(chr(0), ' ').split())}{hint}")


def process_of(global_tid: int) -> int:
    """``globalTid`` (or ``globalPid``) -> the process part, as a comparable integer."""
    return int(global_tid) >> PID_SHIFT


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _sqlite_problem(e: BaseException) -> str:
    if isinstance(e, UnicodeError):
        return "cannot be read as an SQLite export (its schema is not text): the file is damaged or truncated"
    msg = str(e).strip() or type(e).__name__
    if "locked" in msg or "busy" in msg:
        return f"the database is locked by another program ({msg}); wait for it to finish, or copy the file"
    if isinstance(e, (sqlite3.DatabaseError, pd.errors.DatabaseError)) and "no such" in msg:
        return f"a table or column the export should hold is missing or broken ({msg})"
    return f"cannot be read as an SQLite export ({msg}): the file is damaged or truncated"


#: A decompressed ``.sqlite.xz`` up to this size is read from memory; a bigger one from a file that is
#: given a name only for the instant it takes to open it.
IN_MEMORY_BYTES = 1 << 30


def _decompress(p: Path, dst) -> int:
    try:
        return decompress_xz(p, dst, MAX_XZ_BYTES)
    except DecompressError as e:
        raise damaged(p, str(e), again=False) from None


def _connect(p: Path) -> sqlite3.Connection:
    """A read-only connection to ``p`` (``.sqlite``), or to the content of ``p`` (``.sqlite.xz``). The
    decompressed copy is an unnamed temporary file (``O_TMPFILE``): a SIGKILLed process leaves nothing."""
    if p.suffix != ".xz":
        _check_magic(p, p)
        return sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=0.5)
    with tempfile.TemporaryFile(prefix="gpuprobe-nsys-") as tmp:
        size = _decompress(p, tmp)
        tmp.seek(0)
        if tmp.read(16) != SQLITE_MAGIC:
            raise _not_sqlite(p)
        if size <= IN_MEMORY_BYTES and hasattr(sqlite3.Connection, "deserialize"):
            tmp.seek(0)
            conn = sqlite3.connect(":memory:")
            conn.deserialize(tmp.read())
            conn.execute("PRAGMA query_only = 1")
            return conn
        folder = tempfile.mkdtemp(prefix="gpuprobe-nsys-")
        named = Path(folder) / p.with_suffix("").name
        try:
            os.link(f"/proc/self/fd/{tmp.fileno()}", named, follow_symlinks=True)
            return sqlite3.connect(f"file:{named}?mode=ro", uri=True, timeout=0.5)
        finally:  # the connection keeps the file open: its name is needed no longer
            with contextlib.suppress(OSError):
                named.unlink()
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _not_sqlite(p: Path) -> NsysFormatError:
    return NsysFormatError(f"'{p}': not an SQLite file; export a report with "
                           "`nsys export --type sqlite -o R.sqlite R.nsys-rep`")


def _check_magic(p: Path, source: Path) -> None:
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise damaged(source, f"cannot read ({e.strerror or e})", again=False) from None
    if head != SQLITE_MAGIC:
        raise _not_sqlite(source)


@contextlib.contextmanager
def open_export(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an export (``.sqlite`` or ``.sqlite.xz``); no decompressed copy outlives
    it. Any sqlite error inside the block becomes :class:`NsysFormatError`."""
    p = Path(path)
    require_regular_file(p, what="an nsys export")
    try:
        conn = _connect(p)
        conn.text_factory = _text
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except (sqlite3.Error, pd.errors.DatabaseError, UnicodeError) as e:  # sqlite's own message may not be UTF-8
        raise damaged(p, _sqlite_problem(e)) from None
    try:
        yield conn
    except (sqlite3.Error, pd.errors.DatabaseError, OverflowError, UnicodeError) as e:
        raise damaged(p, _sqlite_problem(e)) from None
    except MemoryError:
        raise damaged(p, "needs more memory than this machine has (row counts or strings beyond what "
                         "a trace of this size should hold)") from None
    finally:
        conn.close()


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            if isinstance(r[0], str)}


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info(\"{table}\")") if isinstance(r[1], str)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed(col: str) -> str:
    """SQL of an integer column read as integers only: NULL -> :data:`NULL`, anything else -> :data:`BAD`."""
    q = _quote(col)
    return f"CASE typeof({q}) WHEN 'integer' THEN {q} WHEN 'null' THEN {NULL} ELSE {BAD} END"


@dataclass
class IntColumns:
    """Integer columns of one table (``NULL`` where missing), where values were not integers, and the rows'
    rowids (read only when asked for: an error message, a warning)."""

    table: str
    values: dict[str, np.ndarray]
    _rowid: np.ndarray | None = None
    bad: dict[str, np.ndarray] = field(default_factory=dict)  # column -> rowids holding text/real
    source: tuple | None = None  # (connection, FROM/WHERE clause, rowid order) to read the rowids from
    positions: np.ndarray | None = None  # rows kept by take(), as positions in the table's order

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def __getitem__(self, col: str) -> np.ndarray:
        return self.values[col]

    @property
    def rowid(self) -> np.ndarray:
        if self._rowid is None:
            conn, tail, ordered = self.source
            if ordered:
                ids = _fetch(conn, f"SELECT rowid{tail} ORDER BY rowid", 1)[:, 0]
            else:
                ids = np.arange(1, conn.execute(f"SELECT count(*){tail}").fetchone()[0] + 1)
            self._rowid = ids if self.positions is None else ids[self.positions]
        return self._rowid

    def take(self, keep: np.ndarray) -> "IntColumns":
        base = np.arange(len(self)) if self.positions is None else self.positions
        return IntColumns(self.table, {k: v[keep] for k, v in self.values.items()},
                          self._rowid[keep] if self._rowid is not None else None, self.bad, self.source, base[keep])


def _rows_text(rowids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r)) for r in rowids[:limit])
    return f"rowid {shown}" + (f" and {len(rowids) - limit} more" if len(rowids) > limit else "")


class _NotIntegers(Exception):
    """A chunk held something other than integers and NULLs: read the table again, value by value."""


def _fetch(conn: sqlite3.Connection, sql: str, width: int, strict: bool = False) -> np.ndarray:
    """Rows of ``sql`` as an int64 array, ``CHUNK_ROWS`` at a time. ``strict``: raise :class:`_NotIntegers`
    when a chunk holds text or a real number (the fast path's check: numpy infers the chunk's type)."""
    cur = conn.execute(sql)
    parts: list[np.ndarray] = []
    while True:
        rows = cur.fetchmany(CHUNK_ROWS)
        if not rows:
            break
        if strict:
            try:
                a = np.array(rows)
            except (TypeError, ValueError, OverflowError):
                raise _NotIntegers from None
            if a.dtype != np.int64:
                raise _NotIntegers
            parts.append(a.reshape(len(rows), width))
            continue
        try:
            parts.append(np.array(rows, dtype=np.int64).reshape(len(rows), width))
        except (TypeError, ValueError, OverflowError):  # a rowid alias column holding text: read slowly
            parts.append(np.array([[v if isinstance(v, int) and -(1 << 63) <= v < (1 << 63) else BAD for v in r]
                                   for r in rows], dtype=np.int64).reshape(len(rows), width))
    return _stacked(parts, width)


def _stacked(parts: list[np.ndarray], width: int) -> np.ndarray:
    """The chunks as one array, each chunk freed once copied: the result's pages are touched only as they are
    filled, so the peak stays near one copy of the table (``np.concatenate`` holds two)."""
    out = np.empty((sum(len(p) for p in parts), width), dtype=np.int64)
    pos = 0
    parts.reverse()
    while parts:
        part = parts.pop()
        out[pos:pos + len(part)] = part
        pos += len(part)
        del part
    return out


def read_int_columns(conn: sqlite3.Connection, table: str, wanted: dict[str, str], where: str = "",
                     computed: dict[str, str] | None = None) -> IntColumns:
    """``SELECT`` the integer columns of ``wanted`` (table column -> name) that ``table`` has, in rowid order and
    in chunks, into int64 arrays; a column the table lacks is all :data:`NULL`. Non-integer values are
    :data:`BAD` and their rowids listed in ``bad``.

    The fast path reads ``ifnull(column, NULL)`` and lets numpy check each chunk is all integers; a table
    where one is not is read again through ``typeof``, which finds the values that are not."""
    have = set(columns(conn, table))
    present = [c for c in wanted if c in have]
    tail = f" FROM {_quote(table)}" + (f" WHERE {where}" if where else "")
    computed = computed or {}
    width = max(len(present) + len(computed), 1)
    extra = [f"({e})" for e in computed.values()]
    fast = ", ".join([f"ifnull({_quote(c)}, {NULL})" for c in present] + extra) or "0"
    typed = ", ".join([_typed(c) for c in present] + extra) or "0"
    ordered = True
    try:
        try:
            data = _fetch(conn, f"SELECT {fast}{tail} ORDER BY rowid", width, strict=True)
        except _NotIntegers:
            data = _fetch(conn, f"SELECT {typed}{tail} ORDER BY rowid", width)
    except sqlite3.OperationalError as e:
        if "rowid" not in str(e):
            raise
        ordered = False  # a view: no rowid
        data = _fetch(conn, f"SELECT {typed}{tail}", width)
    values: dict[str, np.ndarray] = {}
    for j, c in enumerate(present):
        values[wanted[c]] = data[:, j]  # a strided view: no copy
    for j, name in enumerate(computed, start=len(present)):
        values[name] = data[:, j]
    for c in wanted:
        if c not in have:
            values[wanted[c]] = np.full(len(data), NULL, dtype=np.int64)
    out = IntColumns(table, values, None, {}, source=(conn, tail, ordered))
    for name, v in values.items():
        hit = v == BAD
        if hit.any():
            out.bad[name] = out.rowid[hit]
    return out


def refuse_bad(source: object, cols: IntColumns, names: tuple[str, ...] | None = None) -> None:
    """Raise one line when any of ``names`` (default all) held text or a real number where an integer belongs."""
    for name, rowids in cols.bad.items():
        if names is None or name in names:
            raise damaged(source, f"{cols.table} column for '{name}' holds values that are not integers "
                                  f"({len(rowids)} row(s): {_rows_text(rowids)}): the table is damaged")


@dataclass
class StringTable:
    """``StringIds``, read once: sorted ids and their texts; ``cut`` counts texts cut at :data:`MAX_STRING`."""

    ids: np.ndarray
    texts: np.ndarray  # object array of str
    present: bool = True
    cut: int = 0

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per value of ``ids``: its text (object array, None where unknown) and a mask of ids not found."""
        out = np.full(len(ids), None, dtype=object)
        if len(self.ids) == 0:
            return out, ids != NULL
        pos = np.searchsorted(self.ids, ids)
        pos_c = np.minimum(pos, len(self.ids) - 1)
        found = (self.ids[pos_c] == ids) & (ids != NULL)
        out[found] = self.texts[pos_c[found]]
        return out, (~found) & (ids != NULL)


def read_strings(conn: sqlite3.Connection, source: object) -> StringTable:
    """``StringIds`` (id -> text); an absent table gives an empty one with ``present`` False."""
    if "StringIds" not in tables(conn):
        return StringTable(np.empty(0, np.int64), np.empty(0, object), present=False)
    have = set(columns(conn, "StringIds"))
    if not {"id", "value"} <= have:
        raise damaged(source, "its StringIds table lacks the columns id and value")
    rows = conn.execute(f"SELECT {_typed('id')}, substr(CAST(value AS TEXT), 1, {MAX_STRING}), "
                        f"length(CAST(value AS TEXT)) > {MAX_STRING} FROM StringIds").fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    texts = np.empty(len(rows), dtype=object)
    texts[:] = [r[1] if isinstance(r[1], str) else None for r in rows]
    cut = sum(1 for r in rows if r[2])
    keep = (ids != NULL) & (ids != BAD)
    order = np.argsort(ids[keep], kind="stable")
    return StringTable(ids[keep][order], texts[keep][order], cut=cut)


def categorical_strings(ids: np.ndarray, strings: StringTable) -> tuple[pd.Categorical, np.ndarray]:
    """A categorical of the texts of ``ids`` (each distinct id resolved once) and a mask of ids
    ``StringIds`` does not hold."""
    inv, uniq = pd.factorize(ids)  # one hash pass; each distinct id looked up once
    texts, missing = strings.lookup(np.asarray(uniq, dtype=np.int64))
    codes_u, cats = pd.factorize(pd.Series(texts, dtype=object), use_na_sentinel=True)
    codes = codes_u[inv] if len(uniq) else np.empty(0, dtype=np.intp)
    cat = pd.Categorical.from_codes(codes.astype(np.int32), categories=pd.Index(cats, dtype=object))
    return cat, missing[inv] if len(uniq) else np.zeros(0, bool)


_KERNEL_COLUMNS = {
    "start": "start", "end": "end", "deviceId": "device", "contextId": "context", "streamId": "stream",
    "correlationId": "correlation_id", "globalPid": "global_pid", "demangledName": "demangled_id",
    "shortName": "short_id", "mangledName": "mangled_id", "gridX": "grid_x", "gridY": "grid_y",
    "gridZ": "grid_z", "blockX": "block_x", "blockY": "block_y", "blockZ": "block_z",
    "registersPerThread": "registers_per_thread", "graphNodeId": "graph_node_id", "graphId": "graph_id",
    "greenContextId": "green_context",
}
_NAME_IDS = ("demangled_id", "short_id", "mangled_id")

@dataclass
class KernelRows:
    """Kernel launches sorted by GPU start: integer columns (:data:`NULL` where missing), names as
    categoricals (``kernel_name`` demangled, else short, else mangled; ``short_name``), ``process``."""

    cols: IntColumns
    kernel_name: pd.Categorical
    short_name: pd.Categorical
    process: np.ndarray
    warnings: list[str]

    def __len__(self) -> int:
        return len(self.cols)

    def __getitem__(self, col: str) -> np.ndarray:
        return self.cols[col]


def _names_with_text(conn: sqlite3.Connection, cols: IntColumns, col: str, src: str,
                     source: object) -> np.ndarray | None:
    """Old exports may hold a name as text in an id column: those rowids' texts (object array) or None."""
    rowids = cols.bad.pop(col, None)
    if rowids is None:
        return None
    texts = dict(conn.execute(f"SELECT rowid, substr(CAST({_quote(src)} AS TEXT), 1, {MAX_STRING}) FROM "
                              f"{_quote(cols.table)} WHERE typeof({_quote(src)}) = 'text'").fetchall())
    out = np.full(len(cols), None, dtype=object)
    hit = cols[col] == BAD
    out[hit] = [texts.get(int(r)) for r in cols.rowid[hit]]
    if any(v is None for v in out[hit]):
        raise damaged(source, f"{cols.table}.{src} holds values that are neither string ids nor text "
                              f"({_rows_text(cols.rowid[hit])})")
    return out


def read_kernels(conn: sqlite3.Connection, source: str | Path) -> KernelRows:
    """Kernel launches sorted by GPU start. Raises :class:`NsysFormatError` without the table, without
    start/end columns, with a missing or non-integer start/end, an end before its start, or (with kernels
    named by id) no ``StringIds`` table; a name id ``StringIds`` lacks is a warning naming the rows."""
    have = tables(conn)
    if KERNEL_TABLE not in have:
        raise NsysFormatError(f"'{source}' holds no CUDA kernels (no {KERNEL_TABLE} table): profile with "
                              "--trace=cuda (exporting again will not add them)")
    kcols = set(columns(conn, KERNEL_TABLE))
    missing = [c for c in ("start", "end") if c not in kcols]
    if missing:
        raise damaged(source, f"its {KERNEL_TABLE} table has no {' or '.join(missing)} column")
    if not kcols & {"demangledName", "shortName", "mangledName"}:
        raise damaged(source, f"its {KERNEL_TABLE} table has no kernel name column (demangledName, shortName)")
    cols = read_int_columns(conn, KERNEL_TABLE, _KERNEL_COLUMNS)
    warnings: list[str] = []
    text_names = {c: _names_with_text(conn, cols, c, src, source) for src, c in
                  (("demangledName", "demangled_id"), ("shortName", "short_id"), ("mangledName", "mangled_id"))
                  if src in kcols}
    refuse_bad(source, cols)
    for c in ("start", "end"):
        hit = cols[c] == NULL
        if hit.any():
            raise damaged(source, f"{KERNEL_TABLE}.{c} is empty in {int(hit.sum())} row(s) "
                                  f"({_rows_text(cols.rowid[hit])}): those kernels have no time")
    neg = cols["end"] < cols["start"]
    if neg.any():
        raise damaged(source, f"{int(neg.sum())} kernel(s) end before they start ({_rows_text(cols.rowid[neg])}): "
                              "negative durations; the table is damaged")
    order = np.lexsort((cols["end"], cols["start"]))
    cols = cols.take(order)
    text_names = {c: (v[order] if v is not None else None) for c, v in text_names.items()}
    any_ids = any(((cols[c] != NULL) & (cols[c] != BAD)).any() for c in _NAME_IDS)
    strings = read_strings(conn, source)
    if any_ids and not strings.present:
        raise damaged(source, "has no StringIds table: kernel names cannot be resolved (every kernel would "
                              "be one unnamed row)")
    if strings.cut:
        warnings.append(f"'{source}': {strings.cut} string(s) longer than {MAX_STRING} characters were cut")
    ids = {c: np.where(cols[c] == BAD, NULL, cols[c]) for c in _NAME_IDS}
    for c in _NAME_IDS:
        unknown = strings.lookup(np.unique(ids[c]))[1]
        if unknown.any():
            bad_ids = np.unique(ids[c])[unknown]
            hit = np.isin(ids[c], bad_ids)
            warnings.append(f"'{source}': {int(hit.sum())} kernel(s) name a {c.replace('_id', '')} string id "
                            f"that StringIds lacks ({_rows_text(cols.rowid[hit])}); their names are missing")
    if not any(v is not None for v in text_names.values()):
        # the usual export: one id per name; each distinct id resolved once
        name_ids = ids["demangled_id"].copy()
        for c in ("short_id", "mangled_id"):
            gap = name_ids == NULL
            if not gap.any():
                break
            name_ids[gap] = ids[c][gap]
        kernel_name, _ = categorical_strings(name_ids, strings)
        short_name, _ = categorical_strings(ids["short_id"], strings)
        if kernel_name.isna().any() or "" in set(kernel_name.categories):
            kernel_name = None  # a name id that resolves to nothing: resolve column by column below
    else:
        kernel_name = short_name = None
    if kernel_name is None:
        resolved: dict[str, np.ndarray] = {}
        for c in _NAME_IDS:
            cat, _ = categorical_strings(ids[c], strings)
            vals = np.asarray(cat.astype(object), dtype=object) if len(ids[c]) else np.empty(0, dtype=object)
            tn = text_names.get(c)
            if tn is not None:
                hit = tn != None  # noqa: E711 (elementwise)
                vals[hit] = tn[hit]
            resolved[c] = vals
        kernel_name = _categorical(_first_present(resolved["demangled_id"], resolved["short_id"],
                                                  resolved["mangled_id"]))
        short_name = _categorical(resolved["short_id"])
    gp = cols["global_pid"]
    process = np.where(gp == NULL, NULL, gp >> PID_SHIFT)
    return KernelRows(cols, kernel_name, short_name, process, warnings)


def _first_present(*arrays: np.ndarray) -> np.ndarray:
    """Elementwise the first of ``arrays`` that is neither None nor empty text ("" where none is)."""
    out = arrays[0].copy()
    for a in arrays[1:]:
        gap = pd.isna(out) | (out == "")
        if not gap.any():
            break
        out[gap] = a[gap]
    out[pd.isna(out)] = ""
    return out


def _categorical(values: np.ndarray) -> pd.Categorical:
    codes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    return pd.Categorical.from_codes(codes.astype(np.int32), categories=pd.Index(cats, dtype=object))


@dataclass
class LaunchCalls:
    """Runtime and driver API calls that launched kernels: int64 ``start``, ``end``, ``global_tid``,
    ``correlation_id``, ``process``; ``name`` categorical (e.g. ``cudaLaunchKernel_v7000``); ``api``."""

    start: np.ndarray
    end: np.ndarray
    global_tid: np.ndarray
    correlation_id: np.ndarray
    process: np.ndarray
    name: pd.Categorical
    api: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"start": self.start, "end": self.end, "global_tid": self.global_tid,
                             "correlation_id": self.correlation_id, "name": self.name, "api": self.api,
                             "process": self.process})


_CALL_COLUMNS = {"start": "start", "end": "end", "globalTid": "global_tid", "correlationId": "correlation_id",
                 "nameId": "name_id"}


def read_launch_calls(conn: sqlite3.Connection, source: object = "trace", kernels_only: bool = True) -> LaunchCalls:
    """The API calls whose correlation id some kernel carries (``kernels_only``; all calls otherwise); a call
    without a thread or correlation id, or ending before it starts, is left out with a warning."""
    have = tables(conn)
    strings: StringTable | None = None
    parts = []
    warnings: list[str] = []
    kernel_corr = KERNEL_TABLE in have and "correlationId" in columns(conn, KERNEL_TABLE)
    for table in LAUNCH_TABLES:
        if table not in have:
            continue
        tcols = set(columns(conn, table))
        if not {"start", "end", "globalTid", "correlationId"} <= tcols:
            warnings.append(f"'{source}': {table} lacks start, end, globalTid or correlationId; its calls are "
                            "not used to attribute kernels")
            continue
        where = (f"correlationId IN (SELECT correlationId FROM {KERNEL_TABLE})" if kernels_only and kernel_corr
                 else "")
        cols = read_int_columns(conn, table, _CALL_COLUMNS, where=where)
        refuse_bad(source, cols, ("start", "end", "global_tid", "correlation_id"))
        ok = (cols["start"] != NULL) & (cols["end"] != NULL) & (cols["global_tid"] != NULL) & \
            (cols["correlation_id"] != NULL)
        neg = ok & (cols["end"] < cols["start"])
        if neg.any():
            warnings.append(f"'{source}': {int(neg.sum())} call(s) of {table} end before they start "
                            f"({_rows_text(cols.rowid[neg])}); their kernels keep no NVTX range")
        if (~ok).any():
            warnings.append(f"'{source}': {int((~ok).sum())} call(s) of {table} lack a time, thread or correlation "
                            f"id ({_rows_text(cols.rowid[~ok])}); left out")
        cols = cols.take(ok & ~neg)
        strings = strings or read_strings(conn, source)
        ids = cols["name_id"].copy()
        ids[ids == BAD] = NULL
        name, _ = categorical_strings(ids, strings)
        parts.append((cols, name, "runtime" if table.endswith("RUNTIME") else "driver"))
    if not parts:
        e = np.empty(0, np.int64)
        return LaunchCalls(e, e, e, e, e, pd.Categorical([]), np.empty(0, object), warnings)
    cat = lambda a: np.concatenate([p[0][a] for p in parts])  # noqa: E731
    names = pd.api.types.union_categoricals([p[1] for p in parts], ignore_order=True) if len(parts) > 1 else parts[0][1]
    api = np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts])
    tid = cat("global_tid")
    return LaunchCalls(cat("start"), cat("end"), tid, cat("correlation_id"), tid >> PID_SHIFT,
                       pd.Categorical(names), api, warnings)


_NVTX_COLUMNS = {"start": "start", "end": "end", "eventType": "event_type", "textId": "text_id",
                 "globalTid": "global_tid", "domainId": "domain_id"}
_PAYLOAD = ("int64Value", "uint64Value", "int32Value", "uint32Value", "doubleValue", "floatValue")
NVTX_FRAME_COLUMNS = ["start", "end", "kind", "name", "domain", "global_tid", "process", "payload"]


def _empty_nvtx() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in ("start", "end", "payload") else object)
                         for c in NVTX_FRAME_COLUMNS})


def _add_texts(codes: np.ndarray, cats: pd.Index, rows: np.ndarray, texts: list[str]) -> tuple[np.ndarray, pd.Index]:
    """Codes of ``rows`` set to their own ``texts`` (each distinct text once), the categories grown to hold them."""
    t_codes, t_uniq = pd.factorize(np.asarray(texts, dtype=object))
    merged = cats.append(pd.Index(t_uniq, dtype=object)).unique()
    out = np.where(codes >= 0, merged.get_indexer(cats)[np.maximum(codes, 0)], -1).astype(np.int32) if len(cats) \
        else np.full(len(codes), -1, dtype=np.int32)
    out[rows] = merged.get_indexer(pd.Index(t_uniq, dtype=object))[t_codes]
    return out, pd.Index(merged, dtype=object)


def _texts_of(codes: np.ndarray, cats: pd.Index) -> np.ndarray:
    """The texts of a few codes (None for -1), as an object array."""
    out = np.full(len(codes), None, dtype=object)
    hit = codes >= 0
    out[hit] = cats.to_numpy(dtype=object)[codes[hit]]
    return out


def _empty_for_missing(codes: np.ndarray, cats: pd.Index) -> tuple[np.ndarray, pd.Index]:
    """A range without a name is named "" (a category of its own), never missing."""
    if not (codes < 0).any():
        return codes, cats
    at = cats.get_indexer([""])[0]
    if at < 0:
        cats, at = cats.append(pd.Index([""], dtype=object)), len(cats)
    return np.where(codes < 0, at, codes).astype(np.int32), cats


def read_nvtx(conn: sqlite3.Connection, source: object = "trace", warnings: list[str] | None = None) -> pd.DataFrame:
    """NVTX ranges sorted by start: ``start``, ``end`` (float ns; an unclosed range ends at +inf), ``kind``
    (``push_pop``/``start_end``), ``name`` (``text`` or the ``textId`` string), ``domain`` (its name, None
    for the default domain), ``global_tid``, ``process``, ``payload`` (the integer or floating payload when
    one was recorded). A range ending before it starts, or without a thread, is left out with a warning."""
    warnings = warnings if warnings is not None else []
    have = tables(conn)
    if NVTX_TABLE not in have:
        return _empty_nvtx()
    ncols = set(columns(conn, NVTX_TABLE))
    if not {"start", "eventType", "globalTid"} <= ncols:
        warnings.append(f"'{source}': {NVTX_TABLE} lacks start, eventType or globalTid; NVTX ranges are not used")
        return _empty_nvtx()
    # all rows: a filter costs more than it saves
    present = [c for c in _PAYLOAD if c in ncols]
    payload_expr = f"coalesce({', '.join(_quote(c) for c in present)})" if present else "NULL"
    computed = {"flags": ("(text IS NOT NULL)" if "text" in ncols else "0") + f" + 2 * ({payload_expr} IS NOT NULL)"}
    cols = read_int_columns(conn, NVTX_TABLE, _NVTX_COLUMNS, computed=computed)
    refuse_bad(source, cols, ("start", "event_type", "global_tid"))
    strings = read_strings(conn, source)
    tid_ids = cols["text_id"].copy()
    tid_ids[tid_ids == BAD] = NULL
    by_id, _ = categorical_strings(tid_ids, strings)
    name_codes, name_cats = by_id.codes.astype(np.int32), pd.Index(by_id.categories, dtype=object)
    has_text = (cols["flags"] & 1) == 1
    if has_text.any():  # the rows that hold their text, in the same (rowid) order
        texts = [r[0] for r in conn.execute(f"SELECT substr(CAST(text AS TEXT), 1, {MAX_STRING}) FROM {NVTX_TABLE} "
                                            "WHERE text IS NOT NULL ORDER BY rowid")]
        if len(texts) != int(has_text.sum()):
            raise damaged(source, f"{NVTX_TABLE} changed while it was read")
        name_codes, name_cats = _add_texts(name_codes, name_cats, has_text, texts)
    et = cols["event_type"]
    gtid = cols["global_tid"]

    def process_of(rows: np.ndarray) -> np.ndarray:
        return np.where(gtid[rows] == NULL, -1, gtid[rows] >> PID_SHIFT)

    dom = np.flatnonzero(et == NVTX_DOMAIN_CREATE)
    dkeys = _pair_keys(process_of(dom), cols["domain_id"][dom])
    dnames = pd.Series(_texts_of(name_codes[dom], name_cats), index=dkeys)
    dnames = dnames[~dnames.index.duplicated(keep="first")]
    rng = np.flatnonzero((et == NVTX_PUSH_POP) | (et == NVTX_START_END))
    start = cols["start"][rng]
    end = cols["end"][rng]
    no_thread = gtid[rng] == NULL
    bad_time = (start == NULL) | ((end != NULL) & (end != BAD) & (end < start)) | (end == BAD)
    drop = no_thread | bad_time
    del start, end, no_thread, bad_time
    if drop.any():
        warnings.append(f"'{source}': {int(drop.sum())} NVTX range(s) lack a start or thread, or end before they "
                        f"start ({_rows_text(cols.rowid[rng][drop])}); left out")
    keep_idx = rng[~drop]
    del rng, drop
    rng_dom = cols["domain_id"][keep_idx]
    rng_proc = process_of(keep_idx)
    domain_codes = np.full(len(keep_idx), -1, dtype=np.int32)
    domain_cats = pd.Index(pd.unique(dnames.dropna().to_numpy(dtype=object)), dtype=object)
    named = (rng_dom != NULL) & (rng_dom != BAD) & (rng_dom != 0)
    if named.any() and len(dnames):
        at = dnames.index.get_indexer(_pair_keys(rng_proc[named], rng_dom[named]))
        per_key = domain_cats.get_indexer(dnames.to_numpy(dtype=object))
        domain_codes[named] = np.where(at >= 0, per_key[np.maximum(at, 0)], -1)
    del rng_dom, named
    payload = np.full(len(keep_idx), np.nan)
    has_payload = np.flatnonzero((cols["flags"] & 2) == 2)
    if len(has_payload):
        got = [r[0] for r in conn.execute(f"SELECT CAST({payload_expr} AS REAL) FROM {NVTX_TABLE} WHERE "
                                          f"{payload_expr} IS NOT NULL ORDER BY rowid")]
        if len(got) != len(has_payload):
            raise damaged(source, f"{NVTX_TABLE} changed while it was read")
        at = np.minimum(np.searchsorted(keep_idx, has_payload), max(len(keep_idx) - 1, 0))
        kept = (keep_idx[at] == has_payload) if len(keep_idx) else np.zeros(len(has_payload), dtype=bool)
        values = np.array([v if isinstance(v, float) else np.nan for v in got], dtype=float)
        payload[at[kept]] = values[kept]
    kind = pd.Categorical.from_codes((et[keep_idx] != NVTX_PUSH_POP).astype(np.int8),
                                     categories=["push_pop", "start_end"])
    name_codes, name_cats = _empty_for_missing(name_codes[keep_idx], name_cats)
    start = cols["start"][keep_idx].astype(float)
    end = cols["end"][keep_idx]
    end = np.where(end == NULL, np.inf, end.astype(float))
    gtid = gtid[keep_idx]
    del cols, et, keep_idx  # the table's rows go before the frame is built: it holds copies of the kept ones
    df = pd.DataFrame({
        "start": start,
        "end": end,
        "kind": kind,
        "name": pd.Categorical.from_codes(name_codes, categories=name_cats).remove_unused_categories(),
        "domain": pd.Categorical.from_codes(domain_codes, categories=domain_cats).remove_unused_categories(),
        "global_tid": gtid,
        "process": rng_proc,
        "payload": payload,
    }, copy=False)
    if len(df) > 1 and not (np.diff(start) >= 0).all():
        df = df.sort_values("start", kind="stable").reset_index(drop=True)
    return df


def _pair_keys(a: np.ndarray, b: np.ndarray) -> pd.Index:
    """One hashable int64 key per (a, b) pair of non-negative values below 2**31; a MultiIndex otherwise."""
    if len(a) and (a.min() >= 0) and (b.min() >= 0) and (a.max() < 1 << 31) and (b.max() < 1 << 31):
        return pd.Index((a << 32) | b)
    return pd.MultiIndex.from_arrays([a, b])


@dataclass(frozen=True)
class ExportInfo:
    """What the file says about itself: nsys version and schema version (None in files before 2022),
    GPU names (TARGET_INFO_*), one per device id when known."""

    nsys_version: str | None
    schema_version: str | None
    device_names: dict[int, str]

    @property
    def device_name(self) -> str | None:
        names = list(dict.fromkeys(self.device_names.values()))
        return names[0] if len(names) == 1 else (" / ".join(names) if names else None)


def _as_int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def read_info(conn: sqlite3.Connection) -> ExportInfo:
    """Version and GPU names; a damaged metadata table gives None values, never an error."""
    have = tables(conn)
    meta: dict[str, str] = {}
    for t in VERSION_TABLES:
        if t in have and {"name", "value"} <= set(columns(conn, t)):
            for k, v in conn.execute(f"SELECT substr(CAST(name AS TEXT), 1, 256), substr(CAST(value AS TEXT), 1, 256) "
                                     f"FROM {t} LIMIT 10000"):
                if isinstance(k, str) and isinstance(v, str):
                    meta[k] = v
    devices: dict[int, str] = {}
    for t in GPU_TABLES:
        if t not in have:
            continue
        cols = columns(conn, t)
        if "name" not in cols:
            continue
        key = next((c for c in ("id", "deviceId", "cudaId") if c in cols), None)
        rows = conn.execute(f"SELECT {_quote(key) if key else 'rowid'}, substr(CAST(name AS TEXT), 1, 256) FROM {t} "
                            "LIMIT 4096").fetchall()
        for i, (k, name) in enumerate(rows):
            if isinstance(name, str) and name.strip():
                kk = _as_int(k)
                devices.setdefault(kk if kk is not None else i, name.strip())
        if devices:
            break
    return ExportInfo(meta.get("EXPORT_PRODUCT_VERSION"), meta.get("EXPORT_SCHEMA_VERSION"), devices)


def is_sqlite(path: str | Path) -> bool:
    """True when the regular file (or its .xz content) starts with SQLite's signature."""
    p = Path(path)
    try:
        if not p.is_file():
            return False
        opener = lzma.open if p.suffix == ".xz" else open
        with opener(p, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except (OSError, lzma.LZMAError, EOFError):
        return False
