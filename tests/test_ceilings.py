"""Empirical ceilings on a CPU machine: source loading and kernel signatures, argument packing,
planning, the result checks' arithmetic, the cache, ceiling selection, target evaluation, and the
no-GPU paths of the CLI, copy_bandwidth and the selftest check. The measurement itself runs in
`gpuprobe selftest --gpu` (check `ceilings`)."""
from __future__ import annotations

import ctypes
import json
import re

import numpy as np
import pytest
import torch

from gpuprobe import ceilings as C
from gpuprobe.ceilings import cache as ceilings_cache
from gpuprobe.ceilings.runner import Runner
from gpuprobe.ceilings.timing import Timer
from gpuprobe.errors import NotAvailable
from gpuprobe.roofline.schema import Roof, datasheet_roofs
from gpuprobe.specs.gpus import get_gpu, list_gpus

H100 = get_gpu("h100-sxm")
H100_DEVICE = "NVIDIA H100 80GB HBM3"  # the name NVML and torch report on the lent H100
NO_CUDA = not torch.cuda.is_available()

# ---------------------------------------------------------------------------------------------
# Sources and signatures
# ---------------------------------------------------------------------------------------------


def test_every_source_loads_and_needs_no_include():
    for f in C.SOURCE_FILES:
        src = C.load_source(f)
        assert 'extern "C"' in src
        assert not re.search(r"^\s*#\s*include", src, re.M)  # NVRTC gets no include path


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown microbenchmark source"):
        C.load_source("nope.cu")


def test_kernel_lookup_finds_every_entry_point_with_its_parameter_kinds():
    k = C.all_kernels()
    assert set(k) == {"dram_read", "dram_write", "dram_copy", "l2_read", "smem_read", "fma_fp32",
                      "mma_bf16", "mma_fp16"}
    assert k["dram_copy"].params == ("ptr", "ptr", "u32")
    assert k["fma_fp32"].params == ("f32", "f32", "u32", "ptr")
    assert k["l2_read"].source == "l2_bandwidth.cu"
    assert C.find_kernel("mma_bf16").params == ("ptr", "ptr", "u32", "ptr")
    with pytest.raises(KeyError, match="no kernel 'mma_fp8'"):
        C.find_kernel("mma_fp8")


def test_parse_kernels_reads_qualifiers_and_launch_bounds():
    src = '''extern "C" __global__ void __launch_bounds__(128, 2)
    k(const float* __restrict__ x, unsigned long long n, int s, double d, volatile unsigned int* y) {}
    __global__ void not_exported(int a) {}'''
    sigs = C.parse_kernels(src)
    assert list(sigs) == ["k"]
    assert sigs["k"].params == ("ptr", "u64", "i32", "f64", "ptr")
    with pytest.raises(ValueError, match="cannot pack"):
        C.parse_kernels('extern "C" __global__ void k(short s) {}')


def test_parse_constants():
    src = "#define THREADS 256\n#define TILE_VEC 2048 /* note */\n#define PASS (TILE_VEC / THREADS)\n  #define X (7)"
    assert C.parse_constants(src) == {"THREADS": 256, "TILE_VEC": 2048, "X": 7}


# ---------------------------------------------------------------------------------------------
# Argument packing
# ---------------------------------------------------------------------------------------------


def test_check_args_counts_ranges_and_tensors():
    sig = C.find_kernel("dram_read")
    t = torch.zeros(4)
    vals = C.check_args(sig, (t, 7, 12345))
    assert vals == [t.data_ptr(), 7, 12345]
    with pytest.raises(TypeError, match="takes 3 arguments"):
        C.check_args(sig, (t, 7))
    with pytest.raises(OverflowError, match="u32"):
        C.check_args(sig, (t, 2**32, 0))
    with pytest.raises(TypeError, match="expected an integer"):
        C.check_args(sig, (t, 1.5, 0))


def test_pack_numpy_uses_the_parameter_types():
    packed = C.pack_numpy(C.find_kernel("fma_fp32"), (1.0, 2.0, 9, 4096))
    assert [type(v) for v in packed] == [np.float32, np.float32, np.uint32, np.uint64]
    assert packed[2] == 9 and packed[3] == 4096


def test_pack_ctypes_builds_the_void_pointer_array_the_driver_reads():
    values, ptrs = C.pack_ctypes(C.find_kernel("l2_read"), (0xDEADBEEF000, 1000, 7, 0xABC0))
    assert len(ptrs) == 4
    assert ctypes.cast(ptrs[0], ctypes.POINTER(ctypes.c_uint64))[0] == 0xDEADBEEF000
    assert ctypes.cast(ptrs[1], ctypes.POINTER(ctypes.c_uint32))[0] == 1000
    assert ctypes.cast(ptrs[2], ctypes.POINTER(ctypes.c_uint32))[0] == 7
    f_values, f_ptrs = C.pack_ctypes(C.find_kernel("fma_fp32"), (1.0, 0.5, 3, 0))
    assert ctypes.cast(f_ptrs[1], ctypes.POINTER(ctypes.c_float))[0] == 0.5


