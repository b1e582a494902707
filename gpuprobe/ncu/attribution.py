"""Which op (and layer) each kernel belongs to, from its NVTX push/pop stack.

The rule is one function, :func:`default_rule` (CONTRACTS.md section 1): a kernel's op is the
innermost range on its stack that is a known op or group (:data:`gpuprobe.ops.KNOWN_RANGES`); its
layer is the innermost ``layer{i}`` range; a kernel with no known range is grouped as
``other:<short kernel name>``. Replace the rule by passing your own function with the same signature
to :func:`attribute` (or to :func:`gpuprobe.ncu.load_report`)::

    def by_outermost(stack, kernel_short):
        return Attribution(stack[0] if stack else f"other:{kernel_short}", None)

    df = gpuprobe.load_report("r.ncu-rep", rule=by_outermost)
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import pandas as pd

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


def default_rule(nvtx_stack: Sequence[str], kernel_short: str) -> Attribution:
    """Innermost known op or group on the stack; innermost ``layer{i}``; else ``other:<kernel_short>``."""
    names = [_range_name(n) for n in nvtx_stack]
    op = next((n for n in reversed(names) if is_known(n)), None)
    layer = next((lay for lay in (parse_layer(n) for n in reversed(names)) if lay is not None), None)
    return Attribution(op if op is not None else f"{OTHER_PREFIX}{kernel_short}", layer)


def attribute(df: pd.DataFrame, rule: AttributionRule = default_rule) -> pd.DataFrame:
    """``df`` with the columns ``op`` and ``layer`` (nullable int) set by ``rule`` for each row."""
    out = df.copy()
    pairs = [rule(tuple(stack or ()), short) for stack, short in zip(out["nvtx_stack"], out["kernel_short"])]
    out["op"] = [p[0] for p in pairs]
    out["layer"] = pd.array([p[1] for p in pairs], dtype="Int64")
    return out


def is_other(op: str) -> bool:
    return op.startswith(OTHER_PREFIX)
