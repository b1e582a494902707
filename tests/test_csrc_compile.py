"""The csrc microbenchmarks compile for Hopper (sm_90) without spills, and the machine code holds
what each source claims: 16-byte vector loads and stores, L1-bypassing L2 loads, shared-memory
vector loads, FFMA chains, HMMA tensor instructions. Built with nvcc (skipped without it) and with
NVRTC, the compiler the runtime path uses (skipped without libnvrtc)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuprobe import ceilings as C

NVCC = shutil.which("nvcc")


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:  # Triton's wheel ships one
        import triton

        cand = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(cand) if cand.exists() else None
    except ImportError:
        return None


CUOBJDUMP = _cuobjdump()


@dataclass
class Build:
    ptxas: str  # ptxas -v report
    ptx: str
    sass: str | None


def _sass(cubin: Path) -> str | None:
    if CUOBJDUMP is None:
        return None
    return subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout


def _nvcc_build(filename: str, workdir: Path) -> Build:
    src = workdir / filename
    src.write_text(C.load_source(filename))
    keep = workdir / (filename + ".keep")
    keep.mkdir()
    cubin = workdir / (filename + ".cubin")
    proc = subprocess.run([NVCC, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "--keep", "--keep-dir", str(keep),
                           "-o", str(cubin), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = "".join(Path(p).read_text() for p in glob.glob(str(keep / "*.ptx")))
    return Build(proc.stdout + proc.stderr, ptx, _sass(cubin))


@pytest.fixture(scope="module")
def nvcc_builds() -> dict[str, Build]:
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {f: pool.submit(_nvcc_build, f, Path(tmp)) for f in C.SOURCE_FILES}
        return {f: fut.result() for f, fut in futures.items()}


def _spill_lines(report: str) -> list[str]:
    return re.findall(r"\d+ bytes stack frame, \d+ bytes spill stores, \d+ bytes spill loads", report)


def _entries(report: str) -> set[str]:
    return set(re.findall(r"Compiling entry function '(\w+)'", report))


@pytest.mark.parametrize("filename", C.SOURCE_FILES)
def test_nvcc_no_spills_no_stack(nvcc_builds, filename):
    b = nvcc_builds[filename]
    kernels = set(C.parse_kernels(C.load_source(filename)))
    assert _entries(b.ptxas) == kernels
    lines = _spill_lines(b.ptxas)
    assert len(lines) == len(kernels)
    assert all(line == "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" for line in lines), lines


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def test_dram_kernels_use_16_byte_accesses(nvcc_builds):
    b = nvcc_builds["dram_bandwidth.cu"]
    unroll = C.constants("dram_bandwidth.cu")["UNROLL"]
    # read and copy each issue UNROLL vector loads in the main loop plus one in the tail
    assert _count(r"ld\.global(\.nc)?\.v4\.u32", b.ptx) >= 2 * (unroll + 1)
    assert _count(r"st\.global\.v4\.u32", b.ptx) >= 2 * (unroll + 1)  # write and copy
    assert not re.search(r"ld\.global(\.nc)?\.u32\b", b.ptx), "a scalar global load crept into a DRAM kernel"
    if b.sass is not None:
        assert _count(r"LDG\.E\.128", b.sass) >= 2 * (unroll + 1)
        assert _count(r"STG\.E\.128", b.sass) >= 2 * (unroll + 1)


def test_l2_kernel_bypasses_l1_with_vector_loads(nvcc_builds):
    b = nvcc_builds["l2_bandwidth.cu"]
    unroll = C.constants("l2_bandwidth.cu")["UNROLL"]
    assert _count(r"ld\.global\.cg\.v4\.u32", b.ptx) >= unroll + 1
    assert not re.search(r"ld\.global\.(nc|ca)", b.ptx)
    if b.sass is not None:
        assert _count(r"LDG\.E\.128", b.sass) >= unroll + 1
        assert "LDG.E.128.CONSTANT" not in b.sass  # not through the read-only (L1) path


def test_smem_kernel_reads_shared_memory_with_vector_loads(nvcc_builds):
    b = nvcc_builds["smem_bandwidth.cu"]
    c = C.constants("smem_bandwidth.cu")
    assert f"{c['TILE_VEC'] * 16} bytes smem" in b.ptxas
    assert _count(r"ld\.shared\.v4\.u32", b.ptx) >= c["TILE_VEC"] // c["THREADS"]
    if b.sass is not None:
        assert _count(r"LDS\.128", b.sass) >= c["TILE_VEC"] // c["THREADS"]


def test_fma_kernel_is_ffma_chains(nvcc_builds):
    b = nvcc_builds["fma_peak.cu"]
    c = C.constants("fma_peak.cu")
    assert _count(r"fma\.rn\.f32", b.ptx) >= c["CHAINS"] * c["INNER"]
    if b.sass is not None:
        assert _count(r"\bFFMA\b", b.sass) >= c["CHAINS"] * c["INNER"]
        assert not re.search(r"\b(LDG|STL|LDL)\b", b.sass.split("FFMA", 1)[1].rsplit("FFMA", 1)[0]), \
            "memory traffic inside the FMA loop"


def test_tensor_kernel_issues_mma_sync_m16n8k16(nvcc_builds):
    b = nvcc_builds["tensor_mma.cu"]
    acc = C.constants("tensor_mma.cu")["ACC"]
    assert _count(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32", b.ptx) >= acc
    assert _count(r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.f16\.f16\.f32", b.ptx) >= acc
    if b.sass is not None:
        assert _count(r"HMMA\.16816\.F32\.BF16", b.sass) >= acc
        assert _count(r"HMMA\.16816\.F32 ", b.sass) >= acc  # the fp16 variant


def _have_nvrtc() -> bool:
    try:
        C.load_libnvrtc()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _have_nvrtc(), reason="libnvrtc not found (install nvidia-cuda-nvrtc to run this)")
@pytest.mark.parametrize("filename", C.SOURCE_FILES)
def test_nvrtc_compiles_as_shipped_for_sm90(filename, tmp_path):
    """The runtime path: NVRTC, no include paths, the options gpuprobe passes; no spills."""
    cubin, log = C.nvrtc_compile(C.load_source(filename), filename, "sm_90", ("--ptxas-options=-v",))
    assert cubin[:4] == b"\x7fELF"
    kernels = set(C.parse_kernels(C.load_source(filename)))
    assert _entries(log) == kernels
    assert all(line == "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" for line in _spill_lines(log))
    if CUOBJDUMP is not None:
        path = tmp_path / "k.cubin"
        path.write_bytes(cubin)
        sass = _sass(path)
        for name in kernels:
            assert f"Function : {name}" in sass
