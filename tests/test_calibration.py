"""The calibrated per-op model: fit with whole shapes held out, shipped calibrations, the analytic roofline."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gpuprobe.calibration import (calibration_from_frame, class_floor_s, calibration_from_results, load_calibration,
                                  op_class_and_shape, predict_decode_step, resolve_calibration, save_calibration,
                                  shipped_calibration)
from gpuprobe.calibration.fit import holdout_split
from gpuprobe.calibration.sources import read_measurements, shape_key, with_floors
from gpuprobe.calibration.store import shipped_path
from gpuprobe.errors import UserError
from gpuprobe.roofline.analytic_roofline import FLOOR_SOURCE, analytic_roofline
from gpuprobe.specs.gpus import get_gpu
from gpuprobe.specs.models import get_model

SHIPPED = ("a100-80gb", "h100-sxm", "h200", "b200", "l40s")
H100 = get_gpu("h100-sxm")


def synthetic_gemm(t0=3e-6, gpu=H100, seed=1) -> pd.DataFrame:
    """GEMM rows whose time is t0 + floor / eff(m) with a known efficiency curve (plus 1% noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, k in [(1024, 1024), (2048, 4096), (4096, 4096), (8192, 2048), (4096, 11008), (11008, 4096),
                 (1536, 896), (896, 4864), (12288, 4096), (6144, 6144)]:
        for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096):
            rows.append({"op": "gemm", "op_class": "gemm", "m": m, "n": n, "k": k})
    fr = pd.DataFrame(rows)
    fr["shape_key"] = [shape_key("gemm", r) for r in rows]
    fr = with_floors(fr.assign(measured_s=1.0), gpu, "bf16")
    eff = 0.45 + 0.4 * np.log2(fr["m"]) / 12
    fr["measured_s"] = (t0 + fr["floor_s"] / eff) * (1 + 0.01 * rng.standard_normal(len(fr)))
    return fr.drop(columns="floor_s")


def test_fit_recovers_a_known_efficiency_curve_on_heldout_shapes():
    cal = calibration_from_frame(synthetic_gemm(), gpu=H100, dtype="bf16", kernel_source="test",
                                 source={"kind": "measurements", "name": "synthetic"})
    h = cal.classes["gemm"].heldout
    assert h["shapes"] == 2 and h["rows"] == 24
    assert h["median_abs_err"] < 0.03 < h["floor_median_abs_err"]
    assert 2e-6 < cal.classes["gemm"].t0_s < 4e-6  # the fixed cost, found beside the efficiency curve


def test_holdout_takes_whole_shapes_only():
    fr = synthetic_gemm()
    mask = holdout_split(fr["shape_key"], 0.3)
    held, kept = set(fr.loc[mask, "shape_key"]), set(fr.loc[~mask, "shape_key"])
    assert held and kept and not held & kept
    assert (holdout_split(fr["shape_key"], 0.3) == mask).all()  # deterministic
    with pytest.raises(UserError):
        holdout_split(fr["shape_key"], 1.0)


def test_prediction_is_never_below_the_floor_and_round_trips(tmp_path):
    fr = synthetic_gemm()
    cal = calibration_from_frame(fr, gpu=H100, dtype="bf16", kernel_source="test",
                                 source={"kind": "measurements", "name": "synthetic"})
    path = save_calibration(cal, tmp_path / "c.json")
    back = load_calibration(path)
    for m, n, k in [(1, 4096, 4096), (3, 5000, 700), (1 << 16, 1 << 17, 64), (1, 32, 32)]:
        floor = max(2 * m * n * k / 989.4e12, (m * k + n * k + m * n) * 2 / 3.35e12)
        p = cal.predict("gemm", {"m": m, "n": n, "k": k}, floor)
        assert p >= floor and p == pytest.approx(back.predict("gemm", {"m": m, "n": n, "k": k}, floor), rel=1e-3)
    assert cal.predict("decode_attention", {"batch": 1, "context": 8, "heads": 8, "kv_heads": 8, "head_dim": 64},
                       1e-6) == 1e-6  # a class it lacks: the floor


