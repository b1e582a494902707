"""Argument helpers shared by subcommands: one spelling of each common option."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from gpuprobe.errors import UserError

ATTENTION_BACKENDS = ("triton", "sdpa-dense", "torch")
KERNEL_MODES = ("fused", "unfused")  # gpuprobe.analytic.KERNEL_MODES (kept import-free here)
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def parse_int_list(text: str, what: str = "batch") -> list[int]:
    """'1,2,4' or '1-8' (powers of two) -> sorted unique positive ints; bad input -> UserError."""
    text = str(text).strip()
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise ValueError
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo <= 0 or hi < lo:
                    raise ValueError
                b = lo
                while b <= hi:
                    out.add(b)
                    b *= 2
            else:
                out.add(int(part))
    except ValueError:
        raise UserError(
            f"malformed {what} list '{text}'; give positive integers separated by commas, e.g. 1,2,4,8 "
            "(or a range of powers of two, e.g. 1-512)."
        ) from None
    if not out or min(out) <= 0:
        raise UserError(f"{what} values must be positive integers, got '{text}'.")
    return sorted(out)


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
                   help="context length in tokens (default %(default)s)")


def check_context(context: int) -> int:
    if context is None or context <= 0:
        raise UserError(f"--context must be a positive number of tokens, got {context}.")
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
    import sys

    from gpuprobe.errors import GpuprobeError

    try:
        code = main() if argv is None else main(argv)
    except (GpuprobeError, ValueError) as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    except KeyboardInterrupt:
        print(f"{sys.argv[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
