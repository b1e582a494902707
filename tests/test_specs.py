"""Model and GPU registries: rows as keywords, published parameter counts, config.json checked field by
field, context limits, device names matched exactly, peaks a GPU lacks kept missing."""
import json
import re

import pytest

from gpuprobe.errors import UserError
from gpuprobe.specs import get_gpu, get_model, list_gpus, list_models, load_model_spec
from gpuprobe.specs.gpus import GPUSpec, gpu_from_device_name, normalize_device_name
from gpuprobe.specs.models import ModelSpec, check_context, spec_from_config

# Published totals (model cards / safetensors metadata), tied embeddings counted once.
PUBLISHED = {
    "qwen2-0.5b": 494_032_768,
    "qwen2-1.5b": 1_543_714_304,
    "qwen2-7b": 7_615_616_512,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "opt-1.3b": 1_315_758_080,
    "opt-6.7b": 6_658_473_984,
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "mistral-7b-v0.1": 7_241_732_096,
    "phi-3-mini-4k": 3_821_079_552,
}

# Computed by hand from each published config.json (embedding + 30/32/24 layers + final norm, lm_head tied);
# transformers' own classes give the same totals (test_models_hf.py); model cards round them to 135M/360M/1.7B.
SMOLLM2 = {"smollm2-135m": 134_515_008, "smollm2-360m": 361_821_120, "smollm2-1.7b": 1_711_376_384}


@pytest.mark.parametrize("name,count", {**PUBLISHED, **SMOLLM2}.items())
def test_parameter_counts_match_published(name, count):
    assert get_model(name).num_params() == count


def test_smollm2_by_hand():
    """SmolLM2-135M from its config.json, term by term: q/o 576x576, k/v 576x192, 3 MLP matrices, 2 norms."""
    h, inter, kv, layers, vocab = 576, 1536, 3 * 64, 30, 49152
    layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    assert get_model("smollm2-135m").num_params() == vocab * h + layers * layer + h  # tied: no lm_head


def test_registry_has_every_required_model():
    required = {"qwen2-0.5b", "qwen2-1.5b", "qwen2-7b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b",
                "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "opt-1.3b", "opt-2.7b", "opt-6.7b",
                "llama-2-7b", "llama-2-13b", "mistral-7b-v0.1", "smollm2-135m", "smollm2-360m", "smollm2-1.7b",
                "phi-3-mini-4k"}
    assert required <= {m.name for m in list_models()}


def test_gqa_shapes():
    s = get_model("qwen2-0.5b")
    assert (s.num_heads, s.num_kv_heads, s.head_dim, s.gqa_group) == (14, 2, 64, 7)
    assert s.qkv_size == 896 + 2 * 128
    assert get_model("opt-1.3b").gqa_group == 1


def test_unknown_model_names_close_ones():
    with pytest.raises(UserError, match="qwen2-0.5b"):
        get_model("qwen2-05b")


