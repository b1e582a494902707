"""Argument helpers shared by subcommands: one spelling of each common option."""
from __future__ import annotations

import argparse

from gpuprobe.analytic import KERNEL_MODES
from gpuprobe.engine.backends import BACKENDS
from gpuprobe.errors import UserError
from gpuprobe.parsing import LIMITS, show_int
from gpuprobe.render.tables import FORMATS
from gpuprobe.specs.models import check_context as model_context_error

ATTENTION_BACKENDS = BACKENDS  # the engine's list (gpuprobe.engine.backends), without importing torch
FORMAT_HELP = "the table's format: table (default on a terminal), tsv (default when piped), csv, json"
OUT_HELP = "output folder (default: a new folder under ./gpuprobe-out/)"


def _int_at_least(what: str, least: int, kind: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, got '{text}'") from None
        if v < least:
            raise argparse.ArgumentTypeError(f"{what} must be {kind}, got '{text}'")
        return v

    return conv


def positive_int(what: str):
    return _int_at_least(what, 1, "a positive integer")


def non_negative_int(what: str):
    return _int_at_least(what, 0, "a whole number >= 0")


def positive_float(what: str):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, got '{text}'") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, got '{text}'")
        return v

    return conv


def add_model_argument(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, default=None if required else "qwen2-0.5b",
                   help="registry name (see `gpuprobe models`) or a folder holding config.json")


def add_attention_argument(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--attention", choices=ATTENTION_BACKENDS, default=default,
                   help="attention backend: triton (paged kernels), sdpa-dense (cuDNN on a dense cache), "
                        "torch (gather-then-SDPA reference, correctness only)")


def add_kernels_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernels", choices=KERNEL_MODES, default=None,
                   help="the decode layer's elementwise work: fused (the project's Triton kernels: add+norm, "
                        "RoPE+KV write, activation; the default where Triton runs) or unfused (PyTorch ops)")


def add_dtype_argument(p: argparse.ArgumentParser, default: str = "bf16") -> None:
    p.add_argument("--dtype", default=default, help="bf16 | fp16 | fp32 (default %(default)s)")


def add_format_argument(p: argparse.ArgumentParser, help: str = FORMAT_HELP) -> None:
    p.add_argument("--format", choices=FORMATS, default=None, help=help)


def add_output_arguments(p: argparse.ArgumentParser, json_help: str, out_help: str = OUT_HELP) -> None:
    """``--json`` (what it prints), ``--format`` (the table's) and ``--out`` (the folder written), in that order."""
    p.add_argument("--json", action="store_true", help=json_help)
    add_format_argument(p)
    p.add_argument("--out", help=out_help)


def add_batch_argument(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--batch", default=default,
                   help="batch sizes, e.g. 1,8,64 or 1-512 (powers of two)")


def add_context_argument(p: argparse.ArgumentParser, default: int = 1024) -> None:
    p.add_argument("--context", type=int, default=default,
                   help="context length in tokens (default %(default)s); at most the model's "
                        "max_position_embeddings unless --beyond-max-context")
    p.add_argument("--beyond-max-context", action="store_true",
                   help="allow a --context longer than the model was built for (an explicit what-if)")


def check_context(context: int, spec=None, beyond_max: bool = False) -> int:
    """``context`` checked: positive, below :data:`LIMITS`, and within ``spec``'s maximum unless ``beyond_max``."""
    if context is None or context <= 0:
        raise UserError(f"--context must be a positive number of tokens, got {context}.")
    if context > LIMITS["context"]:
        raise UserError(f"--context {show_int(context)} is above the limit of {LIMITS['context']:,} tokens; "
                        "give a smaller one.")
    if spec is not None and not beyond_max:
        why = model_context_error(spec, context)
        if why:
            raise UserError(f"--{why} (--beyond-max-context allows it as a what-if)")
    return context
