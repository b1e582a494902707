"""The batching advisor: B_opt under both rules on synthetic and real curves, memory and replicas, inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuprobe.advise import advisor
from gpuprobe.advise.advisor import advise, choose, choose_default, choose_paper, plan_memory, running_median3
from gpuprobe.cli import main
from gpuprobe.advise.curves import Curve, CurvePoint, curve_from_rows, load_curve
from gpuprobe.errors import UserError
from gpuprobe.specs.models import get_model

BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
GiB = 1024**3


@pytest.fixture(scope="module")
def seed_csv(fixtures_dir) -> Path:
    return fixtures_dir / "seed_results" / "opt-2.7b_h100_sharegpt.csv"


def curve(tps, batches=None, latency=None, **extra) -> Curve:
    batches = batches or BATCHES[: len(tps)]
    pts = [CurvePoint(b, float(t), None if latency is None else latency[i],
                      **{k: v[i] for k, v in extra.items()}) for i, (b, t) in enumerate(zip(batches, tps))]
    return Curve(pts, source="test")


def saturating(tmax=10000.0, k=48.0, batches=BATCHES):
    return [tmax * b / (b + k) for b in batches]


def naive_relative(tps, eps):
    best = max(tps)
    return next(i for i, t in enumerate(tps) if t >= (1 - eps) * best)


# --------------------------------------------------------------------------- the paper's rule on real data


def test_seed_curve_gives_b_opt_128_under_the_paper_rule(seed_csv):
    c = load_curve(seed_csv)
    ch = choose(c, "paper")
    assert ch.b_opt == 128
    assert ch.tokens_per_s_at_b_opt / ch.best_tokens_per_s == pytest.approx(0.805, abs=5e-4)
    # the two tests as the script computes them, by hand from the CSV
    assert ch.params["reference_batch_used"] == 32
    assert ch.params["latency_limit_s"] == pytest.approx(5 * 0.011086)
    eff = {v.batch: v.efficiency for v in ch.verdicts}
    assert eff[128] == pytest.approx(6586.435 / (128 * 225.126))
    assert eff[128] > 0.2 > eff[192]
    within = {v.batch: v.within_latency_limit for v in ch.verdicts}
    assert within[256] and not within[384]


def test_marginal_is_an_alias_of_paper(seed_csv):
    c = load_curve(seed_csv)
    m, p = choose(c, "marginal"), choose(c, "paper")
    assert m.b_opt == p.b_opt == 128 and m.rule == "paper"
    assert any("marginal" in n for n in m.notes)


def test_paper_rule_is_unit_free(seed_csv):
    c = load_curve(seed_csv)
    scaled = curve([t / 7.3 for t in c.tokens_per_s], c.batches, c.latencies()[0])
    assert choose_paper(scaled).b_opt == 128


def test_paper_rule_parameters_move_b_opt(seed_csv):
    c = load_curve(seed_csv)
    assert choose_paper(c, min_efficiency=0.1).b_opt == 256  # E(256)=0.130, latency still within 5x
    assert choose_paper(c, min_efficiency=0.0, latency_factor=100).b_opt == 512
    assert choose_paper(c, latency_factor=2.0).b_opt == 96  # 2 x 11.09 ms = 22.2 ms: 96 (20.4) in, 128 (25.2) out


def test_paper_reference_batch_tie_goes_to_the_smaller_batch():
    c = curve([100, 190, 260, 300], batches=[16, 48, 64, 80], latency=[0.01, 0.02, 0.03, 0.2])
    # batch 32 is equally far from 16 and 48: the script's argmin takes the first (16), so the limit is 50 ms
    ch = choose_paper(c, min_efficiency=0.0)
    assert ch.params["reference_batch_used"] == 16
    assert ch.b_opt == 64


def test_paper_rule_without_latency_derives_it_and_says_so():
    c = curve(saturating())
    ch = choose_paper(c)
    assert ch.latency_source == "derived"
    assert any("derived" in n for n in ch.notes)
    assert ch.b_opt is not None


# --------------------------------------------------------------------------- the default (relative) rule


def test_plateau_gives_the_smallest_batch_within_epsilon():
    tps = saturating()
    for eps in (0.02, 0.05, 0.1, 0.3):
        ch = choose_default(curve(tps), eps)
        assert ch.b_opt == BATCHES[naive_relative(tps, eps)]
        assert ch.tokens_per_s_at_b_opt >= (1 - eps) * max(tps)
    assert choose_default(curve(tps), 0.05).b_opt == 512 and choose_default(curve(tps), 0.1).b_opt == 256


def test_monotone_curve_without_plateau_gives_the_largest_batch():
    ch = choose_default(curve([100.0 * b for b in BATCHES]), 0.05)
    assert ch.b_opt == 512 and not any(v.outlier for v in ch.verdicts)


def test_single_slow_point_excludes_only_itself():
    clean = [1000, 1900, 3500, 6000, 8000, 9000, 9500, 9700, 9800, 9850]
    eps = 0.05
    assert choose_default(curve(clean), eps).b_opt == 64  # 9500 >= 0.95 x 9850
    noisy = list(clean)
    noisy[BATCHES.index(256)] = 3000.0  # a glitch in the plateau
    ch = choose_default(curve(noisy), eps)
    assert ch.b_opt == 64 and ch.bar_tokens_per_s == 9850
    assert [v.batch for v in ch.verdicts if v.outlier] == [256]
    assert any("256" in n and "outlier" in n for n in ch.notes)
    noisy_at_choice = list(clean)
    noisy_at_choice[BATCHES.index(64)] = 5000.0  # slow exactly where B_opt was: the next batch instead
    ch = choose_default(curve(noisy_at_choice), eps)
    assert ch.b_opt == 128 and [v.batch for v in ch.verdicts if v.outlier] == [64]


def test_single_lucky_point_neither_sets_the_bar_nor_is_chosen():
    tps = [1000, 1900, 3500, 9990, 7000, 8500, 9300, 9500, 9600, 9650]  # batch 8 is a spike
    ch = choose_default(curve(tps), 0.05)
    assert ch.b_opt == 64
    assert ch.bar_tokens_per_s == 9650
    assert ch.best_tokens_per_s == 9990  # still reported as measured
    assert [v.batch for v in ch.verdicts if v.outlier] == [8]


def test_non_monotone_tail_keeps_the_peak_as_the_bar():
    tps = [1000, 1900, 3500, 6000, 8000, 9000, 9500, 10000, 9300, 8000]  # falls after 128
    ch = choose_default(curve(tps), 0.05)
    assert ch.b_opt == 64 and ch.bar_tokens_per_s == 10000
    assert not any(v.outlier for v in ch.verdicts)
    assert choose_default(curve(tps), 0.01).b_opt == 128


def test_latency_slo_bounds_the_choice():
    tps = [100.0 * b for b in BATCHES]  # still rising: without an SLO, B_opt = 512
    lat = [0.004 * (1 + b / 64) for b in BATCHES]
    ch = choose_default(curve(tps, latency=lat), 0.05, latency_slo_s=0.0125)
    assert ch.b_opt == 128  # 0.0120 s at 128, 0.020 s at 256
    assert [v.batch for v in ch.verdicts if not v.meets_slo] == [256, 512]
    none = choose_default(curve(tps, latency=lat), 0.05, latency_slo_s=0.001)
    assert none.b_opt is None and "SLO" in none.reason and "4.06 ms" in none.reason


def test_single_point_is_its_own_b_opt():
    assert choose(curve([1234.0], batches=[64]), "default").b_opt == 64
    assert choose(curve([1234.0], batches=[1]), "paper").b_opt == 1
    # the script's E(B) = T(B) / (B * T(B_1)) taken literally: with B_1 = 64, E(64) = 1/64 < 0.2
    lone = choose(curve([1234.0], batches=[64]), "paper")
    assert lone.b_opt is None and any("1/64" in n for n in lone.notes)


def test_three_irregular_points_keep_a_steep_last_point():
    ch = choose_default(curve([2000, 15000, 100000], batches=[1, 8, 64]), 0.05)
    assert ch.b_opt == 64 and not any(v.outlier for v in ch.verdicts)


def test_three_points_are_never_judged_outliers():
    # too few points to tell noise from a real peak: the peak is the bar and batch 8 is B_opt
    ch = choose_default(curve([100, 800, 400], batches=[1, 8, 64]), 0.05)
    assert not any(v.outlier for v in ch.verdicts)
    assert ch.b_opt == 8 and ch.bar_tokens_per_s == 800


def test_outliers_need_five_points_and_a_deviation_beyond_the_noise():
    assert advisor.outlier_points([0, 0, 0, 9, 0, 0], 10) == [False] * 6  # within the noise
    assert advisor.outlier_points([0, 0, 0, 50, 0, 0], 10) == [False, False, False, True, False, False]
    assert advisor.outlier_points([0, 0, 50, 0], 10) == [False] * 4  # four points: no noise model


def test_memory_freed_is_capped_by_the_gpu():
    # batch 512 at a 32k context cannot be held on an 80 GB GPU: "freed" cannot exceed what exists
    spec = get_model("qwen2-0.5b")
    gpu = 80 * 10**9
    m = plan_memory(curve(saturating()), 64, spec=spec, context=32768, dtype="bf16", gpu_memory_bytes=gpu)
    assert m.kv_bytes_at_largest > gpu
    assert 0 <= m.memory_freed_bytes <= gpu - m.replica_bytes
    assert any("capped" in n for n in m.notes)


def test_epsilon_outside_zero_one_is_a_user_error():
    with pytest.raises(UserError, match="fraction"):
        choose_default(curve(saturating()), 5.0)


@given(st.lists(st.floats(1, 1e6), min_size=1, max_size=12))
def test_running_median_is_the_identity_on_monotone_sequences(xs):
    inc = sorted(xs)
    assert running_median3(inc) == inc
    assert running_median3(inc[::-1]) == inc[::-1]


@settings(max_examples=60)
@given(st.lists(st.floats(10, 1e5), min_size=1, max_size=10), st.floats(0.0, 0.5))
def test_default_rule_choice_is_within_epsilon_of_its_bar(tps, eps):
    ch = choose_default(curve(tps), eps)
    assert ch.b_opt is not None
    v = next(v for v in ch.verdicts if v.chosen)
    assert not v.outlier and v.tokens_per_s >= (1 - eps) * ch.bar_tokens_per_s - 1e-9
    assert ch.bar_tokens_per_s <= max(tps)
    assert all(not (w.batch < ch.b_opt and w.passes) for w in ch.verdicts)  # the smallest that passes


# --------------------------------------------------------------------------- memory, replicas, JSON


def test_memory_plan_counts_kv_weights_and_fixed_cost():
    spec = get_model("qwen2-0.5b")
    c = curve(saturating())
    kv_tok = spec.kv_bytes_per_token(2)
    m = plan_memory(c, 64, spec=spec, context=1024, dtype="bf16", gpu_memory_bytes=80 * 10**9)
    assert m.kv_bytes_at_b_opt == kv_tok * 64 * 1024 and m.kv_source == "analytic"
    assert m.kv_bytes_at_largest == kv_tok * 512 * 1024
    assert m.memory_freed_bytes == kv_tok * (512 - 64) * 1024 and m.memory_freed_basis == "kv_cache"
    replica = spec.weight_bytes(2) + kv_tok * 64 * 1024 + advisor.DEFAULT_FIXED_COST_BYTES
    assert m.replica_bytes == replica and m.fixed_cost_source == "default"
    assert m.replicas_that_fit == 80 * 10**9 // replica
    assert m.serving["max_concurrent_sequences"] == 64
    assert m.serving["gpu_memory_fraction"] == pytest.approx(replica / 80e9, abs=0.01)
    assert "--max-num-seqs 64" in m.serving["vllm_flags"]
    measured = plan_memory(c, 64, spec=spec, context=1024, gpu_memory_bytes=80 * 10**9,
                           fixed_cost_bytes=3 * GiB, fixed_cost_source="measured")
    assert measured.fixed_cost_source == "measured" and measured.replica_bytes == replica + 2 * GiB


def test_measured_memory_columns_win_over_analytic_figures():
    spec = get_model("qwen2-0.5b")
    kv = [b * 10**7 for b in BATCHES]
    peak = [2 * 10**9 + b * 2 * 10**7 for b in BATCHES]
    c = curve(saturating(), kv_cache_bytes=kv, memory_bytes=peak, weights_bytes=[10**9] * 10)
    m = plan_memory(c, 64, spec=spec, context=1024, gpu_memory_bytes=80 * 10**9)
    assert m.kv_source == "measured" and m.kv_bytes_at_b_opt == 64 * 10**7
    assert m.memory_freed_basis == "peak_memory" and m.memory_freed_bytes == (512 - 64) * 2 * 10**7
    assert m.weights_source == "measured"
    assert m.replica_bytes == peak[BATCHES.index(64)] + advisor.DEFAULT_FIXED_COST_BYTES  # peak > weights + KV


def test_json_holds_the_headline_keys_and_nulls_where_input_lacks(seed_csv):
    doc = advise(load_curve(seed_csv), "paper").to_json()
    for key in ("b_opt", "tokens_per_s_at_b_opt", "best_tokens_per_s", "kv_bytes_at_b_opt",
                "memory_freed_bytes", "replicas_that_fit"):
        assert key in doc
    assert doc["b_opt"] == 128 and doc["best_tokens_per_s"] == 8183.491
    assert doc["kv_bytes_at_b_opt"] is None and doc["memory_freed_bytes"] is None and doc["replicas_that_fit"] is None
    json.dumps(doc)
    full = advise(load_curve(seed_csv), "paper", spec=get_model("opt-2.7b"), context=512,
                  gpu_memory_bytes=64 * 10**9).to_json()
    assert full["kv_bytes_at_b_opt"] == get_model("opt-2.7b").kv_bytes_per_token(2) * 128 * 512
    assert full["replicas_that_fit"] >= 2


# --------------------------------------------------------------------------- input formats and their errors


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_csv_and_optional_columns(tmp_path):
    c = load_curve(write(tmp_path, "a.csv", "batch,tokens_per_s\n8,800\n1,100\n64,5000\n"))
    assert c.batches == [1, 8, 64] and c.latencies()[1] == "derived"
    c = load_curve(write(tmp_path, "b.csv", "batch,tokens_per_s,step_latency_s,memory_bytes\n1,100,0.01,2000000000\n"
                                            "8,800,0.01,2100000000\n"))
    assert c.has("step_latency_s") and c.point(8).memory_bytes == 2_100_000_000


def test_throughput_folder_csv_skips_failed_batches(tmp_path):
    header = ("batch,tokens_per_s,step_latency_s,step_latency_p90_s,weights_bytes,kv_cache_bytes,peak_memory_bytes,"
              "status,reason,mode,attention,context,model,dtype\n")
    rows = ("1,2400,0.000417,0.00043,988000000,12582912,1100000000,ok,,graph,triton,1024,qwen2-0.5b,bf16\n"
            "64,120000,0.000533,0.00055,988000000,805306368,1900000000,ok,,graph,triton,1024,qwen2-0.5b,bf16\n"
            "4096,,,,,,,oom,CUDA out of memory,graph,triton,1024,qwen2-0.5b,bf16\n")
    write(tmp_path, "throughput.csv", header + rows)
    c = load_curve(tmp_path)
    assert c.batches == [1, 64] and c.model == "qwen2-0.5b" and c.context == 1024 and c.dtype == "bf16"
    assert c.skipped == [{"batch": 4096, "status": "oom", "reason": "CUDA out of memory"}]
    assert c.point(64).kv_cache_bytes == 805306368 and c.point(64).memory_bytes == 1_900_000_000
    write(tmp_path, "throughput.csv", header.strip() + ",device\n" + rows.replace("bf16\n", "bf16,NVIDIA H100 80GB HBM3\n"))
    c = load_curve(tmp_path)
    assert c.gpu == "NVIDIA H100 80GB HBM3"
    m = advise(c, spec=get_model("qwen2-0.5b")).memory  # no --gpu: the GPU named in the file
    assert m.gpu_memory_bytes is None  # advise() takes memory from its caller; the CLI resolves the name


def test_results_jsonl_with_a_truncated_last_line(tmp_path):
    recs = [{"point": {"batch": b, "model": "qwen2-0.5b", "context": 1024}, "status": "ok", "reason": None,
             "result": {"tokens_per_s": 1000.0 * b, "step_latency_s": 0.001}, "seconds": 1.0} for b in (1, 2, 4)]
    recs.append({"point": {"batch": 8}, "status": "failed", "reason": "boom", "result": None, "seconds": 1.0})
    text = "\n".join(json.dumps(r) for r in recs) + '\n{"point": {"batch": 16}, "sta'
    write(tmp_path, "results.jsonl", text)
    c = load_curve(tmp_path)
    assert c.batches == [1, 2, 4] and c.skipped[0]["batch"] == 8 and c.model == "qwen2-0.5b"


def test_roofline_json_throughput_section(tmp_path):
    doc = {"schema_version": 1, "model": "qwen2-0.5b", "context": 1024, "dtype": "bf16", "points": [],
           "throughput": [{"batch": 1, "tokens_per_s": 2000}, {"batch": 8, "tokens_per_s": 15000}]}
    write(tmp_path, "roofline.json", json.dumps(doc))
    c = load_curve(tmp_path)
    assert c.batches == [1, 8] and c.model == "qwen2-0.5b"
    doc["throughput"] = {"1": 2000, "8": {"tokens_per_s": 15000, "step_latency_s": 0.0005}}
    c = load_curve(write(tmp_path, "r2.json", json.dumps(doc)))
    assert c.tokens_per_s == [2000, 15000]


def test_roofline_json_without_throughput_says_what_is_missing(tmp_path):
    doc = {"schema_version": 1, "points": [{"op": "attention", "batch": 8, "time_s": 1e-5}]}
    with pytest.raises(UserError, match="no throughput section.*batches 8"):
        load_curve(write(tmp_path, "roofline.json", json.dumps(doc)))


@pytest.mark.parametrize("text, match", [
    ("batch,tps\n1,2\n", "lacks column"),
    ("batch,tokens_per_s\n1,fast\n", "not a number"),
    ("batch,tokens_per_s\n1,100\n1,120\n", "more than once"),
    ("batch,tokens_per_s\n-4,100\n", "non-negative"),
    ("batch,tokens_per_s\n2.5,100\n", "positive integer"),
    ("batch,tokens_per_s\n4,0\n", "positive tokens_per_s"),
    ("batch,tokens_per_s\n", "no usable"),
    ("", "lacks column"),
])
def test_bad_csv_is_one_line_user_error(tmp_path, text, match):
    with pytest.raises(UserError, match=match) as e:
        load_curve(write(tmp_path, "bad.csv", text))
    assert "\n" not in str(e.value)


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_curve(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="holds none of"):
        load_curve(tmp_path)
    with pytest.raises(UserError, match="JSON"):
        load_curve(write(tmp_path, "x.json", "{not json"))
    with pytest.raises(UserError, match="every batch failed"):
        curve_from_rows([{"batch": 1, "status": "oom"}], source="t")


# --------------------------------------------------------------------------- the command line


def test_cli_json_on_the_seed_curve(seed_csv, tmp_path, capsys):
    rc = main(["advise", "--from", str(seed_csv), "--rule", "paper", "--json", "--out", str(tmp_path)])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["b_opt"] == 128 and doc["replicas_that_fit"] is None
    assert (tmp_path / "advise.png").stat().st_size > 10_000 and (tmp_path / "advice.json").exists()


def test_cli_table_with_model_and_gpu(seed_csv, tmp_path, capsys):
    rc = main(["advise", "--from", str(seed_csv), "--model", "opt-2.7b", "--context", "512", "--gpu", "h100-sxm",
               "--out", str(tmp_path), "--format", "table"])
    out = capsys.readouterr().out
    assert rc == 0 and "B_opt = 512" in out and "Replicas that fit" in out
    rc = main(["advise", "--from", str(seed_csv), "--model", "opt-2.7b", "--context", "512", "--gpu", "h100-sxm",
               "--out", str(tmp_path), "--format", "tsv"])
    out, err = capsys.readouterr()
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0][:4] == ["batch", "tokens_per_s", "of_best_pct", "step_latency_s"]
    chosen = [r for r in rows[1:] if r[rows[0].index("verdict")] == "B_opt"]
    assert rc == 0 and [int(r[0]) for r in chosen] == [512] and "B_opt = 512" in err  # the summary aside


def test_cli_without_gpu_or_file_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import gpuprobe.specs.gpus as gpus

    monkeypatch.setattr(gpus, "detect_gpu", lambda: None)
    assert main(["advise", "--model", "qwen2-0.5b", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no GPU" in err and "--from" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert main(["advise", "--from", str(tmp_path / "missing.csv")]) == 2
    assert main(["advise", "--from", "x.csv", "--epsilon", "2"]) == 2