def test_choose_backend(monkeypatch):
    assert C.choose_backend("nvrtc-ctypes") == "nvrtc-ctypes"
    monkeypatch.setenv("GPUPROBE_CEILINGS_BACKEND", "cupy")
    assert C.choose_backend() == "cupy"
    monkeypatch.delenv("GPUPROBE_CEILINGS_BACKEND")
    try:
        import cupy  # noqa: F401

        expected = "cupy"
    except Exception:
        expected = "nvrtc-ctypes"
    assert C.choose_backend() == expected
    with pytest.raises(ValueError, match="unknown compile backend"):
        C.choose_backend("nvcc")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", list_gpus(), ids=lambda g: g.name)
def test_plan_fits_every_registered_gpu(gpu):
    p = C.plan_benchmarks(gpu.sm_count, gpu.l2_bytes, int(gpu.memory_bytes * 0.9))
    assert p.dram_bytes >= 8 * gpu.l2_bytes and p.dram_bytes >= 2**30
    assert p.dram_bytes * 3 <= gpu.memory_bytes  # two buffers plus torch's temporaries fit
    assert p.dram_bytes // 16 < 2**31  # 32-bit vector indices in the kernels
    # the L2 buffer fits a quarter of the L2 and is whole grid-stride sweeps of UNROLL loads
    c = C.constants("l2_bandwidth.cu")
    sweep = p.l2_blocks * c["THREADS"] * c["UNROLL"] * 16
    assert 0 < p.l2_buffer_bytes <= gpu.l2_bytes // 4 and p.l2_buffer_bytes % sweep == 0
    f, m = C.constants("fma_peak.cu"), C.constants("tensor_mma.cu")
    assert 1 <= p.fma_iters <= C.fma_max_iters(f["CHAINS"], f["INNER"])
    assert 1 <= p.mma_iters <= C.mma_max_iters(m["ACC"], 16 * C.MMA_INPUT_MAX**2)


def test_h100_plan_matches_the_reference_copy_size():
    p = C.plan_benchmarks(132, 50 * 2**20, 79 * 2**30)
    assert p.dram_bytes == 2**30  # the 1 GiB buffers of the reference torch copy (3.01 TB/s)
    assert p.dram_blocks == 132 * 8 and p.gemm_n == 8192
    q = C.plan_benchmarks(132, 50 * 2**20, 79 * 2**30, quick=True)
    assert q.l2_reps < p.l2_reps and q.fma_iters < p.fma_iters and q.gemm_n < p.gemm_n


def test_plan_refuses_when_memory_is_too_small():
    with pytest.raises(NotAvailable, match="too little free GPU memory"):
        C.plan_benchmarks(132, 50 * 2**20, 1 * 2**30)
    with pytest.raises(ValueError):
        C.plan_benchmarks(0, 50 * 2**20, 2**36)


# ---------------------------------------------------------------------------------------------
# Result checks
# ---------------------------------------------------------------------------------------------


def test_u32_checksum_matches_wrapping_uint32_adds():
    words = np.random.default_rng(0).integers(-(2**31), 2**31, 1000, dtype=np.int64).astype(np.int32)
    acc = np.uint32(0)
    with np.errstate(over="ignore"):
        for _ in range(3):
            acc = np.uint32(acc + words.view(np.uint32).sum(dtype=np.uint32))
    assert C.u32_checksum(int(words.astype(np.int64).sum()), 3) == int(acc)


def test_fma_expected_matches_a_float32_simulation():
    chains, inner, iters, n = 8, 16, 5, 300
    x = np.array([[(t + k) & 255 for k in range(chains)] for t in range(n)], dtype=np.float32)
    one = np.float32(1.0)
    for _ in range(iters * inner):
        x = x * one + one  # exact in fp32 here, as FMA is
    want = x.sum(axis=1, dtype=np.float32)
    assert np.array_equal(C.fma_expected(n, chains, inner, iters), want.astype(np.float64))
    with pytest.raises(ValueError, match="exact range"):
        C.fma_expected(n, chains, inner, C.fma_max_iters(chains, inner) + 1)


