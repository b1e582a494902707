"""Which op (and layer) each kernel belongs to, from its NVTX push/pop stack.

The rule is one function, :func:`default_rule` (docs/contracts.md): a kernel's op is the innermost
range on its stack that is a known op or group (:data:`gpuprobe.ops.KNOWN_RANGES`); its layer is the
innermost ``layer{i}`` range. A kernel with no known range (any report made without gpuprobe's NVTX
ranges: vLLM, SGLang, anyone's script) takes the op class of the kernel rule table
(:mod:`gpuprobe.kernel_rules`: ``gemm``, ``attention``, ``norm``...) matched on its full name; a
kernel the table does not know is ``other:<short kernel name>``. Replace the rule by passing your own
function with the same signature to :func:`attribute` (or to :func:`gpuprobe.ncu.load_ncu_report`); a
rule that also takes ``kernel_name`` (keyword) gets the full name::

    def by_outermost(stack, kernel_short):
        return Attribution(stack[0] if stack else f"other:{kernel_short}", None)

    df = gpuprobe.load_report("r.ncu-rep", rule=by_outermost)
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from gpuprobe.kernel_rules import KernelClassifier, classifier
from gpuprobe.ops import is_known, parse_layer


class Attribution(NamedTuple):
    op: str
    layer: int | None


#: ``rule(nvtx_stack, kernel_short) -> Attribution``; the stack lists range names outermost first.
AttributionRule = Callable[[Sequence[str], str], Attribution]

OTHER_PREFIX = "other:"


def _range_name(name: str) -> str:
    """``domain@range`` -> ``range``: known op names match in any domain."""
    return name.rsplit("@", 1)[-1]


def default_rule(nvtx_stack: Sequence[str], kernel_short: str, kernel_name: str | None = None,
                 classify: KernelClassifier | None = None) -> Attribution:
    """Innermost known op or group on the stack; innermost ``layer{i}``; else the rule table's op class
    of ``kernel_name`` (``classify``, default the built-in table); else ``other:<kernel_short>``."""
    names = [_range_name(n) for n in nvtx_stack]
    op = next((n for n in reversed(names) if is_known(n)), None)
    layer = next((lay for lay in (parse_layer(n) for n in reversed(names)) if lay is not None), None)
    if op is None:
        classify = classify or classifier()
        op = classify(kernel_name or kernel_short) or (classify(kernel_short) if kernel_name else None)
    return Attribution(op if op is not None else f"{OTHER_PREFIX}{kernel_short}", layer)


def _takes(rule: Callable, name: str) -> bool:
    try:
        params = inspect.signature(rule).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a column (a categorical's own codes; else one hash pass), -1 for missing."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(np.int64)
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64)


def distinct_rows(*columns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct combination of ``columns``, per row its combination's number)."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        c = _codes(col) + 1
        key = key * (int(c.max(initial=0)) + 1) + c
        key, _ = pd.factorize(key)  # keeps the key small however many columns are combined
        key = key.astype(np.int64)
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return first, inv


def attribute(df: pd.DataFrame, rule: AttributionRule = default_rule, rules: str | Path | None = None,
              classify: KernelClassifier | None = None) -> pd.DataFrame:
    """``df`` with the columns ``op`` and ``layer`` (nullable int) set by ``rule``, and ``op_source``:
    ``nvtx`` when a known op range is on the kernel's stack, ``rules`` when the kernel rule table named it,
    ``none`` when neither did (``other:<short name>``). ``op`` and ``op_source`` are categoricals.

    The rule is called once per distinct (kernel name, short name, NVTX stack), never once per kernel.
    ``rules``: a user's kernel rules file, matched before the built-in table (the default rule only);
    ``classify``: an already built classifier instead.
    """
    out = df.copy(deep=False)
    kw: dict = {}
    if _takes(rule, "classify"):
        kw["classify"] = classify or classifier(rules)
    names = out["kernel_name"] if "kernel_name" in out.columns else out["kernel_short"]
    with_name = _takes(rule, "kernel_name")
    n = len(out)
    if n == 0:
        out["op"], out["layer"], out["op_source"] = pd.Series([], dtype=object), pd.array([], dtype="Int64"), \
            pd.Series([], dtype=object)
        return out
    first, inv = distinct_rows(names, out["kernel_short"], out["nvtx_stack"])
    stacks = out["nvtx_stack"].to_numpy(dtype=object)[first]
    shorts = out["kernel_short"].to_numpy(dtype=object)[first]
    full = names.to_numpy(dtype=object)[first]
    ops, layers, sources = [], [], []
    for stack, short, name in zip(stacks, shorts, full):
        stack = tuple(stack or ())
        a = rule(stack, short, kernel_name=name, **kw) if with_name else rule(stack, short)
        ops.append(a[0])
        layers.append(a[1])
        sources.append("nvtx" if any(is_known(_range_name(x)) for x in stack) else
                       "none" if is_other(a[0]) else "rules")
    op_codes, op_cats = pd.factorize(pd.Series(ops, dtype=object))
    out["op"] = pd.Categorical.from_codes(op_codes[inv].astype(np.int32), categories=pd.Index(op_cats, dtype=object))
    lay = pd.array(layers, dtype="Int64")
    out["layer"] = lay.take(inv)
    src_codes, src_cats = pd.factorize(pd.Series(sources, dtype=object))
    out["op_source"] = pd.Categorical.from_codes(src_codes[inv].astype(np.int32),
                                                 categories=pd.Index(src_cats, dtype=object))
    return out


def is_other(op: str) -> bool:
    return op.startswith(OTHER_PREFIX)
