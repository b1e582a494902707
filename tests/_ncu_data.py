"""Real H100 Nsight Compute fixtures (tests/fixtures/ncu), decompressed once per session and cached."""
from __future__ import annotations

import atexit
import functools
import lzma
import shutil
import tempfile
from pathlib import Path

NCU = Path(__file__).resolve().parent / "fixtures" / "ncu"
B64_RAW = "h100_qwen2-0.5b_decode2layers_b64_c1024_raw.csv"
B64_DETAILS = "h100_qwen2-0.5b_decode2layers_b64_c1024_details.csv"
B32_BASE = "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv"
B32_REP = "h100_qwen2-0.5b_layer0_b32_c512_metrics.ncu-rep.xz"
B32_SOL = "h100_qwen2-0.5b_layer0_b32_c512_sol.ncu-rep.xz"

_TMP = Path(tempfile.mkdtemp(prefix="gpuprobe-ncu-fixtures-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)  # the suite leaves nothing in the temporary folder


@functools.lru_cache(maxsize=None)
def path(name: str) -> Path:
    """A fixture file as a plain file (``.csv.xz`` copies are decompressed into a session folder)."""
    if (NCU / name).is_file():
        return NCU / name
    src = NCU / (name + ".xz")
    dst = _TMP / name
    with lzma.open(src) as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g)
    return dst


@functools.lru_cache(maxsize=None)
def loaded(name: str):
    """``gpuprobe.ncu.load_ncu_report`` of a fixture (cached: treat as read-only, copy before changing)."""
    from gpuprobe.ncu import load_ncu_report

    return load_ncu_report(path(name))


@functools.lru_cache(maxsize=None)
def raw(name: str):
    from gpuprobe.ncu.readers import read_report

    return read_report(path(name))


@functools.lru_cache(maxsize=None)
def metric_names() -> frozenset[str]:
    text = lzma.open(NCU / "ncu_query_metrics_gh100.txt.xz", "rt").read()
    return frozenset(l.split()[0] for l in text.splitlines() if l.strip() and "__" in l.split()[0])