def test_gpu_registry_and_driver_names():
    assert {"h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l40s", "l4", "a10g", "rtx-4090"} <= {
        g.name for g in list_gpus()}
    assert get_gpu("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert get_gpu("NVIDIA H100 PCIe").name == "h100-pcie"
    assert get_gpu("NVIDIA H200").name == "h200"
    with pytest.raises(UserError, match="gpuprobe gpus"):
        get_gpu("tpu-v5")


def _hf_config(model_type, **kw):
    return dict(model_type=model_type, **kw)


def test_load_qwen2_config_json(tmp_path):
    cfg = _hf_config("qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                     tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-6)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(str(tmp_path))
    assert spec.num_params() == PUBLISHED["qwen2-0.5b"]
    assert spec.qkv_bias and spec.family == "qwen2"


def test_load_opt_and_llama_config_json(tmp_path):
    opt = _hf_config("opt", hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192,
                     vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=2048,
                     do_layer_norm_before=True, enable_bias=True)
    (tmp_path / "config.json").write_text(json.dumps(opt))
    assert load_model_spec(tmp_path).num_params() == PUBLISHED["opt-1.3b"]
    llama = _hf_config("llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                       tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072)
    (tmp_path / "config.json").write_text(json.dumps(llama))
    assert load_model_spec(tmp_path).num_params() == PUBLISHED["llama-3.2-1b"]


@pytest.mark.parametrize("content,match", [
    ("{not json", "cannot read"),
    ('{"model_type": "bert"}', "supported families"),
    ('{"model_type": "qwen2", "hidden_size": 8}', "lacks the field"),
])
def test_bad_config_json(tmp_path, content, match):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(UserError, match=match):
        load_model_spec(tmp_path)


def test_missing_config_folder(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model_spec(str(tmp_path / "nowhere/"))


def test_transformers5_rope_parameters_are_read(tmp_path):
    cfg = _hf_config("llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=100,
                     rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(tmp_path)
    assert spec.rope_theta == 500000.0 and spec.rope_scaling["factor"] == 32.0
    cfg = _hf_config("qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=100, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = load_model_spec(tmp_path)
    assert spec.rope_theta == 1e6 and spec.rope_scaling is None


# ---- rows as keywords, with sources ---------------------------------------------------------------------
def test_rows_are_keyword_only():
    with pytest.raises(TypeError):
        ModelSpec("x", "llama", 64, 2, 4, 2, 16, 96, 100, True, "rmsnorm", "swiglu", "rope", False, 1e4, 256)
    with pytest.raises(TypeError):
        GPUSpec("x", "X", 1e12, 1e14, 1e14, 1e13, 10**10, 10, 2**20, (9, 0))


def test_every_row_names_its_source():
    for m in list_models():
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", m.source), m.name  # a Hugging Face repository id
    for g in list_gpus():
        assert g.source and g.memory_source, g.name


def test_new_models_config_values():
    l2 = get_model("llama-2-7b")
    assert (l2.num_kv_heads, l2.rope_theta, l2.rope_scaling, l2.max_context, l2.vocab_size) == \
        (32, 1e4, None, 4096, 32000)
    mistral = get_model("mistral-7b-v0.1")
    assert (mistral.family, mistral.model_type, mistral.num_kv_heads, mistral.sliding_window) == \
        ("llama", "mistral", 8, 4096)
    phi3 = get_model("phi-3-mini-4k")
    assert (phi3.family, phi3.head_dim, phi3.vocab_size, phi3.tie_word_embeddings) == ("llama", 96, 32064, False)
    assert all(get_model(n).tie_word_embeddings for n in SMOLLM2)
    assert get_model("smollm2-135m").gqa_group == 3 and get_model("smollm2-1.7b").rope_theta == 130_000.0


def test_new_models_predict_in_analytic_mode():
    from gpuprobe.analytic import predict_step

    pred = predict_step(get_model("llama-2-7b"), get_gpu("h100-sxm"), 1, 1024)
    # Batch 1 is weight-bound: at least the bf16 weights over the datasheet bandwidth.
    assert pred.step_time_s >= 6_738_415_616 * 2 / 3.35e12


# ---- context against the model's maximum ------------------------------------------------------------------
def test_every_model_has_a_max_context():
    for m in list_models():
        assert m.max_context == m.max_position_embeddings > 0


@pytest.mark.parametrize("context,ok", [(1, True), (4096, True), (4097, False), (0, False), (-5, False),
                                        (10**400, False), (1.5, False), (True, False), ("4096", False)])
def test_check_context(context, ok):
    msg = check_context(get_model("llama-2-7b"), context)
    assert (msg is None) == ok
    if not ok:
        assert "\n" not in msg and len(msg) < 200
    if context == 4097:
        assert "4,097" in msg and "4,096" in msg and "llama-2-7b" in msg
    if context == 10**400:
        assert "401-digit" in msg


# ---- config.json checked field by field -------------------------------------------------------------------
GOOD_LLAMA = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, vocab_size=100, max_position_embeddings=256)
GOOD_OPT = dict(model_type="opt", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=96,
                vocab_size=100, max_position_embeddings=64)


def _with(base, **changes):
    cfg = dict(base, **changes)
    return {k: v for k, v in cfg.items() if v != "<drop>"}


BAD_CONFIGS = [
    (_with(GOOD_LLAMA, hidden_size="big"), "'hidden_size' must be a positive integer, got \"big\""),
    (_with(GOOD_LLAMA, num_attention_heads=0), "'num_attention_heads' must be a positive integer, got 0"),
    (_with(GOOD_LLAMA, vocab_size=None), "lacks the field 'vocab_size'"),
    (_with(GOOD_LLAMA, hidden_size=-64), "'hidden_size' must be a positive integer, got -64"),
    (_with(GOOD_LLAMA, num_hidden_layers=1.5), "'num_hidden_layers' must be a positive integer, got 1.5"),
    (_with(GOOD_LLAMA, hidden_size=100, num_attention_heads=3, num_key_value_heads=3),
     "not divisible by num_attention_heads 3"),
    (_with(GOOD_LLAMA, num_key_value_heads=3), "num_key_value_heads 3 does not divide num_attention_heads 4"),
    (_with(GOOD_LLAMA, intermediate_size="<drop>"), "lacks the field 'intermediate_size'"),
    (_with(GOOD_LLAMA, model_type="<drop>"), "model_type '?' is not supported"),
    (_with(GOOD_LLAMA, model_type="bert"), "supported families"),
    (_with(GOOD_LLAMA, tie_word_embeddings="yes"), "'tie_word_embeddings' must be true or false"),
    (_with(GOOD_LLAMA, rms_norm_eps=-1e-5), "'rms_norm_eps' must be a positive number"),
    (_with(GOOD_LLAMA, rope_theta="x"), "'rope_theta' must be a positive number"),
    (_with(GOOD_LLAMA, hidden_size=10**30), "'hidden_size' is a 31-digit number, above any"),
    (_with(GOOD_LLAMA, num_key_value_heads=True), "'num_key_value_heads' must be a positive integer, got true"),
    (_with(GOOD_LLAMA, head_dim=0), "'head_dim' must be a positive integer, got 0"),
    (_with(GOOD_LLAMA, max_position_embeddings=0), "'max_position_embeddings' must be a positive integer"),
    (_with(GOOD_LLAMA, rope_scaling="linear"), "'rope_scaling' must be an object or null"),
    (_with(GOOD_LLAMA, rope_scaling={"rope_type": "llama3", "factor": 8.0}), "needs a positive number 'low_freq_factor'"),
    (_with(GOOD_LLAMA, rope_scaling={"type": "linear", "factor": "2"}), "'linear' needs a positive number 'factor'"),
    (_with(GOOD_LLAMA, model_type="phi3", partial_rotary_factor=0.75), "'partial_rotary_factor' is 0.75"),
    (_with(GOOD_LLAMA, sliding_window=-1), "'sliding_window' must be a positive integer"),
    (_with(GOOD_OPT, ffn_dim=0), "'ffn_dim' must be a positive integer, got 0"),
    (_with(GOOD_OPT, hidden_size=100, num_attention_heads=3), "not divisible by num_attention_heads 3"),
    (_with(GOOD_OPT, do_layer_norm_before=False), "post-layer-norm"),
    (_with(GOOD_LLAMA, hidden_act="tanh"), "'hidden_act' is \"tanh\"; the engine runs a gated MLP with one of silu"),
    (_with(GOOD_OPT, activation_function=3), "'activation_function' is 3; the engine runs a plain MLP"),
]


@pytest.mark.parametrize("cfg,message", BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_values_are_one_line_errors(tmp_path, cfg, message):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as e:
        load_model_spec(tmp_path)
    text = str(e.value)
    assert message in text
    assert "\n" not in text and str(tmp_path / "config.json") in text


def test_config_activation_picks_the_row_of_the_activation_table():
    """``hidden_act`` (gated layouts) and ``activation_function`` (OPT) choose the MLP the engine runs."""
    assert spec_from_config(GOOD_LLAMA).activation == "swiglu"  # absent: SiLU, as the HF default
    assert spec_from_config(_with(GOOD_LLAMA, hidden_act="silu")).activation == "swiglu"
    assert spec_from_config(_with(GOOD_LLAMA, hidden_act="gelu_pytorch_tanh")).activation == "geglu_tanh"
    assert spec_from_config(GOOD_OPT).activation == "relu"
    gelu = spec_from_config(_with(GOOD_OPT, activation_function="gelu"))
    assert (gelu.activation, gelu.gated_mlp, gelu.gate_up_size) == ("gelu", False, 96)
    assert spec_from_config(_with(GOOD_OPT, activation_function="gelu_new")).activation == "gelu_tanh"
    assert spec_from_config(_with(GOOD_LLAMA, hidden_act="gelu")).gate_up_size == 2 * 96


def test_good_configs_still_load():
    assert spec_from_config(GOOD_LLAMA).head_dim == 16
    assert spec_from_config(_with(GOOD_LLAMA, hidden_size=100, num_attention_heads=3, num_key_value_heads=3,
                                  head_dim=32)).q_size == 96  # head_dim given: no divisibility needed
    assert spec_from_config(_with(GOOD_LLAMA, num_hidden_layers=2.0)).num_layers == 2
    mistral = spec_from_config(_with(GOOD_LLAMA, model_type="mistral", sliding_window=4096))
    assert (mistral.family, mistral.sliding_window) == ("llama", 4096)
    qwen = spec_from_config(_with(GOOD_LLAMA, model_type="qwen2", sliding_window=4096, use_sliding_window=False))
    assert qwen.sliding_window is None and qwen.qkv_bias
    assert spec_from_config(_with(GOOD_LLAMA, model_type="phi3")).model_type == "phi3"


def test_a_spec_with_impossible_shapes_is_refused():
    with pytest.raises(UserError, match="num_kv_heads 3 does not divide num_heads 4"):
        get_model("qwen2-0.5b").__class__(**{**get_model("llama-2-7b").to_dict(), "num_heads": 4, "num_kv_heads": 3})
    with pytest.raises(UserError, match="num_layers must be a positive integer"):
        get_model("llama-2-7b").with_layers(0)


# ---- GPU names matched exactly ------------------------------------------------------------------------------
DEVICE_NAMES = [
    # as real reports spell them (shared fixtures: ncu/, ncu_external/, nsys_external/ READMEs and files)
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA H800", "h800"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
    ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
    ("Tesla T4", "t4"),
    ("NVIDIA A10G", "a10g"),
    ("NVIDIA A10", "a10"),
    ("NVIDIA GeForce RTX 3080", "rtx-3080"),
    ("GeForce RTX 3080", "rtx-3080"),
    ("NVIDIA GeForce RTX 3090", "rtx-3090"),
    # spelling differences that normalisation absorbs
    ("nvidia  h100 80 GB hbm3", "h100-sxm"),
    ("NVIDIA_A100_SXM4_80GB", "a100-80gb"),
    ("NVIDIA H100 SXM5 80GB", "h100-sxm"),  # a display name is a device name too
    # unknown: None (callers then use the report's own peaks), never a neighbour found by substring
    ("NVIDIA H200 NVL", None),
    ("NVIDIA H100 NVL", None),
    ("NVIDIA GH200 144G HBM3e", None),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None),
    ("NVIDIA GeForce RTX 2080 Ti", None),
    ("NVIDIA RTX A4500", None),
    ("Tesla V100S-PCIE-32GB", None),
    ("Quadro RTX 8000", None),
    ("NVIDIA A100", "a100-80gb"),  # kept from before: a bare A100 has meant the 80 GB SXM4 part
    ("", None),
]


@pytest.mark.parametrize("device_name,key", DEVICE_NAMES)
def test_device_names_match_exactly(device_name, key):
    found = gpu_from_device_name(device_name)
    assert (found.name if found else None) == key


def test_gh200_is_not_h200_anywhere():
    assert get_gpu("NVIDIA GH200 480GB").dram_bytes_per_s == pytest.approx(4.0e12)
    assert get_gpu("NVIDIA H200").dram_bytes_per_s == pytest.approx(4.8e12)
    with pytest.raises(UserError, match="unknown GPU"):
        get_gpu("NVIDIA H200 NVL")


def test_every_display_and_device_name_finds_its_own_row():
    for g in list_gpus():
        for n in (g.display_name, *g.device_names):
            assert gpu_from_device_name(n) is g
        assert get_gpu(g.name) is g
    assert normalize_device_name("Tesla V100-SXM2-32GB") == "V100 SXM2 32GB"


def test_memory_as_the_device_reports_it():
    # device__attribute_total_memory / TARGET_INFO_GPU.totalMemory of real reports (see gpus.py sources)
    assert get_gpu("h100-sxm").memory_bytes == 85_017_493_504  # 79.2 GiB, not 80e9
    assert get_gpu("h200").memory_bytes == 150_121_545_728
    assert get_gpu("gh200").memory_bytes == 101_468_602_368
    assert get_gpu("a100-80gb").memory_bytes == 84_990_623_744
    assert get_gpu("v100-sxm2-32gb").memory_bytes == 34_089_926_656
    assert get_gpu("h200").l2_bytes == 60 * 2**20


def test_no_bf16_roof_where_the_gpu_has_none():
    from gpuprobe.analytic import predict_step
    from gpuprobe.roofline.schema import datasheet_roofs

    for key in ("v100-sxm2-32gb", "v100-pcie-16gb", "t4"):
        g = get_gpu(key)
        assert g.bf16_flops_per_s is None and g.tensor_flops_per_s("bf16") is None and g.ridge_bf16 is None
        assert g.tensor_flops_per_s("fp16") > g.fp32_flops_per_s
        assert {r.name for r in datasheet_roofs(g, "bf16")} == {"dram", "fp32"}
        assert {r.name for r in datasheet_roofs(g, "fp16")} == {"dram", "fp32", "tensor_fp16"}
        with pytest.raises(UserError, match="no bf16 tensor cores.*--dtype fp16"):
            predict_step(get_model("qwen2-0.5b"), g, 8, 512, "bf16")
        assert predict_step(get_model("qwen2-0.5b"), g, 8, 512, "fp16").step_time_s > 0


def test_gpus_command_prints_missing_peaks_as_dashes(monkeypatch, capsys):
    import gpuprobe.cli.gpus as gpus_cmd
    from gpuprobe.cli import main

    monkeypatch.setattr(gpus_cmd, "detect_gpu", lambda: None)
    assert main(["gpus"]) == 0  # captured stdout is no terminal: tab-separated
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    header = lines[0]
    t4 = next(cells for cells in lines if cells[0] == "t4")
    assert t4[header.index("bf16_flops_per_s")] == "" and float(t4[header.index("fp16_flops_per_s")]) > 0
    assert main(["gpus", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert next(g for g in data["gpus"] if g["name"] == "t4")["bf16_flops_per_s"] is None


def test_roofline_in_bf16_on_a_gpu_without_bf16_is_one_line(tmp_path, capsys):
    from gpuprobe.cli import main

    assert main(["roofline", "--model", "smollm2-135m", "--gpu", "Tesla T4", "--dtype", "bf16",
                 "--out", str(tmp_path / "bf16")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bf16 tensor cores" in err and "Traceback" not in err
    assert main(["roofline", "--model", "llama-2-7b", "--gpu", "NVIDIA GH200 480GB",
                 "--out", str(tmp_path / "gh")]) == 0
    data = json.loads((tmp_path / "gh" / "roofline.json").read_text())
    assert data["gpu"] == "gh200" and data["ceilings"]["dram_bytes_per_s"] == pytest.approx(4.0e12)
