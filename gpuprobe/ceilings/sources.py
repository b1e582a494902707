"""The microbenchmark sources shipped in :mod:`gpuprobe.csrc`: their text, entry points and constants."""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

#: One microbenchmark family per file, in the order a run measures them.
SOURCE_FILES: tuple[str, ...] = (
    "dram_bandwidth.cu",
    "l2_bandwidth.cu",
    "smem_bandwidth.cu",
    "fma_peak.cu",
    "tensor_mma.cu",
)

#: C parameter types the kernels use, by the kind an argument is packed as.
_PARAM_KINDS = {
    "unsigned int": "u32", "unsigned": "u32", "int": "i32",
    "unsigned long long": "u64", "unsigned long long int": "u64", "long long": "i64",
    "float": "f32", "double": "f64",
}
_QUALIFIERS = re.compile(r"\b(const|volatile|__restrict__|__restrict|restrict)\b")
_ENTRY = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)', re.S)
_DEFINE = re.compile(r"^\s*#define\s+(\w+)\s+\(?(\d+)\)?\s*(?:/[/*].*)?$", re.M)


@dataclass(frozen=True)
class KernelSignature:
    """An ``extern "C"`` entry point: its name, its source file and the kind of each parameter."""

    name: str
    source: str
    params: tuple[str, ...]  # "ptr" | "u32" | "i32" | "u64" | "i64" | "f32" | "f64"


def load_source(filename: str) -> str:
    """The text of one ``.cu`` file shipped in :mod:`gpuprobe.csrc`."""
    if filename not in SOURCE_FILES:
        raise ValueError(f"unknown microbenchmark source '{filename}'; known: {', '.join(SOURCE_FILES)}")
    return resources.files("gpuprobe.csrc").joinpath(filename).read_text(encoding="utf-8")


def _param_kind(param: str) -> str:
    text = _QUALIFIERS.sub(" ", param)
    if "*" in text:
        return "ptr"
    words = text.split()
    ctype = " ".join(words[:-1])  # the last word is the parameter's name
    if ctype not in _PARAM_KINDS:
        raise ValueError(f"kernel parameter '{param.strip()}' has a type the launcher cannot pack")
    return _PARAM_KINDS[ctype]


def parse_kernels(source: str, filename: str = "<source>") -> dict[str, KernelSignature]:
    """Every ``extern "C" __global__`` entry point of ``source`` with its parameter kinds."""
    out = {}
    for m in _ENTRY.finditer(source):
        params = tuple(_param_kind(p) for p in m.group(2).split(",") if p.strip())
        out[m.group(1)] = KernelSignature(m.group(1), filename, params)
    return out


def parse_constants(source: str) -> dict[str, int]:
    """Integer ``#define`` constants of a source (block size, unroll, chains...): one source of truth."""
    return {m.group(1): int(m.group(2)) for m in _DEFINE.finditer(source)}


def all_kernels() -> dict[str, KernelSignature]:
    """Every entry point of every shipped source, by name (names are unique across files)."""
    out: dict[str, KernelSignature] = {}
    for f in SOURCE_FILES:
        for name, sig in parse_kernels(load_source(f), f).items():
            if name in out:
                raise ValueError(f"kernel '{name}' is defined in both {out[name].source} and {f}")
            out[name] = sig
    return out


def find_kernel(name: str) -> KernelSignature:
    """The signature of kernel ``name``, wherever it is defined."""
    kernels = all_kernels()
    if name not in kernels:
        raise KeyError(f"no kernel '{name}' in {', '.join(SOURCE_FILES)}; known: {', '.join(sorted(kernels))}")
    return kernels[name]


def constants(filename: str) -> dict[str, int]:
    """The integer ``#define`` constants of one shipped source."""
    return parse_constants(load_source(filename))