def test_fma_bound_is_the_last_exact_trip_count():
    chains, inner = 8, 16
    top = C.fma_max_iters(chains, inner)
    assert chains * (255 + inner * top) < 2**24
    assert chains * (255 + inner * (top + 16)) >= 2**24 - 2**16  # not needlessly small


# PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": groupID = lane >> 2,
# threadID_in_group = lane % 4; a_i holds A[row][col], A[row][col + 1] with row = groupID (+8 for
# a1, a3) and col = 2 * threadID_in_group (+8 for a2, a3); b_i holds B[k][n], B[k + 1][n] with
# k = 2 * threadID_in_group (+8 for b1) and n = groupID; the lower index sits in the low half.
def _ptx_a(lane, i):
    g, t = lane >> 2, lane % 4
    return g + 8 * (i % 2), 2 * t + 8 * (i // 2)


def _ptx_b(lane, i):
    g, t = lane >> 2, lane % 4
    return 2 * t + 8 * i, g


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mma_fragments_follow_the_ptx_layout(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-2, 3, (16, 16), generator=gen).to(dtype)
    bt = torch.randint(-2, 3, (8, 16), generator=gen).to(dtype)
    aw, bw = C.mma_fragments(a, bt)
    aw, bw = aw.flatten().tolist(), bw.flatten().tolist()
    b = bt.T

    def halves(word):
        lo = torch.tensor([word & 0xFFFF], dtype=torch.int32).to(torch.int16).view(dtype).item()
        hi = torch.tensor([(word >> 16) & 0xFFFF], dtype=torch.int32).to(torch.int16).view(dtype).item()
        return lo, hi

    for lane in range(32):
        g, t = lane >> 2, lane & 3
        a_regs = [aw[g * 8 + t], aw[(g + 8) * 8 + t], aw[g * 8 + t + 4], aw[(g + 8) * 8 + t + 4]]  # as the kernel
        b_regs = [bw[g * 8 + t], bw[g * 8 + t + 4]]
        for i, word in enumerate(a_regs):
            r, col = _ptx_a(lane, i)
            assert halves(word) == (a[r, col].item(), a[r, col + 1].item())
        for i, word in enumerate(b_regs):
            k, n = _ptx_b(lane, i)
            assert halves(word) == (b[k, n].item(), b[k + 1, n].item())


def test_mma_expected_is_exact_and_bounded():
    a = torch.full((16, 16), 2.0, dtype=torch.bfloat16)
    bt = torch.full((8, 16), -2.0, dtype=torch.bfloat16)
    iters = C.mma_max_iters(8, 16 * C.MMA_INPUT_MAX**2)
    tile = C.mma_expected(a, bt, 8, iters)
    assert tile.shape == (16, 8) and (tile == -64 * 8 * iters).all()
    assert abs(tile).max() < 2**24
    with pytest.raises(ValueError):
        C.mma_fragments(a[:8], bt)


# ---------------------------------------------------------------------------------------------
# Results, cache, roofs
# ---------------------------------------------------------------------------------------------

TB = 1e12


def make_result(device=H100_DEVICE, driver="580.159.04", **values) -> C.CeilingsResult:
    """A run with figures about the lent H100's (reference: copy 3.01 TB/s, bf16 GEMM 803 TFLOP/s)."""
    figures = {"dram_copy": 2.98 * TB, "torch_copy": 3.01 * TB, "dram_read": 3.1 * TB, "dram_write": 3.0 * TB,
               "l2_read": 9.5 * TB, "smem_read": 30.0 * TB, "fp32_fma": 60.0 * TB, "mma_bf16": 560 * TB,
               "mma_fp16": 565 * TB, "cublas_bf16": 803 * TB, "cublas_fp16": 800 * TB}
    unverified = values.pop("unverified", ())
    figures.update(values)
    ms = {k: C.Measurement(k, v, k not in unverified, "test", [v, v]) for k, v in figures.items()}
    return C.CeilingsResult(device_name=device, gpu="h100-sxm" if "H100" in device else None, driver=driver,
                            backend="cupy", measured_at="2026-11-22T10:00:00Z", measurements=ms,
                            clocks={"sm_mhz": 1800.0, "sm_max_mhz": 1980}, seconds=4.2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPROBE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ceilings_cache, "present_gpu_identity", lambda: None)
    return tmp_path / "ceilings"


def test_result_round_trips_through_json(tmp_path):
    r = make_result(unverified=("l2_read",))
    path = r.write(tmp_path / "x.json")
    back = C.CeilingsResult.read(path)
    assert back.to_dict() == r.to_dict()
    assert back.measurements["l2_read"].verified is False
    assert json.loads(path.read_text())["schema_version"] == C.SCHEMA_VERSION


def test_copy_bandwidth_figure_is_the_better_verified_copy():
    assert make_result().copy_bytes_per_s == 3.01 * TB
    assert make_result(dram_copy=3.05 * TB).copy_bytes_per_s == 3.05 * TB
    assert make_result(unverified=("torch_copy",)).copy_bytes_per_s == 2.98 * TB
    assert make_result(unverified=("torch_copy", "dram_copy")).copy_bytes_per_s is None


def test_cache_write_read_round_trip(cache):
    r = make_result()
    path = C.save_cached(r)
    assert path.parent == cache and path.name == "nvidia-h100-80gb-hbm3__driver-580-159-04.json"
    for name in (H100_DEVICE, "h100-sxm", "NVIDIA H100 SXM5 80GB"):  # device, registry and display names
        got = C.cached_ceilings(name)
        assert got is not None and got.to_dict() == r.to_dict()
    assert C.cached_ceilings("h200") is None
    assert C.cached_ceilings("no-such-gpu") is None
    assert C.cached_ceilings() is None  # no GPU present


def test_cache_prefers_the_newest_run_and_skips_damaged_files(cache):
    old = make_result(driver="570.1")
    new = make_result(driver="580.159.04", dram_copy=3.02 * TB)
    new.measured_at = "2026-12-01T00:00:00Z"
    C.save_cached(old)
    C.save_cached(new)
    (cache / "broken.json").write_text("{not json")
    (cache / "old-schema.json").write_text(json.dumps({"schema_version": 0}))
    assert C.cached_ceilings("h100-sxm").driver == "580.159.04"


def test_cached_ceilings_for_the_present_gpu_uses_name_and_driver(cache, monkeypatch):
    C.save_cached(make_result())
    monkeypatch.setattr(ceilings_cache, "present_gpu_identity", lambda: (H100_DEVICE, "580.159.04"))
    assert C.cached_ceilings() is not None
    monkeypatch.setattr(ceilings_cache, "present_gpu_identity", lambda: (H100_DEVICE, "590.1"))
    assert C.cached_ceilings() is None  # a new driver: measure again


def test_measured_roofs_carry_roofline_names():
    roofs = {r.name: r for r in C.measured_roofs(make_result(), "bf16")}
    assert set(roofs) == {"dram", "l2", "smem", "fp32", "tensor_bf16", "mma_sync_bf16"}
    assert all(r.source == "measured" and isinstance(r, Roof) for r in roofs.values())
    assert roofs["dram"].value == 3.01 * TB and roofs["dram"].kind == "memory"
    assert roofs["tensor_bf16"].value == 803 * TB  # the best verified tensor rate: cuBLAS
    assert roofs["mma_sync_bf16"].value == 560 * TB
    fp32 = {r.name for r in C.measured_roofs(make_result(), "fp32")}
    assert fp32 == {"dram", "l2", "smem", "fp32"}
    unverified = {r.name for r in C.measured_roofs(make_result(unverified=("l2_read",)), "fp16")}
    assert "l2" not in unverified and "tensor_fp16" in unverified


def test_cached_roofs_make_the_ceilings_measured_and_fall_back_to_datasheet():
    """A cached run's roofs through the one chooser every roofline uses (roofline.schema.roofs_and_ceilings)."""
    from gpuprobe.roofline.schema import roofs_and_ceilings

    def chosen(gpu, dtype, cached):
        roofs = C.measured_roofs(cached, dtype) if cached is not None and cached.registry_gpu == gpu.name else []
        return roofs_and_ceilings(gpu, dtype, extra_roofs=roofs)[1]

    c = chosen(H100, "bf16", None)
    assert (c.dram_bytes_per_s, c.flops_per_s, c.dram_source) == (H100.dram_bytes_per_s, H100.bf16_flops_per_s,
                                                                  "datasheet")
    c = chosen(H100, "bf16", make_result())
    assert (c.dram_bytes_per_s, c.flops_per_s, c.dram_source, c.compute_source) == (3.01 * TB, 803 * TB, "measured",
                                                                                    "measured")
    assert c.dram_roof == "dram" and c.compute_roof == "tensor_bf16"
    assert c.ridge == pytest.approx(266.8, abs=0.5)  # the reference ridge (~267 FLOP/byte)
    assert chosen(get_gpu("h200"), "bf16", make_result()).dram_source == "datasheet"  # another GPU's run
    assert chosen(H100, "fp32", make_result()).flops_per_s == 60 * TB  # fp32: the FMA kernel's figure
    c = chosen(H100, "bf16", make_result(unverified=("cublas_bf16", "mma_bf16")))
    assert (c.dram_source, c.compute_source) == ("measured", "datasheet")  # no verified tensor figure


def test_datasheet_roofs_and_measured_roofs_share_names():
    sheet = {r.name for r in datasheet_roofs(H100, "bf16")}
    measured = {r.name for r in C.measured_roofs(make_result(), "bf16")}
    assert sheet <= measured


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def test_targets_pass_on_reference_like_figures():
    figures, failures = C.evaluate_targets(make_result(), H100)
    assert failures == []
    assert figures["copy_vs_torch"] == pytest.approx(2.98 / 3.01, abs=1e-4)
    # 60 TFLOP/s at 1800 of 1980 MHz: the datasheet's 66.9 scaled is 60.8
    assert figures["fp32_vs_scaled_datasheet"] == pytest.approx(60 / (66.9 * 1800 / 1980), abs=1e-3)
    assert figures["mma_bf16_vs_cublas"] == pytest.approx(560 / 803, abs=1e-4)
    assert figures["dram_copy_vs_datasheet"] == pytest.approx(2.98 / 3.35, abs=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"dram_copy": 2.80 * TB}, "of torch's copy"),
    ({"fp32_fma": 50 * TB}, "FP32 FMA"),
    ({"unverified": ("l2_read",)}, "l2_read: its result did not check out"),
    ({"smem_read": 0.0}, "not positive"),
])
def test_targets_fail_where_a_claim_does_not_hold(change, message):
    _, failures = C.evaluate_targets(make_result(**change), H100)
    assert any(message in f for f in failures), failures


