"""Damaged Nsight Compute CSV pages: each is a clean refusal (one line naming the file) or a table whose
kernel count and total time agree with an independent reading of the damaged text (the csv module and a
unit table of its own); a unit, sign or row edit is refused or warned about, never read in silence.

Pages: the real H100 raw pages (display units and base units) and details page, and a details page of
another GPU (tests/fixtures/ncu/, tests/fixtures/ncu_external/). Damage: units respelled (``Mbyte`` as
``MB``), blanked or unknown; durations negated or zeroed; a field dropped from a row; the file cut; quotes,
NUL bytes and newlines inserted; a name a million characters long; rows duplicated or blanked. A fixed
seed; ``GPUPROBE_FUZZ_CASES_CSV`` sets the count (default a small CI sample; the project's run used 1,600).
"""
from __future__ import annotations

import csv
import io
import lzma
import math
import os
import random
from pathlib import Path

from gpuprobe.ncu import add_standard_columns
from gpuprobe.ncu.readers import ReportFormatError, read_csv

FIX = Path(__file__).resolve().parent / "fixtures"
BASES = (FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv",
         FIX / "ncu" / "h100_qwen2-0.5b_decode2layers_b64_c1024_raw.csv.xz",
         FIX / "ncu" / "h100_qwen2-0.5b_decode2layers_b64_c1024_details.csv.xz",
         FIX / "ncu_external" / "esmm_metrics_details.csv.xz")
CASES = int(os.environ.get("GPUPROBE_FUZZ_CASES_CSV", "200"))
SEED = 2515
TIME = "gpu__time_duration.sum"
_UNIT = {"nsecond": 1e-9, "ns": 1e-9, "nsec": 1e-9, "usecond": 1e-6, "us": 1e-6, "usec": 1e-6, "msecond": 1e-3,
         "ms": 1e-3, "msec": 1e-3, "second": 1.0, "s": 1.0, "sec": 1.0}
KINDS = ("unit_respell", "unit_blank", "unit_unknown", "negate_time", "zero_time", "drop_field", "cut",
         "insert_quote", "insert_nul", "insert_newline", "huge_name", "duplicate_row", "blank_row",
         "text_in_time")
#: Edits of a unit, a sign or a row: never read in silence.
MUST_SPEAK = {"unit_respell", "unit_blank", "unit_unknown", "negate_time", "zero_time", "drop_field", "text_in_time"}

_text: dict[Path, str] = {}


