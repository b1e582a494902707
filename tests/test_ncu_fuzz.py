"""Corrupted CSV pages: the reader raises its own error type (a UserError) or reads them, never anything else."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _ncu_data import B32_BASE, path
from gpuprobe.ncu import attribute, add_standard_columns
from gpuprobe.ncu.readers import ReportFormatError, read_csv

TEXT = path(B32_BASE).read_text()
HEAD = TEXT[:20000]  # header, units row and the first kernels: keeps each example fast


def _mutate(text: str, ops: list[tuple[str, int, int, str]]) -> str:
    for kind, a, b, s in ops:
        a, b = a % (len(text) + 1), b % (len(text) + 1)
        a, b = min(a, b), max(a, b)
        if kind == "cut":
            text = text[:a]
        elif kind == "delete":
            text = text[:a] + text[b:]
        elif kind == "insert":
            text = text[:a] + s + text[a:]
        elif kind == "replace":
            text = text[:a] + s + text[a + len(s):]
    return text


_op = st.tuples(st.sampled_from(["cut", "delete", "insert", "replace"]), st.integers(0, 10**6), st.integers(0, 10**6),
                st.one_of(st.text(alphabet=',"\n\r;: abc0123456789.-%\x00\\', max_size=12),
                          st.sampled_from(["no data", "n/a", "1,234", '""', "\n,,\n"])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=1, max_size=4), st.booleans())
def test_corrupted_csv_only_raises_report_format_error(ops, whole):
    text = _mutate(TEXT if whole else HEAD, ops)
    try:
        df = read_csv("fuzz.csv", text=text)
    except ReportFormatError as e:
        assert "fuzz.csv" in str(e)
        return
    # what reads must also go through the rest of load_report without surprises
    attribute(add_standard_columns(df))


# ---------------------------------------------------------------- binary .ncu-rep: byte flips and cuts

import lzma  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from gpuprobe.cli import main  # noqa: E402

REP = Path(__file__).resolve().parent / "fixtures" / "ncu_external" / "esmm_profile_small.ncu-rep.xz"


def _rep_bytes() -> bytes:
    return lzma.open(REP).read()


def _cases(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` damaged copies of a real 4-kernel report: flips in the framing and anywhere, and cuts."""
    rnd = random.Random(seed)
    data = _rep_bytes()
    out = []
    for i in range(n):
        kind = ("flip-head", "flip-any", "cut", "flip-many")[i % 4]
        b = bytearray(data)
        if kind == "flip-head":
            pos = rnd.randrange(4, 4096)
            b[pos] ^= 1 << rnd.randrange(8)
        elif kind == "flip-any":
            pos = rnd.randrange(4, len(b))
            b[pos] = rnd.randrange(256)
        elif kind == "flip-many":
            for _ in range(rnd.randrange(2, 40)):
                b[rnd.randrange(4, len(b))] = rnd.randrange(256)
        else:
            b = b[: rnd.randrange(4, len(b))]
        out.append((f"{kind}-{i}", bytes(b)))
    return out


def _check_one(tmp_path: Path, label: str, data: bytes, capsys) -> int:
    from gpuprobe.ncu.rep_child import scan_blocks

    p = tmp_path / f"{label}.ncu-rep"
    p.write_bytes(data)
    rc = main(["report", str(p), "--format", "tsv"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, (label, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(p) in lines[0], (label, err)
        assert "gpuprobe-rep-" not in lines[0]  # names the user's file, never a temporary copy
    else:
        assert rc == 0, (label, rc, err)
        assert out.startswith("op\t")
        if not scan_blocks(data).complete:
            assert "looks truncated" in err and "kernel(s) read" in err, (label, err)
    return rc


def test_rep_damage_quick(tmp_path, capsys):
    """A few dozen damaged reports: each is read (with a warning when cut) or refused in one line."""
    rcs = [_check_one(tmp_path, label, data, capsys) for label, data in _cases(24, seed=1)]
    assert 2 in rcs  # some damage is found


def _read_one(tmp_path: Path, label: str, data: bytes) -> bool:
    """The reader alone (what `report` runs first): a table, or its own one-line error naming the file."""
    from gpuprobe.ncu.readers import ReportFormatError, read_report
    from gpuprobe.ncu.rep_child import scan_blocks

    p = tmp_path / f"{label}.ncu-rep"
    p.write_bytes(data)
    try:
        df = read_report(p)
    except ReportFormatError as e:
        msg = str(e)
        assert "\n" not in msg and str(p) in msg and "gpuprobe-rep-" not in msg, (label, msg)
        return False
    assert len(df) >= 1
    if not scan_blocks(data).complete:
        assert any("looks truncated" in w for w in df.attrs.get("warnings", [])), label
    return True


@pytest.mark.slow
def test_rep_damage_fuzz(tmp_path):
    """200 byte-level mutations read in a child process each: no exception but the reader's one-line
    error, no abort of the caller."""
    read = [_read_one(tmp_path, label, data) for label, data in _cases(200, seed=2)]
    assert read.count(False) > 10 and read.count(True) > 10


def test_native_abort_is_one_line(tmp_path, capsys, monkeypatch):
    """An ncu_report that aborts the process (as a failed protobuf check does) costs one line, exit 2."""
    from gpuprobe.ncu import ncu_report_loader

    fake = tmp_path / "fake" / "ncu_report.py"
    fake.parent.mkdir()
    fake.write_text("import os\n\ndef load_report(path):\n    os.abort()\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr(ncu_report_loader, "find_ncu_report", lambda: type("M", (), {"__file__": str(fake)}))
    p = tmp_path / "r.ncu-rep"
    p.write_bytes(_rep_bytes())
    assert main(["report", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"gpuprobe report: error: could not read '{p}': ncu_report aborted; the file is "
                                "damaged or from an unsupported version"]


def test_truncated_report_says_how_many_kernels(tmp_path, capsys):
    """Cut inside its last kernel's block: the kernels before it are read, and the warning says so."""
    from gpuprobe.ncu.rep_child import scan_blocks

    data = _rep_bytes()
    whole = scan_blocks(data)
    assert whole.complete and whole.results == 4
    cut = data[: len(data) - 100]
    assert not scan_blocks(cut).complete and scan_blocks(cut).results == 3
    p = tmp_path / "cut.ncu-rep"
    p.write_bytes(cut)
    rc = main(["report", str(p), "--format", "tsv"])
    out, err = capsys.readouterr()
    if rc == 0:
        assert "looks truncated" in err and "kernel(s) read" in err
    else:
        assert rc == 2 and "looks truncated" in err and len(err.strip().splitlines()) == 1
