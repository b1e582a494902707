"""Open an ``nsys export --type sqlite`` file and read its tables into plain pandas frames.

Columns are read by name (the kernel table grew from 25 to 40 columns over nsys versions and columns
moved), names resolved through ``StringIds``; text that is not UTF-8 is decoded with replacement
characters. An ``.sqlite.xz`` is decompressed to a temporary file that is always removed.

Frames, all times in nanoseconds as the export stores them:

* :func:`read_kernels`: one row per kernel launch (``CUPTI_ACTIVITY_KIND_KERNEL``);
* :func:`read_launch_calls`: CUDA runtime and driver API calls (``CUPTI_ACTIVITY_KIND_RUNTIME`` /
  ``DRIVER``) with their thread, time and correlation id;
* :func:`read_nvtx`: NVTX push/pop (event type 59) and start/end (60) ranges with their domain name.

``globalTid`` packs the process id in bits 24-47 and the thread id in bits 0-23; correlation ids are
unique per process only, so joins use the pair (process, correlation id).
"""
from __future__ import annotations

import contextlib
import lzma
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from gpuprobe.errors import UserError

KERNEL_TABLE = "CUPTI_ACTIVITY_KIND_KERNEL"
LAUNCH_TABLES = ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_DRIVER")
NVTX_TABLE = "NVTX_EVENTS"
VERSION_TABLES = ("META_DATA_EXPORT", "EXPORT_META_DATA")
GPU_TABLES = ("TARGET_INFO_GPU", "TARGET_INFO_CUDA_GPU", "TARGET_INFO_CUDA_DEVICE")
#: ``NVTX_EVENTS.eventType`` values (the export's ``ENUM_NSYS_EVENT_TYPE``).
NVTX_PUSH_POP, NVTX_START_END, NVTX_DOMAIN_CREATE = 59, 60, 75
SQLITE_MAGIC = b"SQLite format 3\x00"
PID_SHIFT = 24


class NsysFormatError(UserError):
    """A file that is not a readable Nsight Systems SQLite export, or holds no kernels."""


def process_of(global_tid: int) -> int:
    """``globalTid`` (or ``globalPid``) -> the process part, as a comparable integer."""
    return int(global_tid) >> PID_SHIFT


def _present(v) -> bool:
    """Not None and not NaN (SQL NULLs come back as either, depending on the column's other values)."""
    return v is not None and v == v


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