@pytest.mark.parametrize("gpu", SHIPPED)
def test_shipped_calibrations_are_small_and_attributed(gpu):
    p = shipped_path(gpu, "bf16")
    assert p.stat().st_size < 150_000
    cal = shipped_calibration(gpu, "bf16")
    assert cal.gpu == gpu and cal.source["license"] == "Apache-2.0" and "aiconfigurator" in cal.label
    assert set(cal.classes) == {"gemm", "decode_attention", "elementwise"}
    assert cal.heldout_median_abs_err("gemm") < 0.08 and cal.heldout_median_abs_err("decode_attention") < 0.10
    assert cal.heldout_median_abs_err("elementwise") is None  # the package's stated constants, not a fit
    fp16 = shipped_calibration(gpu, "fp16")
    assert fp16.served_as == "fp16" and "served by the bf16" in fp16.note and "serving fp16" in fp16.label
    assert shipped_calibration(gpu, "fp32") is None


def test_refit_from_installed_tables_reproduces_shipped_parameters():
    pytest.importorskip("aiconfigurator_core")
    from gpuprobe.calibration.shipped import fit_shipped

    refit = fit_shipped("a100-80gb", classes=("gemm",)).classes["gemm"].to_dict()
    shipped = json.loads(shipped_path("a100-80gb", "bf16").read_text())["classes"]["gemm"]
    assert refit["grid"]["axes"] == shipped["grid"]["axes"]
    np.testing.assert_allclose(refit["grid"]["log_inv_efficiency"], shipped["grid"]["log_inv_efficiency"], atol=2e-3)
    assert refit["t0_s"] == pytest.approx(shipped["t0_s"], rel=1e-6)
    assert refit["heldout"] == pytest.approx(shipped["heldout"], abs=2e-3)


def test_resolve_calibration_rejects_another_gpu_or_dtype(tmp_path):
    assert resolve_calibration(None, "h200", "bf16").gpu == "h200"
    assert resolve_calibration("none", "h200", "bf16") is None
    assert resolve_calibration("auto", "a10", "bf16") is None
    with pytest.raises(UserError, match="calibration of h200, not h100-sxm"):
        resolve_calibration(str(shipped_path("h200", "bf16")), "h100-sxm", "bf16")
    with pytest.raises(UserError, match="bf16 calibration, not fp32"):
        resolve_calibration(str(shipped_path("h200", "bf16")), "h200", "fp32")
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(UserError, match="schema_version"):
        load_calibration(bad)


def test_op_classes_of_model_ops():
    spec = get_model("llama-2-7b")
    assert op_class_and_shape(spec, "qkv_proj", 8, 512) == ("gemm", {"m": 8.0, "n": 12288.0, "k": 4096.0})
    assert op_class_and_shape(spec, "attention", 8, 512)[1] == {"batch": 8.0, "context": 512.0, "heads": 32.0,
                                                                 "kv_heads": 32.0, "head_dim": 128.0}
    cls, shape = op_class_and_shape(spec, "act", 8, 512)
    assert cls == "elementwise" and shape["bytes"] == 3 * 8 * 11008 * 2
    assert op_class_and_shape(spec, "rope", 8, 512) is None  # fused into kv_write


def test_analytic_roofline_carries_floor_prediction_and_provenance():
    spec, gpu = get_model("llama-2-7b"), get_gpu("h100-sxm")
    cal = shipped_calibration(gpu, "fp16")
    res = analytic_roofline(spec, gpu, [1, 64], 1024, "fp16", calibration=cal)
    d = json.loads(res.to_json())
    assert d["schema_version"] == 1 and d["calibration"]["label"] == cal.label
    assert d["calibration"]["heldout_median_abs_err"]["gemm"] < 0.08
    for p in d["points"]:
        assert p["time_s"] == p["predicted_s"] >= p["floor_s"] > 0 and p["time_source"] == cal.label
    step = predict_decode_step(spec, gpu, 64, 1024, "fp16", cal)
    s64 = next(s for s in d["steps"] if s["batch"] == 64)
    assert s64["predicted_s"] == pytest.approx(step.predicted_s) and s64["floor_s"] == pytest.approx(step.floor_s)
    assert 1.05 < step.predicted_s / step.floor_s < 3 and 0 < step.error_median < 0.1
    bare = analytic_roofline(spec, gpu, [1, 64], 1024, "fp16")
    assert all(p.time_s == p.floor_s and p.time_source == FLOOR_SOURCE for p in bare.points)
    assert bare.extra["calibration"] is None and bare.extra["steps"][0]["predicted_s"] is None


