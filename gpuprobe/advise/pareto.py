"""Pareto frontier of measured configurations: throughput up, joules per token (and latency) down.

A configuration is a dict (a batch of the advisor's curve, a replica count of ``replicate``). It is
Pareto-optimal when no other configuration is at least as good on every objective and better on
one. Configurations lacking a figure an objective needs are left out of the comparison (and
marked ``None``), never guessed.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

#: The objectives of the energy/throughput frontier: name -> "max" | "min".
ENERGY_OBJECTIVES: dict[str, str] = {"tokens_per_s": "max", "joules_per_token": "min"}
ENERGY_LATENCY_OBJECTIVES: dict[str, str] = {**ENERGY_OBJECTIVES, "step_latency_s": "min"}


def _key(config: Mapping[str, Any], objectives: Mapping[str, str]) -> tuple[float, ...] | None:
    """The objectives as a tuple where larger is better; None when a figure is missing."""
    out = []
    for name, sense in objectives.items():
        if sense not in ("max", "min"):
            raise ValueError(f"objective '{name}': sense must be 'max' or 'min', got '{sense}'")
        v = config.get(name)
        if v is None:
            return None
        out.append(float(v) if sense == "max" else -float(v))
    return tuple(out)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and strictly better somewhere (larger is better)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_mask(configs: Sequence[Mapping[str, Any]], objectives: Mapping[str, str] = ENERGY_OBJECTIVES
                ) -> list[bool | None]:
    """For each configuration: True if Pareto-optimal, False if dominated, None if it lacks a figure."""
    keys = [_key(c, objectives) for c in configs]
    out: list[bool | None] = []
    for i, k in enumerate(keys):
        if k is None:
            out.append(None)
            continue
        out.append(not any(o is not None and j != i and dominates(o, k) for j, o in enumerate(keys)))
    return out


def pareto_front(configs: Sequence[Mapping[str, Any]], objectives: Mapping[str, str] = ENERGY_OBJECTIVES
                 ) -> list[Mapping[str, Any]]:
    """The Pareto-optimal configurations, ordered by the first objective (best first)."""
    mask = pareto_mask(configs, objectives)
    front = [c for c, m in zip(configs, mask) if m]
    first, sense = next(iter(objectives.items()))
    return sorted(front, key=lambda c: float(c[first]), reverse=sense == "max")
