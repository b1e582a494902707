"""The output contract (docs/contracts.md, output contract; docs/cli.md), for every subcommand that prints rows:
``--format table|tsv|csv|json``, TSV when piped, strict JSON from one writer, and a column's name carrying its
unit with the values in that unit. Each command runs here on CPU where it can (recorded inputs); the ones that
need a GPU are checked at their parser and their renderer."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

from gpuprobe.cli import build_parser, main

FIX = Path(__file__).parent / "fixtures"
NCU_CSV = FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv"
NCU_B64 = FIX / "ncu" / "h100_qwen2-0.5b_decode2layers_b64_c1024_raw.csv.xz"
TRACE = FIX / "nsys" / "nvtx-examples_cudf.sqlite.xz"
SEED = FIX / "seed_results" / "opt-2.7b_h100_sharegpt.csv"

#: Every subcommand that prints rows (docs/cli.md); each must take --format with these choices.
PRINTING = ("roofline", "report", "diff", "advise", "throughput", "replicate", "ceilings", "doctor", "gpus",
            "models", "predict", "calibrate", "sweep")
FORMATS = ["table", "tsv", "csv", "json"]

#: A numeric column's name ends in its unit, or is a count or ratio that has none.
UNIT_SUFFIX = re.compile(r"(_s|_bytes|_bytes_per_s|_per_s|_pct|_pct_of_[a-z_]+|_flop_per_byte|_mhz|_w|_j|_joules_per_token|"
                         r"_gib|_tokens|_ratio|_err|_fraction)$")
DIMENSIONLESS = {"batch", "batches", "context", "kernels", "n_kernels", "kernel_id", "flops", "replicas",
                 "replicas_ok", "kernels_a", "kernels_b", "efficiency", "heads", "kv_heads", "head_dim", "m", "n", "k",
                 "rows", "shapes", "layers", "layers_profiled", "sm_count", "points", "done", "failed", "queued",
                 "running", "attempts", "num_params", "layer", "instances", "step", "steps", "hidden_size",
                 "num_layers", "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta"}


def _strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_units(rows: list[dict], command: str) -> None:
    numeric = {k for r in rows for k, v in r.items() if _is_number(v)}
    bad = sorted(k for k in numeric if k not in DIMENSIONLESS and not UNIT_SUFFIX.search(k))
    assert not bad, f"{command}: numeric columns without a unit in their name: {bad}"


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _cases(tmp: Path) -> dict[str, list[str]]:
    return {
        "roofline": ["roofline", "--model", "qwen2-0.5b", "--batch", "1,8", "--out", str(tmp / "roof")],
        "report ncu": ["report", str(NCU_CSV)],
        "report ncu by kernel": ["report", str(NCU_CSV), "--by", "kernel"],
        "report nsys": ["report", str(TRACE)],
        "report nsys by kernel": ["report", str(TRACE), "--by", "kernel"],
        "diff": ["diff", str(NCU_CSV), str(NCU_B64)],
        "advise": ["advise", "--from", str(SEED), "--rule", "paper", "--out", str(tmp / "adv")],
        "gpus": ["gpus"],
        "models": ["models"],
    }


CASE_NAMES = list(_cases(Path("/nonexistent")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_json_is_a_strict_list_of_rows_named_with_units(case, tmp_path, capsys):
    argv = _cases(tmp_path)[case]
    code, out, err = _run(argv + ["--format", "json"], capsys)
    assert code == 0, err
    rows = _strict(out)
    assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
    assert len({tuple(r) for r in rows}) == 1  # every row has the same columns, in the same order
    _check_units(rows, case)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_csv_and_tsv_hold_the_json_rows(case, tmp_path, capsys):
    argv = _cases(tmp_path)[case]
    _, out_json, _ = _run(argv + ["--format", "json"], capsys)
    rows = _strict(out_json)
    code, out_csv, err = _run(argv + ["--format", "csv"], capsys)
    assert code == 0, err
    parsed = list(csv.DictReader(io.StringIO(out_csv)))
    code, out_tsv, err = _run(argv + ["--format", "tsv"], capsys)
    assert code == 0, err
    tsv = list(csv.DictReader(io.StringIO(out_tsv), delimiter="\t"))
    assert list(parsed[0]) == list(rows[0]) == list(tsv[0])  # the same names, the units in them
    assert len(parsed) == len(rows) == len(tsv)
    for j, c, t in zip(rows, parsed, tsv):
        for k, v in j.items():
            if v is None:
                assert c[k] == "" and t[k] == "", (case, k)  # missing stays missing, never 0
            elif _is_number(v):
                assert math.isclose(float(c[k]), v, rel_tol=1e-12) and math.isclose(float(t[k]), v, rel_tol=1e-12)


@pytest.mark.parametrize("case", ["roofline", "report ncu", "diff", "advise", "gpus", "models"])
def test_piped_output_is_tsv_and_messages_go_to_stderr(case, tmp_path, capsys):
    """capsys is not a terminal: the default format is TSV, one header line, and nothing else on stdout."""
    code, out, err = _run(_cases(tmp_path)[case], capsys)
    assert code == 0, err
    lines = out.splitlines()
    width = len(lines[0].split("\t"))
    assert width > 2 and all(len(line.split("\t")) == width for line in lines)
    assert "wrote " not in out and "ANALYTIC" not in out


def test_every_printing_subcommand_takes_format():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [name for name in PRINTING if name in sub.choices and not any(
        "--format" in a.option_strings and list(a.choices) == FORMATS for a in sub.choices[name]._actions)]
    assert not missing, f"subcommands without --format {FORMATS}: {missing}"
    assert {"roofline", "report", "diff", "advise", "gpus", "models", "throughput", "replicate", "ceilings"} <= \
        set(sub.choices)


def test_roofline_json_document_is_strict(tmp_path, capsys):
    code, out, err = _run(["roofline", "--model", "qwen2-0.5b", "--batch", "1", "--json", "--out", str(tmp_path)],
                          capsys)
    assert code == 0, err
    doc = _strict(out)
    assert doc["schema_version"] == 1 and doc["points"] and "ANALYTIC" in err