def test_mma_sync_over_cublas_is_a_figure_never_a_failure():
    figures, failures = C.evaluate_targets(make_result(mma_fp16=100 * TB), H100)
    assert figures["mma_fp16_vs_cublas"] < 0.2 and not any("mma" in f for f in failures)


def test_targets_without_clock_or_spec_do_not_invent_a_comparison():
    r = make_result()
    r.clocks = {}
    figures, failures = C.evaluate_targets(r, H100)
    assert figures["fp32_vs_scaled_datasheet"] is None and failures == []
    figures, failures = C.evaluate_targets(make_result(device="Some Future GPU"), None)
    assert "dram_copy_vs_datasheet" not in figures and failures == []


# ---------------------------------------------------------------------------------------------
# Clocks and identity through gpuprobe.system.telemetry, against a stand-in for pynvml
# ---------------------------------------------------------------------------------------------


class _FakeNVML:
    """Answers as NVML does on the lent H100 (max SM 1980 MHz, max memory 2619 MHz)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self, sm_readings=(1755, 1980), fail_init=False):
        self.sm_readings, self.fail_init, self.reads, self.inits = list(sm_readings), fail_init, 0, 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("index", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("uuid", uuid)

    def nvmlDeviceGetName(self, h):
        return H100_DEVICE

    def nvmlSystemGetDriverVersion(self):
        return b"580.159.04"

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetClockInfo(self, h, kind):
        if kind == self.NVML_CLOCK_MEM:
            return 2619
        self.reads += 1
        return self.sm_readings[(self.reads - 1) % len(self.sm_readings)]


def test_clock_sampler_reads_clocks_limits_and_driver_through_telemetry():
    from gpuprobe.ceilings.clocks import ClockSampler

    nv = _FakeNVML()
    clocks = ClockSampler(0, nvml=nv)
    assert clocks.info == {"sm_max_mhz": 1980, "mem_max_mhz": 2619, "driver": "580.159.04"}
    start = clocks.window()
    clocks.sample()
    clocks.sample()
    assert clocks.sm == [1755.0, 1980.0] and clocks.mem == [2619.0, 2619.0]
    assert clocks.mean_since(start) == 1867.5 and clocks.mean_since(clocks.window()) is None
    assert clocks.summary() == {"sm_max_mhz": 1980, "mem_max_mhz": 2619, "sm_mhz": 1867.5, "sm_mhz_min": 1755.0,
                                "sm_mhz_max": 1980.0, "mem_mhz": 2619.0}
    clocks.close()
    assert nv.inits == 0  # every NVML init is paired with a shutdown


def test_timer_samples_the_clocks_once_per_trial():
    from gpuprobe.ceilings.clocks import ClockSampler

    clocks = ClockSampler(0, nvml=_FakeNVML())
    per, launches = Timer(trial_s=0.0, trials=3, clocks=clocks, event=_FakeEvent).run(lambda: None)
    assert len(per) == 3 and launches == 2 + 3 and len(clocks.sm) == 3


def test_clock_sampler_and_identity_without_nvml():
    from gpuprobe.ceilings.clocks import ClockSampler
    from gpuprobe.ceilings.device import present_gpu_identity

    clocks = ClockSampler(0, nvml=_FakeNVML(fail_init=True))
    clocks.sample()
    assert clocks.telemetry is None and clocks.sm == [] and clocks.info == {} and clocks.summary() == {}
    assert present_gpu_identity(nvml=_FakeNVML()) == (H100_DEVICE, "580.159.04")
    if NO_CUDA:
        assert present_gpu_identity(nvml=_FakeNVML(fail_init=True)) is None


# ---------------------------------------------------------------------------------------------
# Without a GPU: CLI, copy_bandwidth, selftest check
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not NO_CUDA, reason="checks the no-GPU path")
@pytest.mark.parametrize("argv", [["ceilings"], ["ceilings", "--refresh", "--json"]])
def test_cli_without_gpu_says_so_in_one_line_and_exits_2(argv, capsys):
    from gpuprobe.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "no CUDA GPU" in err


@pytest.mark.skipif(not NO_CUDA, reason="checks the no-GPU path")
def test_copy_bandwidth_without_gpu_raises_not_available():
    with pytest.raises(NotAvailable, match="no CUDA GPU"):
        C.copy_bandwidth()


@pytest.mark.skipif(not NO_CUDA, reason="checks the no-GPU path")
def test_selftest_check_skips_without_gpu(tmp_path):
    from gpuprobe.tools.selftest.registry import CheckContext, Skip, all_checks

    chk = all_checks()["ceilings"]
    assert chk is not None and chk.owner == "ceilings" and chk.gpu
    with pytest.raises(Skip, match="no CUDA GPU"):
        chk.func(CheckContext(out_dir=tmp_path, gpu=True, budget_s=chk.budget_s))


def test_cli_table_shows_measured_datasheet_and_ratio():
    import io

    from gpuprobe.render.ceilings_table import ceilings_notes, print_ceilings

    out = io.StringIO()
    print_ceilings(make_result(unverified=("l2_read",)), H100, None, False, "table", stream=out)
    text = out.getvalue()
    torch_row = next(line for line in text.splitlines() if line.startswith("DRAM copy (torch)"))
    assert "3.010" in torch_row and "3.350" in torch_row and "89.85" in torch_row  # % of datasheet
    assert "FAILED" in text  # the unverified L2 row
    assert "FP32 FMA vs datasheet at the SM clock seen" in text
    footer = " ".join(ceilings_notes(make_result(), None, False))
    assert "3.010 TB/s" in footer and "not cached" in footer


# ---------------------------------------------------------------------------------------------
# The runner's host side end to end, with CPU stand-ins for the kernels (their semantics as the
# sources state them) and for CUDA events: buffers, launch arguments, launch counting and every
# result check, as they run on a GPU.
# ---------------------------------------------------------------------------------------------


class _FakeEvent:
    def record(self):
        import time

        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return max(end.t - self.t, 1e-7) * 1e3


def _wrap_add(checksum, value):
    total = (int(checksum.item()) & 0xFFFFFFFF) + int(value)
    total %= 2**32
    checksum.fill_(total - 2**32 if total >= 2**31 else total)


def _fake_kernels(tamper: str | None = None):
    tile = C.constants("smem_bandwidth.cu")["TILE_VEC"]
    fc, mc = C.constants("fma_peak.cu"), C.constants("tensor_mma.cu")

    def words_sum(t):
        return int(t.view(torch.int32).to(torch.int64).sum())

    def dram_read(grid, block, args, stream):
        src, n_vec, checksum = args
        _wrap_add(checksum, words_sum(src[: 4 * n_vec]))

    def dram_write(grid, block, args, stream):
        dst, n_vec, seed = args
        j = torch.arange(4 * n_vec, dtype=torch.int64) ^ seed
        dst[: 4 * n_vec] = torch.where(j >= 2**31, j - 2**32, j).to(torch.int32)
        if tamper == "dram_write":
            dst[7] += 1

    def dram_copy(grid, block, args, stream):
        src, dst, n_vec = args
        dst[: 4 * n_vec] = src[: 4 * n_vec]

    def l2_read(grid, block, args, stream):
        src, n_vec, reps, checksum = args
        _wrap_add(checksum, reps * words_sum(src[: 4 * n_vec]) + (tamper == "l2_read"))

    def smem_read(grid, block, args, stream):
        src, reps, checksum = args
        _wrap_add(checksum, grid * reps * words_sum(src[: 4 * tile]))

    def fma_fp32(grid, block, args, stream):
        a, b, iters, out = args
        t = torch.arange(grid * block)
        x = torch.stack([((t + k) & 255).float() for k in range(fc["CHAINS"])])
        for _ in range(iters * fc["INNER"]):
            x = x * a + b
        out.copy_(x.sum(0))

    def mma(dtype):
        def launch(grid, block, args, stream):
            a_words, bt_words, iters, out = args
            a = a_words.contiguous().view(dtype).reshape(16, 16).float()
            bt = bt_words.contiguous().view(dtype).reshape(8, 16).float()
            out.copy_((mc["ACC"] * iters * (a @ bt.T)).expand_as(out))
        return launch

    fns = {"dram_read": dram_read, "dram_write": dram_write, "dram_copy": dram_copy, "l2_read": l2_read,
           "smem_read": smem_read, "fma_fp32": fma_fp32, "mma_bf16": mma(torch.bfloat16),
           "mma_fp16": mma(torch.float16)}
    sigs = C.all_kernels()

    def kernel(name):
        def launch(grid, block, args, stream):
            C.check_args(sigs[name], args)  # the runner passes what the C signature takes
            fns[name](grid, block, args, stream)
        return C.Kernel(sigs[name], "fake", launch)

    return {name: kernel(name) for name in sigs}


def _small_plan() -> C.BenchPlan:
    return C.BenchPlan(sm_count=2, l2_bytes=2**20, dram_bytes=2**16, dram_blocks=4, l2_buffer_bytes=2**14,
                       l2_blocks=2, l2_reps=3, smem_blocks=3, smem_reps=5, fma_blocks=2, fma_iters=3,
                       mma_blocks=2, mma_iters=7, gemm_n=64)


def _run_all(tamper: str | None = None) -> dict[str, C.Measurement]:
    timer = Timer(trial_s=0.0, trials=2, event=_FakeEvent)
    runner = Runner(_fake_kernels(tamper), _small_plan(), timer, lambda msg: None,
                       device=torch.device("cpu"), stream=0)
    return runner.run_all()


def test_runner_checks_pass_when_kernels_do_what_the_sources_say():
    out = _run_all()
    assert set(out) == set(C.MEASUREMENTS)  # every benchmark of a run, both dtypes
    bad = {k: m.check for k, m in out.items() if not m.verified}
    assert bad == {}
    assert all(m.value > 0 and len(m.trials) >= 2 for m in out.values())
    assert out["dram_copy"].detail["bytes_per_launch"] == 2 * 2**16  # read + written


@pytest.mark.parametrize("kernel", ["dram_write", "l2_read"])
def test_runner_checks_catch_a_wrong_result(kernel):
    out = _run_all(tamper=kernel)
    assert not out[kernel].verified
    assert all(m.verified for k, m in out.items() if k != kernel)


# ---------------------------------------------------------------------------------------------
# The two launch paths against stand-ins of their real interfaces (no GPU)
# ---------------------------------------------------------------------------------------------

# A stand-in for the CUDA driver (a labelled fake, not NVIDIA's library): the five entry points the
# ctypes backend calls, with the driver's C signatures, recording what a launch received through
# the real C calling convention: the launch shape, the stream, and each parameter read through the
# kernelParams void** array at the width the kernel's C signature gives it.
_FAKE_LIBCUDA = r"""
#include <stdint.h>
#include <string.h>
typedef int CUresult;
static char context_object, module_object, function_object;
static const char *module_image = 0;
unsigned int seen_grid[3], seen_block[3], seen_shared;
void *seen_stream;
uint64_t seen_p0, seen_p3;
uint32_t seen_p1, seen_p2;
char seen_function[64];
CUresult cuCtxGetCurrent(void **ctx) { *ctx = &context_object; return 0; }
CUresult cuDeviceGet(int *dev, int ordinal) { *dev = ordinal; return 0; }
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) { *ctx = &context_object; return 0; }
CUresult cuCtxSetCurrent(void *ctx) { return 0; }
CUresult cuGetErrorString(CUresult code, const char **msg) { *msg = "fake error"; return 0; }
CUresult cuModuleLoadData(void **module, const void *image) {
    module_image = (const char *)image;
    *module = &module_object;
    return memcmp(image, "\177ELF", 4) == 0 ? 0 : 200; /* a cubin is an ELF image */
}
CUresult cuModuleGetFunction(void **fn, void *module, const char *name) {
    if (module != &module_object) return 400;
    strncpy(seen_function, name, sizeof(seen_function) - 1);
    *fn = &function_object;
    return 0;
}
CUresult cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, void *stream,
                        void **params, void **extra) {
    if (f != &function_object || extra != 0) return 1;
    seen_grid[0] = gx; seen_grid[1] = gy; seen_grid[2] = gz;
    seen_block[0] = bx; seen_block[1] = by; seen_block[2] = bz;
    seen_shared = shared; seen_stream = stream;
    seen_p0 = *(uint64_t *)params[0]; seen_p1 = *(uint32_t *)params[1];
    seen_p2 = *(uint32_t *)params[2]; seen_p3 = *(uint64_t *)params[3];
    return 0;
}
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory):
    import shutil
    import subprocess

    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the driver stand-in")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "fake_cuda.c").write_text(_FAKE_LIBCUDA)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(d / "libfakecuda.so"), str(d / "fake_cuda.c")],
                   check=True)
    return str(d / "libfakecuda.so")


