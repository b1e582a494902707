"""The decode engine: a model, its weights, a KV cache and an attention backend, and what to do with them.

High level: :meth:`Engine.from_pretrained` and :meth:`Engine.generate` (greedy, ragged prompts,
through the paged cache). Low level, for measurements (``docs/engine.md``): :meth:`Engine.prepare`
a batch of B sequences at context C, :meth:`Engine.step` one eager step (NVTX ranges optional,
only layer k optional), :meth:`Engine.time_step` per-op times, :meth:`Engine.capture` a CUDA graph,
:meth:`Engine.memory` / :meth:`Engine.plan` bytes of weights, KV cache and the peak.
``kernels="fused"`` (the default where Triton runs) runs the layers' elementwise work as the project's
fused Triton kernels, ``kernels="unfused"`` as PyTorch ops (:mod:`gpuprobe.engine.fused`).
``compile=True`` fuses the unfused step that graphs capture with ``torch.compile`` (:meth:`Engine.fast_step`,
:mod:`gpuprobe.engine.compiled`); :meth:`Engine.step` always runs eager.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch

from gpuprobe.engine.attention import BACKENDS, default_attention, make_backend
from gpuprobe.engine.batch import DecodeBatch
from gpuprobe.engine.compiled import CompiledStep
from gpuprobe.engine.fused import resolve_kernels
from gpuprobe.engine.graphs import StepGraph
from gpuprobe.engine.kvcache import PagedKVCache, page_bytes, pages_for, resolve_budget
from gpuprobe.engine.model import Transformer
from gpuprobe.engine.nvtx import NO_RANGES, OpTimer, OpTimes, Ranges
from gpuprobe.engine.weights import has_checkpoint, init_random, load_hf, unique_param_bytes
from gpuprobe.errors import UserError
from gpuprobe.kernels.common import torch_dtype
from gpuprobe.specs.gpus import normalize_dtype
from gpuprobe.specs.models import ModelSpec, load_model_spec

#: Prefill processes at most this many prompt tokens at once (rows of the padded batch per chunk).
PREFILL_CHUNK_TOKENS = 8192


@dataclass
class MemoryReport:
    """Bytes of the weights, of the KV cache, and the peak the allocator saw (CUDA only, else None)."""

    weights_bytes: int
    kv_cache_bytes: int
    peak_memory_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but no CUDA GPU is visible; use device='cpu'.")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type not in ("cpu", "meta"):
        raise UserError(f"unsupported device '{device}'; use cuda, cpu or meta.")
    return dev


class Engine:
    """A decoder ready to run: see the module docstring."""

    def __init__(self, spec: ModelSpec, *, dtype: str | torch.dtype | None = None,
                 device: str | torch.device | None = None, attention: str | None = None, seed: int = 0,
                 page_size: int = 16, kv_budget: float | int | None = None,
                 checkpoint: str | Path | None = None, compile: bool = False, kernels: str | None = None) -> None:
        self.device = _resolve_device(device)
        # the Python API's edge: any spelling (or a torch dtype) normalised once here
        self.dtype = torch_dtype(normalize_dtype(dtype if dtype is not None else
                                                 ("bf16" if self.device.type == "cuda" else "fp32")))
        self.spec = spec
        if page_size < 1:
            raise UserError(f"page_size must be a positive number of tokens, got {page_size}.")
        self.page_size, self.kv_budget, self.seed = page_size, kv_budget, seed
        self.attention = attention or default_attention(self.device)
        if self.attention not in BACKENDS:
            raise UserError(f"unknown attention backend '{self.attention}'; choose one of {', '.join(BACKENDS)}.")
        self.backend = make_backend(self.attention)
        self.kernels = resolve_kernels(kernels, self.device, bool(compile) and self.device.type != "meta")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        model = Transformer(spec, device="meta", dtype=self.dtype)  # shapes only; materialised below
        if self.device.type != "meta":
            _materialize(model, self.device)
        model.requires_grad_(False).eval()
        model.setup_rope(self.device, self.dtype)
        model.kernels = self.kernels
        self.model = model
        self.checkpoint = str(checkpoint) if checkpoint else None
        if checkpoint:
            load_hf(model, checkpoint)
        else:
            init_random(model, seed)
        self.cache: PagedKVCache | None = None
        self._graph_pool = None
        self.compile = bool(compile) and self.device.type != "meta"
        self._compiled = None  # CompiledStep, made on first use

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_name: str | Path, *, dtype: str | torch.dtype | None = None,
                        device: str | torch.device | None = None, attention: str | None = None, seed: int = 0,
                        weights: str = "auto", layers: int | None = None, compile: bool = False,
                        kernels: str | None = None, **kwargs) -> "Engine":
        """A registry name (random weights) or a local HF folder (its safetensors when present).

        ``weights``: ``auto`` (load a folder's checkpoint if it has one, else random), ``random``, or
        ``load`` (the folder must hold one). ``layers`` overrides the depth (random weights only).
        ``compile``: fuse the graph-captured / generated step with ``torch.compile``. ``kernels``:
        ``fused`` | ``unfused`` (default: fused where Triton runs; unfused with ``compile``).
        """
        spec = load_model_spec(path_or_name)  # reads rope_theta / rope_parameters of a config.json
        folder = Path(path_or_name)
        checkpoint = None
        if folder.is_dir():
            if weights in ("auto", "load") and has_checkpoint(folder):
                checkpoint = folder
        if weights == "load" and checkpoint is None:
            raise UserError(f"no safetensors checkpoint in '{path_or_name}'; pass a folder holding one.")
        if weights not in ("auto", "random", "load"):
            raise UserError(f"weights must be auto, random or load, got '{weights}'.")
        if layers is not None:
            if checkpoint is not None:
                raise UserError("layers= changes the depth; it works with random weights only.")
            spec = spec.with_layers(layers)
        return cls(spec, dtype=dtype, device=device, attention=attention, seed=seed, checkpoint=checkpoint,
                   compile=compile, kernels=kernels, **kwargs)

    @classmethod
    def from_spec(cls, spec: ModelSpec, **kwargs) -> "Engine":
        """Random weights for a spec (``device="meta"`` plans without allocating)."""
        return cls(spec, **kwargs)

    # ---- batches -----------------------------------------------------------------------------------
    def _pool_for(self, pages: int) -> PagedKVCache:
        """The page pool with ``pages`` free pages: created from ``kv_budget`` (fixed size), or, without
        a budget, sized to what is asked and grown when a request does not fit (growing copies the
        pool: graphs captured before then must be captured again)."""
        if self.kv_budget is not None:
            if self.cache is None:
                self.cache = PagedKVCache(self.spec, resolve_budget(self.kv_budget, self.spec, self.page_size,
                                                                    self.dtype, self.device),
                                          self.page_size, self.dtype, self.device)
        elif self.cache is None or (self.cache.allocator.num_used == 0 and self.cache.num_pages < pages):
            self.cache = None  # free the old pool first
            self.cache = PagedKVCache(self.spec, pages, self.page_size, self.dtype, self.device)
        elif self.cache.allocator.num_free < pages:
            self.cache.grow(self.cache.allocator.num_used + pages)
        if self.cache.allocator.num_free < pages:
            self.cache.allocator.allocate(pages)  # raises KVCacheFull with the numbers
        return self.cache

    def new_batch(self, lens: list[int], capacity: list[int], uniform: bool = False) -> DecodeBatch:
        """B sequences that will store ``lens[b]`` tokens before their next step, with room for
        ``capacity[b]`` tokens (pages reserved now). Buffers are allocated, contents not filled.

        ``uniform`` (``sdpa-dense`` only): every sequence has the same length, attended without a mask
        over a static slice; ``advance`` then changes a static shape (a captured graph goes stale).
        """
        if not lens or len(lens) != len(capacity):
            raise UserError("a batch needs at least one sequence.")
        b, dev = len(lens), self.device
        max_len = max(capacity)
        if self.spec.positional == "learned" and max_len > self.spec.max_position_embeddings:
            raise UserError(f"{self.spec.name} has {self.spec.max_position_embeddings} learned positions; "
                            f"{max_len} tokens do not fit.")
        if self.model.rope is not None:
            self.model.rope.ensure(max_len)
        i64 = {"dtype": torch.int64, "device": dev}
        batch = DecodeBatch(
            size=b, max_len=max_len, capacity=list(capacity), lens=list(lens),
            tokens=torch.zeros(b, **i64), next_tokens=torch.zeros(b, **i64), positions=torch.zeros(b, **i64),
            context_lens=torch.zeros(b, dtype=torch.int32, device=dev), arange_b=torch.arange(b, device=dev),
        )
        if self.backend.paged:
            need = sum(pages_for(c, self.page_size) for c in capacity)
            cache = self._pool_for(need)
            batch.cache = cache
            batch.seqs = [cache.new_sequence(c) for c in capacity]
            width = pages_for(max_len, self.page_size)
            batch.block_table = cache.block_table(batch.seqs, width).to(dev)
            batch.slot_mapping = torch.zeros(b, **i64)
        else:
            s = self.spec
            batch.dense = torch.zeros((s.num_layers, 2, b, s.num_kv_heads, max_len, s.head_dim),
                                      dtype=self.dtype, device=dev)
            batch.dense_slots = torch.zeros(b, **i64)
            if uniform and len(set(lens)) == 1:
                batch.uniform_len = lens[0] + 1
            else:
                batch.dense_mask = torch.zeros((b, max_len), dtype=torch.bool, device=dev)
        batch.set_positions(lens)
        return batch

    def release(self, batch: DecodeBatch) -> None:
        """Give a batch's pages back to the pool."""
        if batch.cache is not None:
            for seq in batch.seqs:
                if seq.pages:
                    batch.cache.free(seq)
        batch.dense = None

    def prepare(self, batch: int, context: int, *, fill: str = "random", extra_tokens: int = 0,
                seed: int | None = None) -> DecodeBatch:
        """B sequences with ``context`` tokens in the cache, the next step at position ``context``.

        ``fill="random"``: random K/V and input tokens (one kernel; for shape-only sweeps: attention
        reads the same bytes, the tokens are meaningless). ``fill="prefill"``: random prompts of
        ``context`` tokens run through a real prefill. ``extra_tokens``: room to ``advance`` that
        many times.
        """
        if batch < 1 or context < 0:
            raise UserError(f"batch must be >= 1 and context >= 0, got batch={batch}, context={context}.")
        seed = self.seed if seed is None else seed
        b = self.new_batch([context] * batch, [context + 1 + extra_tokens] * batch, uniform=True)
        if self.device.type == "meta":
            return b
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if fill == "random":
            if b.cache is not None:
                b.cache.random_fill(seed, pages=[p for seq in b.seqs for p in seq.pages])
            else:
                b.dense.normal_(0.0, 1.0, generator=torch.Generator(device=self.device).manual_seed(seed))  # type: ignore[union-attr]
            b.tokens.copy_(torch.randint(0, self.spec.vocab_size, (batch,), generator=gen))
        elif fill == "prefill":
            if context < 1:
                raise UserError("fill='prefill' needs context >= 1.")
            prompts = torch.randint(0, self.spec.vocab_size, (batch, context), generator=gen).tolist()
            self.start(b, prompts)
        else:
            raise UserError(f"fill must be 'random' or 'prefill', got '{fill}'.")
        return b

    @torch.no_grad()
    def prefill(self, batch: DecodeBatch, prompts: list[list[int]], all_logits: bool = False) -> torch.Tensor:
        """Run prompts (ragged) from an empty cache into ``batch``: their K/V are written, logits returned
        (``[B, T, V]`` right-padded, or ``[B, V]`` of each last token)."""
        lens = [len(p) for p in prompts]
        t_max = max(lens)
        rows = max(1, PREFILL_CHUNK_TOKENS // t_max)
        outs = []
        for r0 in range(0, len(prompts), rows):
            r1 = min(len(prompts), r0 + rows)
            chunk, clens = prompts[r0:r1], lens[r0:r1]
            t = max(clens) if not all_logits else t_max
            tokens = torch.zeros((r1 - r0, t), dtype=torch.int64)
            valid = []
            for i, p in enumerate(chunk):
                tokens[i, : len(p)] = torch.tensor(p, dtype=torch.int64)
                valid.extend(range(i * t, i * t + len(p)))
            slots = None
            if batch.cache is not None:
                slots = torch.tensor([s for r in range(r0, r1) for s in batch.cache.slots(batch.seqs[r], 0, lens[r])],
                                     dtype=torch.int64, device=self.device)
            view = batch if batch.cache is not None else _RowView(batch, r0, r1)
            outs.append(self.model.prefill(
                view, tokens.to(self.device), torch.tensor(clens, device=self.device),  # type: ignore[arg-type]
                torch.tensor(valid, dtype=torch.int64, device=self.device), slots, all_logits=all_logits))
        return torch.cat(outs, dim=0)

    def start(self, batch: DecodeBatch, prompts: list[list[int]]) -> torch.Tensor:
        """Prefill ``prompts`` into ``batch`` and point it at the first generated token (the greedy
        choice of each prompt's last logits, returned ``[B, V]``): the next :meth:`step` decodes it."""
        logits = self.prefill(batch, prompts)  # [B, V]
        torch.argmax(logits, dim=-1, out=batch.next_tokens)
        batch.set_positions([len(p) for p in prompts])
        batch.tokens.copy_(batch.next_tokens)
        return logits

    # ---- steps -------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, batch: DecodeBatch, *, nvtx: bool = False, layers: Iterable[int] | None = None,
             timer: OpTimer | None = None, ranges: Ranges | None = None) -> torch.Tensor:
        """One eager decode step: logits ``[B, V]``; ``batch.next_tokens`` gets the greedy tokens.

        ``nvtx``: push ``decode/layer{i}/{op}`` ranges; ``layers``: annotate only these layers;
        ``timer``: an :class:`OpTimer` to time every op.
        """
        if ranges is None:
            ranges = Ranges(nvtx=nvtx, layers=layers, timer=timer) if (nvtx or timer) else NO_RANGES
        return self.model.decode(batch, self.backend, ranges)

    @torch.no_grad()
    def fast_step(self, batch: DecodeBatch) -> torch.Tensor:
        """The step graphs capture and ``generate`` runs: the ``torch.compile``-fused step when the
        engine was made with ``compile=True`` (compiled on first call for a batch shape), else the plain
        eager step. No NVTX ranges or timers: per-op profiling uses :meth:`step`, always eager."""
        if not self.compile:
            return self.model.decode(batch, self.backend, NO_RANGES)
        return self.compiled_step(batch)

    @property
    def compiled_step(self):
        """The :class:`~gpuprobe.engine.compiled.CompiledStep` of this engine (``compile=True`` only)."""
        if not self.compile:
            raise UserError("this engine was made without compile=True.")
        if self._compiled is None:
            model, backend = self.model, self.backend

            def decode_step(batch: DecodeBatch) -> torch.Tensor:
                return model.decode(batch, backend, NO_RANGES)

            self._compiled = CompiledStep(decode_step)
        return self._compiled

    def warm_compiled(self, batch: DecodeBatch) -> float | None:
        """Compile the fused step for ``batch`` now and run it once; the seconds that took (None when
        the engine does not compile). Graph capture calls it first so nothing compiles inside a capture."""
        if not self.compile:
            return None
        with torch.no_grad():
            return self.compiled_step.warm(batch)

    def time_step(self, batch: DecodeBatch, *, warmup: int = 2, nvtx: bool = False) -> OpTimes:
        """Per-op times of one eager step (CUDA events; ``perf_counter`` on a CPU).

        On a GPU a sleep kernel is queued first, long enough that Python has launched the whole step
        before the GPU starts it, so op times are GPU times rather than launch gaps.
        """
        for _ in range(warmup):
            self.step(batch)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            self.step(batch, timer=OpTimer(self.device))  # host time of a timed step
            host_s = time.perf_counter() - t0
            torch.cuda.synchronize(self.device)
            _gpu_sleep(1.5 * host_s + 1e-3)
        timer = OpTimer(self.device)
        self.step(batch, timer=timer, nvtx=nvtx)
        return timer.result()

    def capture(self, batch: DecodeBatch, warmup: int = 2) -> StepGraph:
        """Capture one decode step of ``batch`` (:meth:`fast_step`: fused when ``compile=True``) as a
        CUDA graph; graphs of one engine share a memory pool."""
        if self._graph_pool is None and self.device.type == "cuda":
            self._graph_pool = torch.cuda.graph_pool_handle()
        return StepGraph(self, batch, warmup=warmup, pool=self._graph_pool)

    # ---- generation --------------------------------------------------------------------------------
    def _check_prompts(self, input_ids: list[list[int]], max_new_tokens: int) -> None:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")
        if not input_ids or any(len(p) == 0 for p in input_ids):
            raise UserError("input_ids must be a non-empty list of non-empty token lists.")
        v = self.spec.vocab_size
        for p in input_ids:
            bad = [t for t in p if not (0 <= int(t) < v)]
            if bad:
                raise UserError(f"token id {bad[0]} is outside the vocabulary [0, {v}).")

    def generate(self, input_ids: list[list[int]], max_new_tokens: int, graphs: bool | None = None) -> list[list[int]]:
        """Greedy decoding through the paged cache: each prompt's ``max_new_tokens`` next tokens.

        Prompts may differ in length. ``graphs``: replay a captured step (default on CUDA). Steps
        run :meth:`fast_step` (the fused step when the engine compiles).
        """
        self._check_prompts(input_ids, max_new_tokens)
        if max_new_tokens == 0:
            return [[] for _ in input_ids]
        graphs = (self.device.type == "cuda") if graphs is None else graphs
        lens = [len(p) for p in input_ids]
        batch = self.new_batch(lens, [n + max_new_tokens for n in lens])
        try:
            self.start(batch, [list(map(int, p)) for p in input_ids])
            out = [batch.next_tokens.clone()]
            graph = self.capture(batch) if graphs and max_new_tokens > 1 else None
            for j in range(1, max_new_tokens):
                if graph is not None:
                    graph.replay()
                else:
                    self.fast_step(batch)
                out.append(batch.next_tokens.clone())
                if j < max_new_tokens - 1:
                    batch.advance()
            return torch.stack(out, dim=1).tolist()
        finally:
            self.release(batch)

    # ---- memory ------------------------------------------------------------------------------------
    @property
    def weights_bytes(self) -> int:
        return unique_param_bytes(self.model.parameters())

    def memory(self, batch: DecodeBatch | None = None) -> MemoryReport:
        """Weights, KV cache (the batch's pages or dense cache; else the whole pool), allocator peak."""
        kv = batch.kv_bytes if batch is not None else (self.cache.nbytes if self.cache is not None else 0)
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return MemoryReport(self.weights_bytes, kv, peak)

    def plan(self, batch: int, context: int, extra_tokens: int = 0) -> MemoryReport:
        """Bytes a batch at ``context`` would take, from shapes alone (nothing is allocated)."""
        tokens = context + 1 + extra_tokens
        if self.backend.paged:
            kv = batch * pages_for(tokens, self.page_size) * page_bytes(self.spec, self.page_size, self.dtype)
        else:
            kv = batch * tokens * self.spec.kv_bytes_per_token(self.dtype.itemsize)
        return MemoryReport(self.weights_bytes, kv, None)


def _materialize(model: torch.nn.Module, device: torch.device) -> None:
    """Give every meta parameter real, uninitialised storage on ``device`` (``Module.to_empty`` without
    its slow path through torch's Python reference kernels)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(
                    torch.empty(p.shape, dtype=p.dtype, device=device), requires_grad=False)


class _RowView:
    """Rows ``r0:r1`` of a dense batch, as prefill of one chunk sees it."""

    def __init__(self, batch: DecodeBatch, r0: int, r1: int) -> None:
        self.cache = None
        self.dense = batch.dense[:, :, r0:r1]  # type: ignore[index]


_SLEEP_CYCLES_PER_S: float | None = None


def _gpu_sleep(seconds: float) -> None:
    """Queue a GPU sleep kernel of about ``seconds`` (calibrated once); no-op if torch lacks it."""
    global _SLEEP_CYCLES_PER_S
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        return
    if _SLEEP_CYCLES_PER_S is None:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cycles = 10_000_000
        a.record()
        sleep(cycles)
        b.record()
        b.synchronize()
        _SLEEP_CYCLES_PER_S = cycles / max(a.elapsed_time(b) / 1e3, 1e-6)
    sleep(int(math.ceil(seconds * _SLEEP_CYCLES_PER_S)))
