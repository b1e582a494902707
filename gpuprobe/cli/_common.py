"""Argument helpers shared by subcommands: one spelling of each common option."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gpuprobe.analytic import KERNEL_MODES
from gpuprobe.engine.backends import BACKENDS
from gpuprobe.errors import GpuprobeError, UserError
from gpuprobe.parsing import LIMITS, parse_int_list, show_int  # noqa: F401  (parse_int_list: the subcommands' name)
from gpuprobe.specs.models import check_context as model_context_error

ATTENTION_BACKENDS = BACKENDS  # the engine's list (gpuprobe.engine.backends), without importing torch
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
def positive_int(what: str):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got '{text}'") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got '{text}'")
        return v

    return conv


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


def output_dir(out: str | None, prefix: str) -> Path:
    """The folder to write into: ``out``, or a new ``./gpuprobe-out/{prefix}-{timestamp}``; must be writable."""
    path = Path(out) if out else Path("gpuprobe-out") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder '{path}': {e.strerror or e}; pass a writable --out.") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder '{path}' is not writable; pass a writable --out.")
    return path


def run_script(main, argv: list[str] | None = None) -> None:
    """Run a script's ``main`` the way the CLI runs a subcommand: a gpuprobe error (or a bad value) is
    one line on stderr and exit code 2, never a traceback. Used by the scripts in ``benchmarks/``."""
    try:
        code = main() if argv is None else main(argv)
    except (GpuprobeError, ValueError) as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except KeyboardInterrupt:
        print(f"{sys.argv[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