def test_ctypes_backend_loads_a_real_cubin_and_launches_through_the_driver_abi(fake_libcuda):
    """NVRTC compiles l2_bandwidth.cu for sm_90 (real), the driver stand-in receives an ELF cubin, the
    function by its extern "C" name, and a launch whose void** parameters read back at their C widths."""
    from gpuprobe.ceilings.backends import _CtypesBackend

    try:
        backend = _CtypesBackend(0, "sm_90", libcuda=fake_libcuda)
    except NotAvailable as e:
        pytest.skip(str(e))
    src = C.load_source("l2_bandwidth.cu")
    kernels = backend.load("l2_bandwidth.cu", src, C.parse_kernels(src, "l2_bandwidth.cu"))
    lib = backend.cuda
    assert bytes((ctypes.c_char * 64).in_dll(lib, "seen_function")).rstrip(b"\0") == b"l2_read"
    kernels["l2_read"](264, 256, (0x7F0000001000, 123456, 77, 0x7F0000002000), 0xABCDEF)
    assert list((ctypes.c_uint * 3).in_dll(lib, "seen_grid")) == [264, 1, 1]
    assert list((ctypes.c_uint * 3).in_dll(lib, "seen_block")) == [256, 1, 1]
    assert ctypes.c_uint.in_dll(lib, "seen_shared").value == 0
    assert ctypes.c_void_p.in_dll(lib, "seen_stream").value == 0xABCDEF
    assert ctypes.c_uint64.in_dll(lib, "seen_p0").value == 0x7F0000001000
    assert ctypes.c_uint32.in_dll(lib, "seen_p1").value == 123456
    assert ctypes.c_uint32.in_dll(lib, "seen_p2").value == 77
    assert ctypes.c_uint64.in_dll(lib, "seen_p3").value == 0x7F0000002000