def _base(p: Path) -> str:
    if p not in _text:
        _text[p] = (lzma.open(p, "rt", encoding="utf-8-sig", newline="") if p.suffix == ".xz"
                    else open(p, encoding="utf-8-sig", newline="")).read()
    return _text[p]


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _write(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _header(rows):
    return next(i for i, r in enumerate(rows) if r and r[0] == "ID" and "Kernel Name" in r)


def make_case(i: int) -> tuple[str, str, str]:
    rnd = random.Random(SEED * 104_729 + i)
    kind = KINDS[i % len(KINDS)]
    base = BASES[(i // len(KINDS)) % len(BASES)]
    text = _base(base)
    rows = _rows(text)
    h = _header(rows)
    header = rows[h]
    details = "Metric Name" in header
    if details:
        mcol, ucol, vcol = header.index("Metric Name"), header.index("Metric Unit"), header.index("Metric Value")
        time_rows = [j for j in range(h + 1, len(rows)) if len(rows[j]) > vcol and rows[j][mcol] in ("Duration", TIME)]
        unit_of = lambda j: (j, ucol)  # noqa: E731
        value_of = lambda j: (j, vcol)  # noqa: E731
    else:
        tcol = header.index(TIME)
        time_rows = list(range(h + 2, len(rows)))
        unit_of = lambda j: (h + 1, tcol)  # noqa: E731
        value_of = lambda j: (j, tcol)  # noqa: E731
    j = rnd.choice(time_rows)
    if kind in ("unit_respell", "unit_blank", "unit_unknown"):
        r, c = unit_of(j)
        old = rows[r][c]
        rows[r][c] = {"unit_respell": {"nsecond": "nsec", "usecond": "usec", "msecond": "msec"}.get(old, old + "x"),
                      "unit_blank": "", "unit_unknown": "furlong"}[kind]
    elif kind in ("negate_time", "zero_time", "text_in_time"):
        for j in rnd.sample(time_rows, min(len(time_rows), rnd.randint(1, 3))):
            r, c = value_of(j)
            rows[r][c] = {"negate_time": "-" + rows[r][c].lstrip("-"), "zero_time": "0", "text_in_time": "fast"}[kind]
    elif kind == "drop_field":
        r = rnd.randrange(h + 1, len(rows))
        del rows[r][rnd.randrange(len(rows[r]))]
    elif kind == "huge_name":
        r = rnd.randrange(h + (1 if details else 2), len(rows))
        rows[r][header.index("Kernel Name")] = "k" * 1_000_000
    elif kind == "duplicate_row":
        r = rnd.randrange(h + (1 if details else 2), len(rows))
        rows.insert(r, list(rows[r]))
    elif kind == "blank_row":
        rows.insert(rnd.randrange(h + 1, len(rows) + 1), [])
    out = _write(rows)
    if kind == "cut":
        out = out[:rnd.randrange(0, len(out))]
    elif kind in ("insert_quote", "insert_nul", "insert_newline"):
        pos = rnd.randrange(len(out))
        out = out[:pos] + {"insert_quote": '"', "insert_nul": "\x00", "insert_newline": "\n"}[kind] + out[pos:]
    return kind, base.name, out


def independent(text: str) -> tuple[int, float | None]:
    """Kernel count and total seconds read with the csv module alone; time None when it cannot be had."""
    rows = _rows(text)
    h = _header(rows)
    header = rows[h]
    if "Metric Name" in header:
        mcol, ucol, vcol = header.index("Metric Name"), header.index("Metric Unit"), header.index("Metric Value")
        ids, timed, total, ok = set(), set(), 0.0, True
        for r in rows[h + 1:]:
            if not any(c.strip() for c in r):
                continue
            ids.add(r[0])
            if len(r) > vcol and r[mcol] in ("Duration", TIME) and r[0] not in timed:  # once per kernel
                timed.add(r[0])
                f = _UNIT.get(r[ucol].strip())
                try:
                    v = float(r[vcol].replace(",", ""))
                except ValueError:
                    ok = False
                    continue
                if f is None or v <= 0:
                    ok = False
                else:
                    total += v * f
        return len(ids), total if ok else None
    tcol = header.index(TIME)
    body = [r for r in rows[h + 2:] if any(c.strip() for c in r)]
    f = _UNIT.get(rows[h + 1][tcol].strip())
    try:
        vals = [float(r[tcol].replace(",", "")) for r in body]
    except (ValueError, IndexError):
        return len(body), None
    if f is None or any(v <= 0 for v in vals):
        return len(body), None
    return len(body), sum(vals) * f


def check_case(kind: str, name: str, text: str) -> str:
    try:
        df = read_csv(name, text=text)
    except ReportFormatError as e:
        assert "\n" not in str(e) and name in str(e), str(e)
        return "refused"
    n, total = independent(text)
    assert len(df) == n, (len(df), n)
    t = add_standard_columns(df)
    warned = bool(t.attrs.get("warnings"))
    ours = float(t["time_s"].sum())
    if total is not None:
        assert math.isclose(ours, total, rel_tol=1e-6), (ours, total)
    if kind in MUST_SPEAK:
        same = total is not None and math.isclose(ours, total, rel_tol=1e-6)
        assert warned or same, f"{kind} read in silence"
        if total is None:
            assert warned, f"{kind}: no time could be had, yet no warning"
    return "read"


def run_cases(n: int) -> dict[str, int]:
    counts = {"refused": 0, "read": 0}
    failures = []
    for i in range(n):
        kind, base, text = make_case(i)
        try:
            counts[check_case(kind, f"case{i}_{kind}.csv", text)] += 1
        except Exception as e:  # noqa: BLE001 - collect every failure
            failures.append(f"case {i} {kind} on {base}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, "\n".join(failures[:15])
    return counts


def test_damaged_csv_pages_are_refused_or_agree(capsys):
    counts = run_cases(CASES)
    assert counts["refused"] and counts["read"], counts
    print(f"ncu csv fuzz: {CASES} cases, {counts}")