@contextlib.contextmanager
def open_export(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an export (``.sqlite`` or ``.sqlite.xz``); temporary files are removed."""
    p = Path(path)
    if not p.is_file():
        raise NsysFormatError(f"'{p}': no such file")
    tmp: str | None = None
    try:
        if p.suffix == ".xz":
            tmp = tempfile.mkdtemp(prefix="gpuprobe-nsys-")
            plain = Path(tmp) / p.with_suffix("").name
            try:
                with lzma.open(p) as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (lzma.LZMAError, EOFError, OSError) as e:
                raise NsysFormatError(f"'{p}': cannot decompress: {e}") from None
        else:
            plain = p
        with open(plain, "rb") as f:
            if f.read(16) != SQLITE_MAGIC:
                raise NsysFormatError(f"'{p}': not an SQLite file; export a report with "
                                      "`nsys export --type sqlite -o R.sqlite R.nsys-rep`")
        conn = sqlite3.connect(f"file:{plain}?mode=ro", uri=True)
        conn.text_factory = _text
        try:
            yield conn
        finally:
            conn.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")]


def _select(conn: sqlite3.Connection, table: str, wanted: dict[str, str]) -> pd.DataFrame:
    """``SELECT`` the columns of ``wanted`` (table column -> frame column) the table has; absent ones are None."""
    have = set(columns(conn, table))
    exprs = [f'"{src}" AS "{dst}"' if src in have else f'NULL AS "{dst}"' for src, dst in wanted.items()]
    return pd.read_sql_query(f"SELECT {', '.join(exprs)} FROM \"{table}\"", conn)


def strings(conn: sqlite3.Connection) -> dict[int, str]:
    """``StringIds``: id -> text (empty when the table is absent)."""
    if "StringIds" not in tables(conn):
        return {}
    return {int(i): v for i, v in conn.execute("SELECT id, value FROM StringIds")}


def _resolve(ids: pd.Series, names: dict[int, str]) -> list[str | None]:
    out: list[str | None] = []
    for v in ids:
        if not _present(v):
            out.append(None)
        elif isinstance(v, str):
            out.append(v)
        else:
            out.append(names.get(int(v)))
    return out


_KERNEL_COLUMNS = {
    "start": "start", "end": "end", "deviceId": "device", "contextId": "context", "streamId": "stream",
    "correlationId": "correlation_id", "globalPid": "global_pid", "demangledName": "demangled_id",
    "shortName": "short_id", "mangledName": "mangled_id", "gridX": "grid_x", "gridY": "grid_y",
    "gridZ": "grid_z", "blockX": "block_x", "blockY": "block_y", "blockZ": "block_z",
    "registersPerThread": "registers_per_thread", "graphNodeId": "graph_node_id", "graphId": "graph_id",
    "greenContextId": "green_context",
}


def read_kernels(conn: sqlite3.Connection, source: str | Path) -> pd.DataFrame:
    """Kernel launches sorted by GPU start: names resolved (``kernel_name`` demangled, ``short_name``,
    ``mangled_name``), ``process`` from ``globalPid``; raises :class:`NsysFormatError` without the table."""
    if KERNEL_TABLE not in tables(conn):
        raise NsysFormatError(f"{source} holds no CUDA kernels (no {KERNEL_TABLE} table): profile with --trace=cuda")
    df = _select(conn, KERNEL_TABLE, _KERNEL_COLUMNS)
    names = strings(conn)
    df["kernel_name"] = _resolve(df.pop("demangled_id"), names)
    df["short_name"] = _resolve(df.pop("short_id"), names)
    df["mangled_name"] = _resolve(df.pop("mangled_id"), names)
    df["kernel_name"] = [d or s or m or "" for d, s, m in zip(df["kernel_name"], df["short_name"], df["mangled_name"])]
    df["process"] = [process_of(g) if _present(g) else None for g in df.pop("global_pid")]
    return df.sort_values(["start", "end"], kind="stable").reset_index(drop=True)


def read_launch_calls(conn: sqlite3.Connection) -> pd.DataFrame:
    """Runtime and driver API calls: ``start``, ``end``, ``global_tid``, ``process``, ``correlation_id``,
    ``api`` (``runtime``/``driver``) and ``name`` (e.g. ``cudaLaunchKernel_v7000``, ``cudaGraphLaunch``)."""
    have = tables(conn)
    names = strings(conn)
    parts = []
    for table in LAUNCH_TABLES:
        if table not in have:
            continue
        df = _select(conn, table, {"start": "start", "end": "end", "globalTid": "global_tid",
                                   "correlationId": "correlation_id", "nameId": "name_id"})
        df["name"] = _resolve(df.pop("name_id"), names)
        df["api"] = "runtime" if table.endswith("RUNTIME") else "driver"
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["start", "end", "global_tid", "correlation_id", "name", "api", "process"])
    out = pd.concat(parts, ignore_index=True)
    out["process"] = [process_of(g) for g in out["global_tid"]]
    return out


def read_nvtx(conn: sqlite3.Connection) -> pd.DataFrame:
    """NVTX ranges: ``start``, ``end``, ``kind`` (``push_pop``/``start_end``), ``name`` (``text`` or the
    ``textId`` string), ``domain`` (its name, None for the default domain), ``global_tid``, ``process``,
    ``payload`` (the integer or floating payload, when one was recorded). Unclosed ranges end at +inf."""
    cols = ["start", "end", "kind", "name", "domain", "global_tid", "process", "payload"]
    if NVTX_TABLE not in tables(conn):
        return pd.DataFrame(columns=cols)
    df = _select(conn, NVTX_TABLE, {"start": "start", "end": "end", "eventType": "event_type", "text": "text",
                                    "textId": "text_id", "globalTid": "global_tid", "domainId": "domain_id",
                                    "int64Value": "i64", "uint64Value": "u64", "int32Value": "i32",
                                    "uint32Value": "u32", "doubleValue": "f64", "floatValue": "f32"})
    names = strings(conn)
    df["process"] = [process_of(g) if _present(g) else -1 for g in df["global_tid"]]
    def text_of(text, text_id) -> str | None:  # rows hold the text itself or its StringIds id
        if isinstance(text, str):
            return text
        return names.get(int(text_id)) if _present(text_id) else None

    domains: dict[tuple[int, int], str] = {}
    for row in df[df["event_type"] == NVTX_DOMAIN_CREATE].itertuples():
        name = text_of(row.text, row.text_id)
        if name and _present(row.domain_id):
            domains[(row.process, int(row.domain_id))] = name
    rng = df[df["event_type"].isin([NVTX_PUSH_POP, NVTX_START_END])].copy()
    rng["name"] = [text_of(t, i) for t, i in zip(rng["text"], rng["text_id"])]
    rng["name"] = rng["name"].fillna("")
    rng["kind"] = ["push_pop" if t == NVTX_PUSH_POP else "start_end" for t in rng["event_type"]]
    rng["domain"] = [domains.get((p, int(d))) if _present(d) and int(d) != 0 else None
                     for p, d in zip(rng["process"], rng["domain_id"])]
    payload = None
    for c in ("i64", "u64", "i32", "u32", "f64", "f32"):
        payload = rng[c] if payload is None else payload.combine_first(rng[c])
    rng["payload"] = payload
    rng["end"] = pd.to_numeric(rng["end"], errors="coerce").astype(float).fillna(float("inf"))
    return rng[cols].sort_values("start", kind="stable").reset_index(drop=True)


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


def read_info(conn: sqlite3.Connection) -> ExportInfo:
    have = tables(conn)
    meta: dict[str, str] = {}
    for t in VERSION_TABLES:
        if t in have and {"name", "value"} <= set(columns(conn, t)):
            meta.update({str(k): str(v) for k, v in conn.execute(f"SELECT name, value FROM {t}")})
    devices: dict[int, str] = {}
    for t in GPU_TABLES:
        if t not in have:
            continue
        cols = columns(conn, t)
        if "name" not in cols:
            continue
        key = next((c for c in ("id", "deviceId", "cudaId") if c in cols), None)
        rows = conn.execute(f"SELECT {key or 'rowid'}, name FROM {t}").fetchall()
        for i, (k, name) in enumerate(rows):
            if name and str(name).strip():
                devices.setdefault(int(k) if k is not None else i, str(name).strip())
        if devices:
            break
    return ExportInfo(meta.get("EXPORT_PRODUCT_VERSION"), meta.get("EXPORT_SCHEMA_VERSION"), devices)


def is_sqlite(path: str | Path) -> bool:
    """True when the file (or its .xz content) starts with SQLite's signature."""
    p = Path(path)
    try:
        opener = lzma.open if p.suffix == ".xz" else open
        with opener(p, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except (OSError, lzma.LZMAError, EOFError):
        return False