class _FakeCupy:
    """A stand-in for the few CuPy names the CuPy backend uses (labelled fake: records calls only)."""

    def __init__(self):
        self.calls = []
        self.modules = []
        fake = self

        class Stream:
            def __init__(self, ptr):
                self.ptr = ptr

        class ExternalStream(Stream):
            pass

        Stream.null = Stream(0)

        class Device:
            def __init__(self, index):
                self.index = index

            def use(self):
                fake.device = self.index

        class RawModule:
            def __init__(self, code=None, options=(), **kw):
                self.code, self.kw = code, kw
                fake.modules.append(self)

            def get_function(self, name):
                def fn(grid, block, args, *, shared_mem=0, stream=None):
                    fake.calls.append((name, grid, block, args, stream))
                return fn

        self.RawModule = RawModule
        self.cuda = type("cuda", (), {"Device": Device, "Stream": Stream, "ExternalStream": ExternalStream})


def test_cupy_backend_passes_torch_stream_and_typed_arguments(monkeypatch):
    """RawModule gets the shipped source as it is; a launch gets 1-D grid and block tuples, NumPy
    scalars of the parameters' C types, and torch's stream (the null stream for handle 0)."""
    from gpuprobe.ceilings.backends import _CupyBackend

    fake = _FakeCupy()
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    backend = _CupyBackend(0)
    src = C.load_source("fma_peak.cu")
    kernels = backend.load("fma_peak.cu", src, C.parse_kernels(src, "fma_peak.cu"))
    assert fake.modules[0].code == src and fake.device == 0
    kernels["fma_fp32"](1056, 256, (1.0, 0.5, 1700, 0x7F00_0000_0000), 0)
    kernels["fma_fp32"](1056, 256, (1.0, 0.5, 1700, 0x7F00_0000_0000), 0x55AA)
    (name, grid, block, args, stream), second = fake.calls
    assert (name, grid, block) == ("fma_fp32", (1056,), (256,))
    assert [a.dtype.name for a in args] == ["float32", "float32", "uint32", "uint64"]
    assert args[1] == np.float32(0.5) and int(args[3]) == 0x7F00_0000_0000
    assert stream is fake.cuda.Stream.null
    assert second[4].ptr == 0x55AA and isinstance(second[4], fake.cuda.ExternalStream)