def test_calibration_from_a_measured_timing_run():
    cal = calibration_from_results("tests/fixtures/measured/timing", gpu="h100-sxm")
    assert cal.gpu == "h100-sxm" and cal.source["kind"] == "gpuprobe" and cal.kernel_source == "gpuprobe timing"
    g = cal.classes["gemm"]
    assert g.rows == 8 * 4 and g.heldout["shapes"] >= 1  # 4 weight GEMMs (+ lm_head) at 8 batches
    with pytest.raises(UserError, match="not h200"):
        calibration_from_results("tests/fixtures/measured/timing", gpu="h200")


def test_detect_gpu_does_not_import_torch_without_a_driver():
    from gpuprobe.specs.gpus import nvidia_driver_present

    if nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    code = "import sys; from gpuprobe.specs.gpus import detect_gpu; print(detect_gpu(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.split() == ["None", "False"]


def test_selftest_check_compares_measured_calls_with_the_shipped_prediction(tmp_path):
    import shutil

    from gpuprobe.tools.selftest.checks.prediction import prediction_vs_measured
    from gpuprobe.tools.selftest.registry import CheckContext, Skip, all_checks

    assert all_checks()["prediction_vs_measured"].owner == "prediction"
    out = tmp_path / "checks" / "prediction_vs_measured"
    out.mkdir(parents=True)
    ctx = CheckContext(out_dir=out, gpu=True, budget_s=20, run_dir=tmp_path)
    with pytest.raises(Skip, match="no measured roofline"):
        prediction_vs_measured(ctx)
    src = tmp_path / "checks" / "roofline_two_points" / "sweep"
    src.mkdir(parents=True)
    shutil.copy("tests/fixtures/measured/timing/results.jsonl", src)  # recorded H100 CUDA-event times
    figs = prediction_vs_measured(ctx)
    assert figs["gpu"] == "h100-sxm" and figs["ops"] == 40
    assert figs["lm_head_b64_measured_us"] == 105.0 and figs["lm_head_b64_floor_us"] < figs["lm_head_b64_predicted_us"]
    assert figs["median_abs_err"] < figs["floor_median_abs_err"]
    measured = pd.read_csv(out / "measured_ops.csv")
    assert {"op", "m", "n", "k", "measured_s", "gpuprobe_op"} <= set(measured.columns)
    again = calibration_from_frame(read_measurements(measured.drop(columns=["gpuprobe_op", "batch_of_step"])),
                                   gpu=H100, dtype="bf16", kernel_source="test", source={"kind": "measurements"})
    assert again.classes["gemm"].rows == 32


def test_analytic_roofline_refuses_a_calibration_of_another_gpu_or_dtype():
    spec, h200 = get_model("qwen2-0.5b"), get_gpu("h200")
    with pytest.raises(UserError, match="is of h200, not h100-sxm"):
        analytic_roofline(spec, H100, [1], 512, "bf16", calibration=shipped_calibration(h200, "bf16"))
    with pytest.raises(UserError, match="for bf16, not fp32"):
        analytic_roofline(spec, h200, [1], 512, "fp32", calibration=shipped_calibration(h200, "bf16"))
    with pytest.raises(UserError, match="column 'k'"):
        shipped_calibration(h200, "bf16").predict("gemm", {"m": 1, "n": 2}, 1e-6)


def test_a_gpu_without_tables_is_served_by_its_sibling_on_its_own_roofs():
    sxm, pcie = shipped_calibration("h100-sxm", "bf16"), shipped_calibration("h100-pcie", "bf16")
    assert pcie.gpu == "h100-pcie" and pcie.source["transferred_from"] == "h100-sxm"
    assert "(from H100-SXM)" in pcie.label and "no published tables" in pcie.note
    shape = {"m": 1, "n": 4096, "k": 4096}
    floor_sxm = class_floor_s("gemm", shape, get_gpu("h100-sxm"), "bf16")
    floor_pcie = class_floor_s("gemm", shape, get_gpu("h100-pcie"), "bf16")
    assert floor_pcie > floor_sxm  # 2.0 against 3.35 TB/s
    assert pcie.predict("gemm", shape, floor_pcie) > sxm.predict("gemm", shape, floor_sxm)
    assert shipped_calibration("a10", "bf16") is None  # no sibling with tables: the floor
