"""Runs each microbenchmark once on the GPU, with the torch copy and cuBLAS references measured in
the same run, and checks every kernel's result (:class:`Runner`)."""
from __future__ import annotations

import math
from typing import Any, Callable

from gpuprobe.ceilings.expected import fma_expected, mma_expected, mma_fragments, u32_checksum
from gpuprobe.ceilings.launch import Kernel
from gpuprobe.ceilings.plan import MMA_INPUT_MAX, BenchPlan
from gpuprobe.ceilings.result import Measurement
from gpuprobe.ceilings.sources import constants
from gpuprobe.ceilings.timing import Timer, rate


def _random_words(n_words: int, device):
    import torch

    return torch.randint(-(2**31), 2**31 - 1, (n_words,), dtype=torch.int32, device=device)


def _word_sum(t) -> int:
    import torch

    return int(t.view(torch.int32).sum(dtype=torch.int64).item())


def _u32(t) -> int:
    return int(t.item()) & 0xFFFFFFFF


class Runner:
    """Runs each microbenchmark once, with the buffers and launch shapes of a plan."""

    def __init__(self, kernels: dict[str, Kernel], plan: BenchPlan, timer: Timer, log: Callable[[str], None],
                 device: Any = None, stream: int | None = None):
        import torch

        self.torch = torch
        self.k = kernels
        self.plan = plan
        self.timer = timer
        self.log = log
        self.dev = device if device is not None else torch.device("cuda", torch.cuda.current_device())
        self.stream = stream if stream is not None else torch.cuda.current_stream().cuda_stream
        self.out: dict[str, Measurement] = {}

    def _record(self, m: Measurement, clock_start: int | None = None) -> None:
        if clock_start is not None and self.timer.clocks is not None:
            m.detail["sm_mhz"] = self.timer.clocks.mean_since(clock_start)
        self.out[m.name] = m
        unit = "TB/s" if m.kind == "memory" else "TFLOP/s"
        self.log(f"{m.name}: {m.value / 1e12:.3f} {unit}{'' if m.verified else '  (RESULT CHECK FAILED)'}")

    def dram(self) -> None:
        torch, p = self.torch, self.plan
        n_words = p.dram_bytes // 4
        n_vec = n_words // 4
        src = _random_words(n_words, self.dev)
        dst = torch.empty_like(src)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        grid, block = p.dram_blocks, p.threads

        def copy_kernel():
            self.k["dram_copy"](grid, block, (src, dst, n_vec), self.stream)

        def copy_torch():
            dst.copy_(src)

        # Interleave the two copies' trials so clocks and temperature drift alike for both.
        per_k, per_t, c0 = [], [], (self.timer.clocks.window() if self.timer.clocks else None)
        for _ in range(3):
            pk, _ = self.timer.run(copy_kernel)
            pt, _ = self.timer.run(copy_torch)
            per_k += pk
            per_t += pt
        moved = 2 * n_vec * 16
        for name, per, launch in (("dram_copy", per_k, copy_kernel), ("torch_copy", per_t, copy_torch)):
            dst.zero_()
            launch()
            ok = bool(torch.equal(dst, src))
            value, rates = rate(moved, per)
            self._record(Measurement(name, value, ok, "destination equals source after one more launch", rates,
                                     {"bytes_per_launch": moved, "buffer_bytes": n_vec * 16}), c0)

        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        checksum.zero_()
        per, launches = self.timer.run(lambda: self.k["dram_read"](grid, block, (src, n_vec, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches)
        value, rates = rate(n_vec * 16, per)
        self._record(Measurement("dram_read", value, ok, "checksum = launches x sum of words (mod 2^32)", rates,
                                 {"bytes_per_launch": n_vec * 16, "launches": launches}), c0)

        seed = 0x5EED1234
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        dst.zero_()
        per, _ = self.timer.run(lambda: self.k["dram_write"](grid, block, (dst, n_vec, seed), self.stream))
        ok = self._check_pattern(dst, seed)
        value, rates = rate(n_vec * 16, per)
        self._record(Measurement("dram_write", value, ok, "word j = j ^ seed", rates,
                                 {"bytes_per_launch": n_vec * 16}), c0)
        src = dst = None  # release the buffers before emptying the cache
        torch.cuda.empty_cache()

    def _check_pattern(self, words, seed: int) -> bool:
        torch = self.torch
        chunk = 1 << 26
        for lo in range(0, words.numel(), chunk):
            hi = min(words.numel(), lo + chunk)
            want = torch.arange(lo, hi, dtype=torch.int64, device=self.dev) ^ seed
            want = torch.where(want >= 2**31, want - 2**32, want).to(torch.int32)
            if not torch.equal(words[lo:hi], want):
                return False
        return True

    def l2(self) -> None:
        torch, p = self.torch, self.plan
        n_vec = p.l2_buffer_bytes // 16
        src = _random_words(n_vec * 4, self.dev)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, launches = self.timer.run(
            lambda: self.k["l2_read"](p.l2_blocks, p.threads, (src, n_vec, p.l2_reps, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches * p.l2_reps)
        value, rates = rate(n_vec * 16 * p.l2_reps, per)
        self._record(Measurement("l2_read", value, ok, "checksum = launches x reps x sum of words (mod 2^32)", rates,
                                 {"buffer_bytes": n_vec * 16, "reps": p.l2_reps, "blocks": p.l2_blocks}), c0)

    def smem(self) -> None:
        torch, p = self.torch, self.plan
        tile = constants("smem_bandwidth.cu")["TILE_VEC"]
        src = _random_words(tile * 4, self.dev)
        checksum = torch.zeros(1, dtype=torch.int32, device=self.dev)
        s = _word_sum(src)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, launches = self.timer.run(
            lambda: self.k["smem_read"](p.smem_blocks, p.threads, (src, p.smem_reps, checksum), self.stream))
        ok = _u32(checksum) == u32_checksum(s, launches * p.smem_blocks * p.smem_reps)
        value, rates = rate(p.smem_blocks * p.smem_reps * tile * 16, per)
        self._record(Measurement("smem_read", value, ok, "checksum = launches x blocks x reps x sum of tile (mod 2^32)",
                                 rates, {"blocks": p.smem_blocks, "reps": p.smem_reps, "tile_bytes": tile * 16}), c0)

    def fma(self) -> None:
        torch, p = self.torch, self.plan
        c = constants("fma_peak.cu")
        n_threads = p.fma_blocks * c["THREADS"]
        out = torch.full((n_threads,), float("nan"), dtype=torch.float32, device=self.dev)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(
            lambda: self.k["fma_fp32"](p.fma_blocks, c["THREADS"], (1.0, 1.0, p.fma_iters, out), self.stream))
        want = fma_expected(n_threads, c["CHAINS"], c["INNER"], p.fma_iters)
        ok = bool((out.double().cpu().numpy() == want).all())
        flops = 2.0 * n_threads * c["CHAINS"] * c["INNER"] * p.fma_iters
        value, rates = rate(flops, per)
        self._record(Measurement("fp32_fma", value, ok, "every thread's counted-up chains, exactly", rates,
                                 {"flops_per_launch": flops, "iters": p.fma_iters, "blocks": p.fma_blocks}), c0)

    def mma(self, dtype: str) -> None:
        torch, p = self.torch, self.plan
        c = constants("tensor_mma.cu")
        tdt = torch.bfloat16 if dtype == "bf16" else torch.float16
        gen = torch.Generator().manual_seed(1234)
        a = torch.randint(-MMA_INPUT_MAX, MMA_INPUT_MAX + 1, (16, 16), generator=gen).to(tdt)
        bt = torch.randint(-MMA_INPUT_MAX, MMA_INPUT_MAX + 1, (8, 16), generator=gen).to(tdt)
        a_words, bt_words = (w.to(self.dev) for w in mma_fragments(a, bt))
        warps = p.mma_blocks * c["THREADS"] // 32
        out = torch.full((warps, 16, 8), float("nan"), dtype=torch.float32, device=self.dev)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(lambda: self.k[f"mma_{dtype}"](
            p.mma_blocks, c["THREADS"], (a_words, bt_words, p.mma_iters, out), self.stream))
        want = torch.from_numpy(mma_expected(a, bt, c["ACC"], p.mma_iters)).to(self.dev)
        ok = bool((out.double() == want).all())
        flops = 2.0 * 16 * 8 * 16 * warps * c["ACC"] * p.mma_iters
        value, rates = rate(flops, per)
        self._record(Measurement(f"mma_{dtype}", value, ok, "every warp's tile = ACC x iters x (A @ B), exactly",
                                 rates, {"flops_per_launch": flops, "iters": p.mma_iters, "warps": warps}), c0)

    def run_all(self, dtypes: tuple[str, ...] = ("bf16", "fp16")) -> dict[str, Measurement]:
        """Every benchmark in order (DRAM, L2, shared memory, FP32, mma.sync and cuBLAS per dtype)."""
        self.dram()
        self.l2()
        self.smem()
        self.fma()
        for dt in dtypes:
            self.mma(dt)
        for dt in dtypes:
            self.cublas(dt)
        return self.out

    def cublas(self, dtype: str) -> None:
        torch, n = self.torch, self.plan.gemm_n
        tdt = torch.bfloat16 if dtype == "bf16" else torch.float16
        a = torch.randn(n, n, device=self.dev).to(tdt)
        b = torch.randn(n, n, device=self.dev).to(tdt)
        out = torch.empty(n, n, device=self.dev, dtype=tdt)
        c0 = self.timer.clocks.window() if self.timer.clocks else None
        per, _ = self.timer.run(lambda: torch.mm(a, b, out=out))
        ref = a[:64].float() @ b[:, :64].float()
        ok = bool(torch.allclose(out[:64, :64].float(), ref, rtol=2e-2, atol=2e-2 * math.sqrt(n)))
        value, rates = rate(2.0 * n**3, per)
        self._record(Measurement(f"cublas_{dtype}", value, ok, "a 64x64 corner against an fp32 product", rates,
                                 {"n": n, "flops_per_launch": 2.0 * n**3}), c0)
        a = b = out = None  # release the operands before emptying the cache
        torch.cuda.empty_cache()
