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
