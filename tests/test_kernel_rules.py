"""The kernel rule table: packaged rules, real kernel names of every shared fixture, user rules, errors."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe import ops
from gpuprobe.errors import UserError
from gpuprobe.kernel_rules import (
    COLUMNS, OP_CLASSES, KernelRule, RuleTable, classify, default_table, load_rules, with_user_rules,
)

REPO = Path(__file__).resolve().parent.parent
NAMES = Path(__file__).resolve().parent / "fixtures" / "kernel_names"
RULES = load_rules()


def names_of(source: str) -> list[str]:
    """Kernel names of one list in tests/fixtures/kernel_names (header comments dropped)."""
    lines = (NAMES / f"{source}.txt").read_text().splitlines()
    return [n for n in lines if n and not n.startswith("#")]


def pick(source: str, fragment: str) -> str:
    """The first name of ``source`` holding ``fragment`` (the test fails when none does)."""
    hits = [n for n in names_of(source) if fragment in n]
    assert hits, f"no kernel name with {fragment!r} in {source}"
    return hits[0]


# ------------------------------------------------------------------------------ the packaged table

@pytest.mark.parametrize("rule", RULES, ids=[f"{i}:{r.op}" for i, r in enumerate(RULES)])
def test_example_matches_its_rule_and_classifies_as_its_op(rule: KernelRule):
    assert rule.matches(rule.example)
    assert classify(rule.example) == rule.op


def test_no_example_is_shadowed_by_an_earlier_rule_of_another_class():
    for i, rule in enumerate(RULES):
        earlier = [r for r in RULES[:i] if r.matches(rule.example) and r.op != rule.op]
        assert not earlier, f"{rule.example[:60]!r} ({rule.op}) is taken by {earlier[0].pattern!r} ({earlier[0].op})"


def test_table_rows_are_complete_and_cover_every_op_class():
    assert len(RULES) >= 60
    assert {r.op for r in RULES} == set(OP_CLASSES)
    assert all(r.pattern and r.example and r.engine for r in RULES)
    assert len({r.pattern for r in RULES}) == len(RULES), "a pattern appears twice"
    assert COLUMNS == ("pattern", "op", "example", "engine")


def test_op_classes_use_the_op_names_of_a_decode_step():
    for op in ("attention", "kv_write", "rope", "act", "embed", "sample"):
        assert op in ops.OPS and op in OP_CLASSES
    assert len(set(OP_CLASSES)) == len(OP_CLASSES)


def test_module_stays_light():
    code = "import sys, gpuprobe.kernel_rules as k; k.classify('nvjet_tst_1'); print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------- real names of the shared fixtures

H100 = "ncu_h100_qwen2-0.5b_layer0_b32_c512_metrics"
H100_CSV = "ncu_h100_qwen2-0.5b_decode2layers_b64_c1024_raw"
SGLANG = "ncu_sglang_profile"
DECODE = "dsocr_per-stage_decode"
PREFILL = "dsocr_per-stage_prefill"
SAM = "dsocr_per-stage_sam"
FUSER_H100 = "nsys_fuser_8fa9ec2_report1"
FUSER_H200 = "nsys_fuser_ee4fcf3_report1"

#: (list, a fragment of one of its names, op class), each checked by hand against the kernel's source.
REAL_CASES = [
    # H800 SGLang: FlashAttention 2 forward and the random init before it
    (SGLANG, "flash_fwd_kernel<", "attention"),
    (SGLANG, "normal_and_transform", "elementwise"),
    # H100 Qwen2-0.5B decode layer (ncu_report names and CSV names): cuBLASLt, cuDNN SDPA, ATen
    (H100, "nvjet_sm90_tst_64x8_64x16", "gemm"),
    (H100, "nvjet_sm90_tst_128x32", "gemm"),
    (H100, "splitK_NNT", "gemm"),
    (H100, "cublasLt::splitKreduce_kernel", "gemm"),
    (H100, "cudnn_generated_fort_native_sdpa", "attention"),
    (H100, "vectorized_elementwise_kernel<(int)8, at::native::CUDAFunctor_add", "elementwise"),
    (H100, "silu_kernel", "act"),
    (H100, "MulFunctor", "elementwise"),
    (H100_CSV, "nvjet_sm90_tst_96x64", "gemm"),
    (H100_CSV, "void at::vectorized_elementwise_kernel<8, at::CUDAFunctor_add", "elementwise"),
    (H100_CSV, "void at::elementwise_kernel<128, 4, void at::gpu_kernel_impl_nocast<at::<unnamed>::silu_kernel", "act"),
    # DeepSeek-OCR decode (nsys stats): cuBLAS gemvx leads, then FlashAttention 2 split-KV
    (DECODE, "internal::gemvx::kernel<", "gemm"),
    (DECODE, "flash::flash_fwd_splitkv_kernel<", "attention"),
    (DECODE, "flash::flash_fwd_splitkv_combine_kernel<", "attention"),
    (DECODE, "cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm", "gemm"),
    (DECODE, "gemmk1_kernel<", "gemm"),
    (DECODE, "cublasLt::splitKreduce_kernel<", "gemm"),
    (DECODE, "softmax_warp_forward<", "softmax"),
    (DECODE, "ArgMaxOps", "sample"),
    (DECODE, "sbtopk::gatherTopK<", "sample"),
    (DECODE, "bitonicSortKVInPlace<", "sample"),
    (DECODE, "indexSelectSmallIndex<", "embed"),
    (DECODE, "reduce_kernel<(int)512, (int)1, at::native::ReduceOp<float, at::native::MeanOps", "reduce"),
    (DECODE, "at::native::<unnamed>::silu_kernel", "act"),
    (DECODE, "rsqrt_kernel_cuda", "elementwise"),
    (DECODE, "CatArrayBatchedCopy<", "elementwise"),
    (DECODE, "cub::DeviceScanKernel<", "reduce"),
    (DECODE, "unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda", "elementwise"),
    # DeepSeek-OCR prefill and vision encoder: CUTLASS via cuBLAS, mem-efficient and flash SDPA, convs
    (PREFILL, "cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_256x128", "gemm"),
    (PREFILL, "fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    (PREFILL, "pytorch_flash::flash_fwd_splitkv_kernel<", "attention"),
    (PREFILL, "pytorch_flash::flash_fwd_splitkv_combine_kernel<", "attention"),
    (PREFILL, "GeluCUDAKernelImpl", "act"),
    (PREFILL, "DeviceRadixSortOnesweepKernel<", "sample"),
    (PREFILL, "sm80_xmma_fprop_implicit_gemm_bf16bf16", "gemm"),
    (PREFILL, "cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816fprop", "gemm"),
    (PREFILL, "nchwToNhwcKernel<", "elementwise"),
    (SAM, "vectorized_layer_norm_kernel<", "norm"),
    ("dsocr_per-stage_clip", "pytorch_flash::flash_fwd_kernel<", "attention"),
    # A100 BERT with FlashAttention 1 and cuBLAS's CUTLASS kernels; a GH200 Triton SiLU
    ("ncu_leleucas_bert_flashattn_nsight", "fmha_fwd_loop_kernel<", "attention"),
    ("ncu_leleucas_bert_flashattn_nsight", "cutlass::Kernel<cutlass_80_wmma_tensorop_f16", "gemm"),
    ("ncu_leleucas_bert_flashattn_nsight", "void splitKreduce_kernel<", "gemm"),
    ("ncu_cs599k_silu-v8", "silu_kernel_non_strided", "act"),
    ("ncu_esmm_metrics_details", "ampere_sgemm_128x64_nn", "gemm"),
    ("ncu_fuzigrad_output", "matmul_2d_tiling", "gemm"),
    # nsys exports: demangled and short names of the same kernels
    (FUSER_H100, "nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "gemm"),
    (FUSER_H100, "void at::native::reduce_kernel<(int)512", "reduce"),
    (FUSER_H100, "reduce_kernel", "reduce"),
    (FUSER_H200, "nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNN", "gemm"),
    (FUSER_H200, "<unnamed>::nvfuser_pointwise_f0_c1_r0_g4(", "elementwise"),
    (FUSER_H200, "nvfuser_inner_persistent_f0_c1_r0_g2", "reduce"),
    (FUSER_H200, "nvfuser_reduction_f0_c1_r0_g3", "reduce"),
    (FUSER_H200, "unrolled_elementwise_kernel", "elementwise"),
    (FUSER_H200, "distribution_elementwise_grid_stride_kernel", "elementwise"),
    ("nsys_memfusion_report1", "trt_ampere_h16816gemm_64x64", "gemm"),
    ("nsys_memfusion_report1", "permutationKernelPLC3", "elementwise"),
    ("nsys_nvtx-examples_cudf", "cub::DeviceReduceSingleTileKernel<", "reduce"),
]


@pytest.mark.parametrize("source,fragment,expected", REAL_CASES,
                         ids=[f"{s}:{f[:40]}" for s, f, _ in REAL_CASES])
def test_real_kernel_names_get_their_op_class(source: str, fragment: str, expected: str):
    assert classify(pick(source, fragment)) == expected


def test_enough_hand_checked_real_names():
    assert len(REAL_CASES) >= 40
    assert len({s for s, _, _ in REAL_CASES}) >= 10


@pytest.mark.parametrize("source", [H100, H100_CSV, "ncu_h100_qwen2-0.5b_layer0_b32_c512_sol",
                                    "ncu_h100_qwen2-0.5b_layer0_b32_c512_raw_baseunits", SGLANG, DECODE])
def test_every_kernel_of_an_llm_decode_report_is_classified(source: str):
    unknown = [n for n in names_of(source) if classify(n) is None]
    assert not unknown, unknown[:3]


def test_decode_gemms_and_attention_are_attributed_in_the_deepseek_ocr_decode():
    ops_seen = {classify(n) for n in names_of(DECODE)}
    assert {"gemm", "attention", "act", "sample", "embed", "softmax", "elementwise", "reduce"} <= ops_seen


def _triton_kernels(path: Path) -> list[str]:
    """Names of the ``@triton.jit`` functions of a module that are launched (named ``*_kernel``)."""
    tree = ast.parse(path.read_text())
    return [f.name for f in tree.body if isinstance(f, ast.FunctionDef) and f.name.endswith("_kernel")
            and any("jit" in ast.unparse(d) for d in f.decorator_list)]


@pytest.mark.parametrize("module,expected", [("paged_attention.py", "attention"), ("gemm.py", "gemm")])
def test_gpuprobe_own_triton_kernels(module: str, expected: str):
    names = _triton_kernels(REPO / "kernels" / module)
    assert len(names) >= 2
    assert {n: classify(n) for n in names} == {n: expected for n in names}


# ---------------------------------------------------- names of other engines: precedence between classes

@pytest.mark.parametrize("name,expected", [
    ("void vllm::gemma_rms_norm_kernel<c10::BFloat16>(c10::BFloat16 *, const c10::BFloat16 *, "
     "const c10::BFloat16 *, float, int, int)", "norm"),
    ("void flashinfer::norm::GemmaFusedAddRMSNormKernel<(unsigned int)8, __nv_bfloat16>(T2 *, T2 *, T2 *, "
     "unsigned int, unsigned int, unsigned int, float, float)", "norm"),
    ("void vllm::batched_rotary_embedding_kernel<c10::BFloat16, (bool)1>(const long *, T1 *, T1 *, "
     "const T1 *, const long *, int, long, long, long, int, int, int)", "rope"),
    ("void vllm::act_and_mul_kernel<c10::BFloat16, &vllm::gelu_tanh_kernel<c10::BFloat16>, (bool)1>"
     "(T1 *, const T1 *, int)", "act"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>(T1::Params)",
     "gemm"),
    ("void vllm::reshape_and_cache_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(const T1 *, "
     "const T1 *, T2 *, T2 *, const long *, int, int, int, int, int, int, const float *, const float *)", "kv_write"),
    ("void flashinfer::BatchPrefillWithPagedKVCacheKernel<flashinfer::KernelTraits<>, flashinfer::"
     "BatchPrefillPagedParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>>(T2)", "attention"),
    ("void vllm::paged_attention_v2_kernel<unsigned short, unsigned short, (int)128, (int)16, (int)128, "
     "(vllm::Fp8KVCacheDataType)0, (bool)0, (int)512>(float *, float *, T1 *, const T1 *)", "attention"),
    ("fmha_cutlassF_f16_aligned_64x128_rf_sm80", "attention"),
    ("void rope_norm<(bool)1, (bool)0, float, float>(const float *, float *, int, int, int, int, int, "
     "const int *, float, float, float, float, rope_corr_dims, float, const float *, const long *)", "rope"),
    ("void flash_attn_vec_ext_f16<(int)128, (int)1, (ggml_type)1, (ggml_type)1, (bool)0>(const char *)",
     "attention"),
    ("void dequantize_mul_mat_vec<(ggml_type)2>(const void *, const float *, float *, int, int)", "gemm"),
    ("void mul_mat_q<(ggml_type)8, (int)64, (int)8, (bool)0>(const char *, const int *, float *)", "gemm"),
    ("void k_get_rows_float<__half, float>(const T1 *, const int *, T2 *, long, long, long)", "embed"),
    ("void at::native::<unnamed>::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, (int)2, (int)2, "
     "(int)-2, (bool)1>(at::cuda::detail::TensorInfo<T1, T3>)", "embed"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_1", "norm"),
    ("triton_poi_fused_mul_silu_2", "act"),
    ("triton_poi_fused_add_3", "elementwise"),
    ("triton_per_fused_argmax_4", "sample"),
    ("void cunn_SoftMaxForward<(int)4, float, float, float, at::native::<unnamed>::SoftMaxForwardEpilogue>"
     "(T4 *, const T2 *, int)", "softmax"),
    ("void at::native::<unnamed>::sampleMultinomialOnce<float, float>(long *, long, int, const T1 *)", "sample"),
    ("void vllm::moe::topkGatingSoftmax<(int)8, (int)128, (int)4, (int)16, (int)32, int, __nv_bfloat16>"
     "(const T7 *, const bool *, float *, int, T6 *, int *, int, int, int, bool)", "softmax"),
    ("void at::native::<unnamed>::upsample_bilinear2d_out_frame<float, float>(int, float, float, bool)", None),
    ("_store_cache_kernel", "kv_write"),
    ("restore_cache_kernel", None),
    ("[CUDA memcpy HtoD]", "memcpy"),
    ("[CUDA Unified Memory memcpy HtoD]", "memcpy"),
    ("Memcpy DtoD (Device -> Device)", "memcpy"),
    ("[CUDA memcpy Device-to-Device]", "memcpy"),
    ("[CUDA memset]", "memset"),
    ("cutlass3x_sm100_s128x256_bgrada", "gemm"),
    ("nvjet_sm100_hsh_64x8_64x16_1x1_h_bz_splitK_NNT", "gemm"),
    ("void cutlass::device_kernel<flash::FlashAttentionForwardSm100<>>(T1::Params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0", "attention"),
    ("void flashinfer::BatchQKApplyRotaryPosIdsCosSinCacheHeadParallelismKernel<(bool)0, (unsigned int)128>"
     "(__half *)", "rope"),
    ("Kernel2", "gemm"),
    ("splitKreduce_kernel", "gemm"),
    ("gemv2T_kernel_val", "gemm"),
    ("flash_fwd_splitkv_kernel", "attention"),
])
def test_other_engines_and_precedence(name: str, expected: str | None):
    assert classify(name) == expected


# ------------------------------------------------------------------------------------ unknown names

@pytest.mark.parametrize("name", [
    pick("nsys_gpu4_old_report2", "vecAdd("),
    "vectorAdd",
    pick("nsys_pipit_saxpy-mpi-cuda_nsys_perlmutter0", "saxpy"),
    pick("ncu_ncar_MW_Baseline", "set_halo_values_x_396_gpu"),
    pick("ncu_esmm_metrics_details", "warptiling<"),
    pick("nsys_nvtx-examples_cudf", "build_hash_table<"),
    pick("nsys_extrap_con_kernel", "test0("),
    "nvkernel_solve_F1L204_2",
    "kernel",
    "",
    None,
])
def test_unknown_names_give_none(name):
    assert classify(name) is None


# ------------------------------------------------------------------------------------- user rules

def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.csv"
    p.write_text(text)
    return p


def test_user_rules_take_precedence(tmp_path: Path):
    mul = pick(H100, "MulFunctor")
    silu = pick(H100, "silu_kernel")
    path = write(tmp_path, "# the SwiGLU product of our MLP counts as the activation\n"
                           "pattern,op,example,engine\n"
                           "\n"
                           "\"elementwise_kernel<.*MulFunctor\",act,\"elementwise_kernel<128, 4, MulFunctor<float>>\",mine\n"
                           "^nvjet_sm90_tst_64x8_,gemm,nvjet_sm90_tst_64x8_64x16_2x4_h_bz_NNT,\n")
    table = with_user_rules(path)
    assert len(table) == len(default_table()) + 2
    assert table.rules[0] == KernelRule("elementwise_kernel<.*MulFunctor", "act",
                                        "elementwise_kernel<128, 4, MulFunctor<float>>", "mine")
    assert table.classify(mul) == "act" and classify(mul) == "elementwise"
    assert table.classify(silu) == "act"
    assert table.match(pick(H100, "nvjet_sm90_tst_64x8")).engine == ""
    assert table.classify(pick(SGLANG, "flash_fwd_kernel<")) == "attention"
    assert default_table().with_user_rules(path).rules == table.rules


def test_rule_table_of_rules():
    table = RuleTable([KernelRule(r"\bmy_attn\b", "attention", "my_attn")])
    assert table.classify("void my_attn<4>(float *)") == "attention"
    assert table.classify("nvjet_tst_1") is None
    assert [r.op for r in table] == ["attention"]


HEADER = "pattern,op,example,engine\n"


@pytest.mark.parametrize("text,row,words", [
    (HEADER + "nvjet_\\w+,gemm,nvjet_tst_1,cuBLASLt\nflash_fwd(,attention,flash_fwd_kernel,FA2\n",
     3, ["not a valid regex"]),
    (HEADER + "flash_fwd,attn,flash_fwd_kernel,FA2\n", 2, ["'attn' is not an op class", "attention"]),
    ("pattern,op,example\nflash_fwd,attention,flash_fwd_kernel\n", 1, ["lacks column(s) engine"]),
    ("regex,class\nflash_fwd,attention\n", 1, ["pattern, op, example, engine"]),
    (HEADER + "# a comment\nflash_fwd,attention,paged_attention_v1_kernel,FA2\n", 3, ["does not match its example"]),
    (HEADER + "flash_fwd,attention,,FA2\n", 2, ["empty example"]),
    (HEADER + ",attention,flash_fwd_kernel,FA2\n", 2, ["empty pattern"]),
    (HEADER + "foo{1,3},gemm,foo,x\n", 2, ["cells for 4 columns", "double quotes"]),
    (HEADER + "nvjet_\\w+,gemm,nvjet_tst_1,\n(?i)a?,gemm,anything,\n", 3, ["matches every name"]),
])
def test_bad_rules_file_gives_one_line_naming_the_row(tmp_path: Path, text: str, row: int, words: list[str]):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        with_user_rules(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}, row {row}: "), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("make,words", [
    (lambda d: d / "missing.csv", "no such rules file"),
    (lambda d: d, "is a folder"),
    (lambda d: (d / "empty.csv", (d / "empty.csv").write_text("# nothing\n"))[0], "the file is empty"),
    (lambda d: (d / "bin.csv", (d / "bin.csv").write_bytes(b"\xff\xfe\x00pattern"))[0], "not UTF-8"),
])
def test_unreadable_rules_file_gives_one_line(tmp_path: Path, make, words: str):
    path = make(tmp_path)
    with pytest.raises(UserError) as err:
        load_rules(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and words in str(err.value)


def test_spreadsheet_csv_with_bom_loads(tmp_path: Path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffpattern,op,example,engine\r\n\\bmy_gemm\\b,gemm,my_gemm,me\r\n".encode("utf-8"))
    assert load_rules(path) == (KernelRule(r"\bmy_gemm\b", "gemm", "my_gemm", "me"),)


def test_quoted_pattern_with_comma_loads(tmp_path: Path):
    path = write(tmp_path, HEADER + "\"\\bfoo{1,3}bar\",reduce,\"void foobar<1, 2>(int)\",\"me, myself\"\n")
    (rule,) = load_rules(path)
    assert rule == KernelRule(r"\bfoo{1,3}bar", "reduce", "void foobar<1, 2>(int)", "me, myself")


def test_rules_files_shown_in_the_docs_load(tmp_path: Path):
    text = (REPO / "docs" / "kernel-rules.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```csv\n")[1:]]
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        rules = load_rules(write(tmp_path, block))
        assert len(rules) == 2, i
    user = with_user_rules(write(tmp_path, blocks[1]))
    assert user.classify(pick(H100, "MulFunctor")) == "act"
