"""roofline.json: the contract's fields, round trip, ceiling selection, bound and limiter classes."""
import json

import pytest

from gpuprobe.errors import UserError
from gpuprobe.roofline.schema import (
    LIMITER_RULE, Roof, RooflineResult, classify_bound, classify_limiter, datasheet_roofs, make_point,
    select_ceilings,
)
from gpuprobe.roofline.analytic_roofline import analytic_roofline
from gpuprobe.specs import get_gpu, get_model

H100 = get_gpu("h100-sxm")


def test_select_ceilings_prefers_measured_dram_and_dtype_tensor_roof():
    roofs = datasheet_roofs(H100, "bf16")
    c = select_ceilings(roofs, "bf16")
    assert (c.dram_source, c.compute_roof, c.dram_bytes_per_s) == ("datasheet", "tensor_bf16", 3.35e12)
    measured = roofs + [Roof("dram", "memory", 3.01e12, "measured"), Roof("dram", "memory", 3.35e12, "ncu_peak"),
                        Roof("l2", "memory", 9e12, "measured")]
    c = select_ceilings(measured, "bf16")
    assert c.dram_bytes_per_s == 3.01e12 and c.dram_source == "measured"
    assert c.ridge == pytest.approx(989.4e12 / 3.01e12)
    assert select_ceilings(datasheet_roofs(H100, "fp32"), "fp32").compute_roof == "fp32"


def test_bound_uses_the_ridge_of_the_ceilings():
    c = select_ceilings(datasheet_roofs(H100, "bf16"), "bf16")
    assert classify_bound(c.ridge * 0.99, c) == "memory"
    assert classify_bound(c.ridge, c) == "compute"


@pytest.mark.parametrize("dram,sm,tensor,expected", [
    (93, 11, 2, "memory"), (60, 90, 90, "memory"), (20, 75, 10, "compute"), (20, 10, 65, "compute"),
    (30, 20, 5, "latency"), (None, None, None, None),
])
def test_limiter_rule(dram, sm, tensor, expected):
    assert classify_limiter(dram, sm, tensor) == expected
    assert LIMITER_RULE["threshold_pct"] == 60.0


def test_round_trip_keeps_fields_and_extras(tmp_path):
    res = analytic_roofline(get_model("qwen2-0.5b"), H100, [1, 8], 256, "bf16")
    res.points[0].extra["custom_field"] = 3
    res.extra["throughput"] = {"1": 100.0}
    jpath, cpath = res.write(tmp_path)
    back = RooflineResult.from_json(jpath)
    assert back.to_dict() == json.loads(jpath.read_text())
    assert back.points[0].extra["custom_field"] == 3 and back.extra["throughput"] == {"1": 100.0}
    assert back.ceilings == res.ceilings


def test_report_level_nulls_are_allowed(tmp_path):
    c = select_ceilings(datasheet_roofs(H100, "bf16"), "bf16")
    p = make_point("other:gemm", None, 1e9, 1e7, 1e-5, c, n_kernels=3)
    res = RooflineResult(model=None, gpu="h100-sxm", mode="ncu", context=None, dtype=None, layers=None,
                         ceilings=c, roofs=datasheet_roofs(H100, "bf16"), points=[p])
    res.write(tmp_path)
    d = json.loads((tmp_path / "roofline.json").read_text())
    assert d["model"] is None and d["points"][0]["batch"] is None and d["points"][0]["bound"] == "memory"


def test_bad_json_is_one_user_error(tmp_path):
    bad = tmp_path / "roofline.json"
    bad.write_text('{"gpu": "h100-sxm"}')
    with pytest.raises(UserError, match="roofline.json"):
        RooflineResult.from_json(bad)
    bad.write_text("{")
    with pytest.raises(UserError, match="cannot read"):
        RooflineResult.from_json(bad)
