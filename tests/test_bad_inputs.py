"""Bad input across every subcommand: exit code 2, one line on stderr that says what is wrong, no traceback.

Each case is a command line; ``{tmp}`` stands for a scratch folder holding the bad files made below."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from gpuprobe.cli import main

FIX = Path(__file__).parent / "fixtures"
NCU_CSV = FIX / "ncu" / "h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits.csv"
SEED = FIX / "seed_results" / "opt-2.7b_h100_sharegpt.csv"

GOOD_CONFIG = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256,
               "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
               "tie_word_embeddings": True}
BAD_CONFIGS = {
    "hidden_big": {"hidden_size": "big"}, "heads0": {"num_attention_heads": 0}, "vocab_null": {"vocab_size": None},
    "hidden_neg": {"hidden_size": -64}, "kv3": {"num_key_value_heads": 3}, "layers_frac": {"num_hidden_layers": 1.5},
    "no_layers": {"num_hidden_layers": "__drop__"}, "bool_hidden": {"hidden_size": True},
}


def _bad_files(tmp: Path) -> None:
    for name, change in BAD_CONFIGS.items():
        cfg = {**GOOD_CONFIG, **change}
        cfg = {k: v for k, v in cfg.items() if v != "__drop__"}
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps(cfg))
    (tmp / "notjson").mkdir()
    (tmp / "notjson" / "config.json").write_text("{not json")
    (tmp / "empty.csv").write_text("")
    (tmp / "garbage.ncu-rep").write_bytes(os.urandom(2048))
    (tmp / "garbage.csv").write_text("a,b\n1,2\n")
    (tmp / "text.sqlite").write_text("not a database")
    (tmp / "results").mkdir()
    (tmp / "results" / "results.jsonl").write_text(json.dumps({"point": 1, "status": "ok"}) + "\n")
    (tmp / "curve_nan.csv").write_text("batch,tokens_per_s\n1,nan\n8,100\n")
    (tmp / "curve_neg.csv").write_text("batch,tokens_per_s\n-1,100\n8,100\n")
    (tmp / "curve_cols.csv").write_text("bs,tps\n1,100\n")
    (tmp / "roof_bad.json").write_text('{"schema_version": 1, "points": "no"}')
    (tmp / "rules_bad.csv").write_text("pattern,op,example,engine\n(unclosed,gemm,x,y\n")
    (tmp / "afile").write_text("x")


CASES = [
    # roofline
    "roofline --model no-such-model", "roofline --model qwen2-0.5b --gpu no-such-gpu",
    "roofline --model qwen2-0.5b --dtype fp7", "roofline --model qwen2-0.5b --batch 0",
    "roofline --model qwen2-0.5b --batch 1,x", "roofline --model qwen2-0.5b --batch " + "9" * 400,
    "roofline --model qwen2-0.5b --context " + "9" * 400, "roofline --model qwen2-0.5b --context -5",
    "roofline --model qwen2-0.5b --context 1000000", "roofline --model qwen2-0.5b --mode timing",
    "roofline --model qwen2-0.5b --mode quantum", "roofline --model qwen2-0.5b --resume {tmp}",
    "roofline --model qwen2-0.5b --layers some", "roofline --model qwen2-0.5b --out {tmp}/afile/sub",
    "roofline --model qwen2-0.5b --kernels sometimes", "roofline --model qwen2-0.5b --gpu t4 --dtype bf16",
    *[f"roofline --model {{tmp}}/{name}" for name in BAD_CONFIGS], "roofline --model {tmp}/notjson",
    "roofline --model {tmp}/nowhere",
    # models, gpus
    "models no-such-model", "models {tmp}/kv3", "models {tmp}/hidden_big", "gpus --format yaml",
    # report
    "report {tmp}/nowhere.ncu-rep", "report {tmp}", "report {tmp}/empty.csv", "report {tmp}/garbage.ncu-rep",
    "report {tmp}/garbage.csv", "report {tmp}/text.sqlite", f"report {NCU_CSV} --by layer",
    f"report {NCU_CSV} --plot {{tmp}}/no/such/dir/x.png", f"report {NCU_CSV} --plot {{tmp}}/x.xyz",
    f"report {NCU_CSV} --plot {{tmp}}", f"report {NCU_CSV} --plot {{tmp}}/noextension",
    f"report {NCU_CSV} --gpu no-such-gpu", f"report {NCU_CSV} --measured-dram-tbps -1",
    f"report {NCU_CSV} --rules {{tmp}}/rules_bad.csv", f"report {NCU_CSV} --rules {{tmp}}/nowhere.csv",
    f"report {NCU_CSV} --dtype fp7",
    # diff
    f"diff {NCU_CSV} {{tmp}}/nowhere.csv", f"diff {NCU_CSV} {NCU_CSV} --fail-if-slower x",
    f"diff {NCU_CSV} {{tmp}}/roof_bad.json", f"diff {NCU_CSV} {NCU_CSV} --by layer",
    # advise
    "advise --from {tmp}/results", "advise --from {tmp}/nowhere.csv", "advise --from {tmp}/curve_nan.csv",
    "advise --from {tmp}/curve_neg.csv", "advise --from {tmp}/curve_cols.csv", "advise --from {tmp}/empty.csv",
    f"advise --from {SEED} --rule paper --min-efficiency 5", f"advise --from {SEED} --epsilon 3",
    f"advise --from {SEED} --latency-slo-ms 0", f"advise --from {SEED} --rule magic",
    f"advise --from {SEED} --gpu no-such-gpu", "advise --model no-such-model",
    # throughput, attention-bench, ceilings, replicate, profile (no GPU here)
    "throughput --model qwen2-0.5b", "throughput --model qwen2-0.5b --device cpu --batch x",
    "throughput --model no-such-model --device cpu", "throughput --model qwen2-0.5b --steps 0",
    "attention-bench --model qwen2-0.5b --batch x", "attention-bench --model qwen2-0.5b --knobs block_kv=7",
    "attention-bench --model no-such-model", "ceilings", "replicate --model qwen2-0.5b --replicas 0",
    "replicate --model qwen2-0.5b --replicas 1,2 --batch 1,2,3", "profile", "profile -- true",
    # selftest, wheelhouse, doctor
    "selftest --check no_such_check", "selftest --plan --gpu-name no-such-gpu",
    "wheelhouse --platform windows_xp --out {tmp}/wh", "wheelhouse --python 1.2.3.4 --out {tmp}/wh2",
    "doctor --no-such-flag",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    _bad_files(tmp)
    return tmp


def test_the_table_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("line", CASES)
def test_bad_input_is_one_line_exit_2(line, scratch, capsys, monkeypatch):
    monkeypatch.chdir(scratch)  # default output folders land in the scratch folder
    argv = shlex.split(line.replace("{tmp}", str(scratch)))
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}\nstdout: {out[-800:]}\nstderr: {err[-800:]}"
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
