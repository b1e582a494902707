"""Report tables that fit: at 80 and 120 columns no line is wider, no number is cut, headers are
abbreviated with a legend; piped output is tab-separated; csv and json carry the rows."""
from __future__ import annotations

import csv
import io
import json

import pytest

from _ncu_data import B64_RAW, path
from gpuprobe.cli import main
from gpuprobe.render.tables import Column, fmt_num, render_csv, render_json, render_text, render_tsv


def _tsv_rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("by", ["op", "kernel"])
def test_report_table_fits_and_keeps_every_number(width, by, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["report", str(path(B64_RAW)), "--by", by, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(["report", str(path(B64_RAW)), "--by", by, "--format", "table"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= width
    assert len(data) == (20 if by == "kernel" else 4)
    from gpuprobe.render.report_tables import report_columns

    cells = [c for line in lines for c in line.split()]
    for row in data:  # every raw value, as the table writes it in its unit, appears whole
        for col in report_columns(by):
            if col.numeric and col.machine_name in row and row[col.machine_name] is not None and \
                    col.key not in ("time_row",):
                assert col.fmt(row[col.machine_name]) in cells, (col.machine_name, row[col.machine_name])
    if width == 80:
        assert "µs = time in µs" in text  # abbreviated headers come with their legend
    assert "roofs:" in text and "(datasheet)" in text and "(ncu_peak)" in text


def test_piped_output_is_tab_separated(capsys):
    assert main(["report", str(path(B64_RAW))]) == 0  # capsys is not a terminal
    rows = _tsv_rows(capsys.readouterr().out)
    assert rows[0][:3] == ["op", "n_kernels", "time_s"] and {len(r) for r in rows} == {len(rows[0])}
    assert [r[0] for r in rows[1:]] == ["qkv_proj", "attention", "o_proj", "mlp"]


def test_by_kernel_rows_name_the_kernel(capsys):
    assert main(["report", str(path(B64_RAW)), "--by", "kernel"]) == 0
    rows = _tsv_rows(capsys.readouterr().out)
    i = rows[0].index("kernel")
    names = [r[i] for r in rows[1:]]
    assert names[0].startswith("nvjet_sm90_tst_") and any(n.startswith("vectorized_elementwise_kernel<") for n in names)
    assert len({n for n in names if n.startswith("elementwise_kernel<")}) == 2  # silu and mul stay two kernels


def test_missing_values_render_as_dash_and_null():
    cols = [Column("name", "name", numeric=False, name=True), Column("x", "value x", "x", "the value", fmt=fmt_num),
            Column("lim", "limiter", numeric=False)]
    rows = [{"name": "a", "x": float("nan"), "lim": None}, {"name": "b", "x": 141234.5, "lim": float("nan")}]
    text = render_text(cols, rows, 80)
    assert "141,234" in text and text.count(" -") >= 2 and "nan" not in text.lower()
    assert render_tsv(cols, rows).splitlines()[1] == "a\t\t"  # machine formats: missing is empty
    assert list(csv.reader(io.StringIO(render_csv(cols, rows))))[1] == ["a", "", ""]
    data = json.loads(render_json(cols, rows))
    assert data[0] == {"name": "a", "x": None, "lim": None} and data[1]["x"] == 141234.5


def test_narrow_terminal_splits_blocks_but_never_cuts_numbers():
    cols = [Column("k", "kernel", numeric=False, name=True)] + [
        Column(f"v{i}", f"value number {i}", f"v{i}", f"value {i}", fmt=fmt_num) for i in range(12)]
    rows = [{"k": "a_very_long_kernel_name<with, template, args>" * 2, **{f"v{i}": 123456789.0 + i for i in range(12)}}]
    text = render_text(cols, rows, 60)
    assert max(len(x) for x in text.splitlines()) <= 60
    for i in range(12):
        assert f"{123456789 + i:,}" in text
    assert text.count("a_very_long") >= 2  # the name column is repeated in each block
