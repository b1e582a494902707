"""The plan of a selftest run: the checks in run order, each one's estimate, the total, the extras.

``gpuprobe selftest --plan [--gpu-name h200] [--budget-s S] [--check NAME ...] [--json]`` prints it and
runs nothing (works on CPU). The estimates are the checks' own (``@check(..., estimate_s=...)``), per GPU
class where they differ, and :data:`~gpuprobe.tools.selftest.registry.PLANNED_ESTIMATE_S` for an expected
check not built yet; the runner applies the same numbers and the same budget: a check starts only when
its estimate fits in what is left. A plan *fits* when its total leaves :data:`SPARE_FRACTION` of the
budget unused: the estimates are not yet measured on a GPU, and a check that runs over its estimate
takes the time of the ones after it.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from gpuprobe.tools.selftest import registry
from gpuprobe.tools.selftest.registry import Check
from gpuprobe.tools.selftest.runner import select

#: The share of the budget a plan leaves unused to fit (the estimates are the project's own, not yet measured).
SPARE_FRACTION = 0.10


@dataclass(frozen=True)
class PlannedCheck:
    name: str
    estimate_s: float
    note: str = ""  # "not built", "CPU", or an extra check's reason


@dataclass
class Plan:
    gpu: str | None  # registry name the estimates are for; None: the default class (H100/H200)
    budget_s: float
    checks: list[PlannedCheck]
    extra: list[PlannedCheck] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(c.estimate_s for c in self.checks)

    @property
    def spare_s(self) -> float:
        return self.budget_s - self.total_s

    @property
    def fits(self) -> bool:
        """The total leaves at least :data:`SPARE_FRACTION` of the budget unused."""
        return self.total_s <= (1.0 - SPARE_FRACTION) * self.budget_s

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "budget_s": self.budget_s, "total_s": self.total_s,
                "spare_fraction": round(self.spare_s / self.budget_s, 4), "fits": self.fits,
                "checks": [{"name": c.name, "estimate_s": c.estimate_s} for c in self.checks],
                "extra": [{"name": c.name, "estimate_s": c.estimate_s, "reason": c.note} for c in self.extra]}


def _planned(name: str, chk: Check | None, gpu: str | None, note: str = "") -> PlannedCheck:
    if chk is None:
        planned = registry.PLANNED_ESTIMATE_S.get(name)
        if planned is not None:
            return PlannedCheck(name, planned, note or "not built yet: planned estimate")
        return PlannedCheck(name, 0.0, note or "not built")
    return PlannedCheck(name, chk.estimate(gpu), note or ("" if chk.gpu else "CPU"))


def make_plan(checks: dict[str, Check | None], gpu: str | None, budget_s: float,
              names: list[str] | None = None) -> Plan:
    """The run ``gpuprobe selftest --gpu [--check names]`` would make on ``gpu`` (a registry name)."""

    order = select(checks, names)
    extra = [] if names else [_planned(n, checks.get(n), gpu, registry.EXTRA[n]) for n in registry.EXTRA
                              if n in checks]
    return Plan(gpu, float(budget_s), [_planned(n, checks[n], gpu) for n in order], extra)


def render_plan(plan: Plan) -> str:
    """The plan as text: one line per check, the total against the budget, then the extra checks."""
    width = max([len(c.name) for c in plan.checks + plan.extra] + [5])
    gpu = plan.gpu or "default class (H100/H200)"
    lines = [f"selftest plan for {gpu}: {len(plan.checks)} checks, budget {plan.budget_s:.0f} s", ""]
    for i, c in enumerate(plan.checks, 1):
        lines.append(f"{i:>3}  {c.name:<{width}}  ~{c.estimate_s:>4.0f} s  {c.note}".rstrip()[:80])
    spare = plan.spare_s / plan.budget_s
    if plan.fits:
        verdict = f"fits, {spare:.0%} to spare"
    elif plan.total_s <= plan.budget_s:
        verdict = (f"does not fit: {spare:.0%} to spare, under the {SPARE_FRACTION:.0%} a plan keeps for checks "
                   "that run over their estimates")
    else:
        verdict = (f"does not fit: over the budget by {plan.total_s - plan.budget_s:.0f} s; the last checks will be "
                   "skipped, 'not enough budget left'")
    total = f"     {'total':<{width}}  ~{plan.total_s:>4.0f} s  of {plan.budget_s:.0f} s: "
    wrapped = textwrap.wrap(verdict, 80 - len(total)) or [""]
    lines += ["", total + wrapped[0], *(" " * len(total) + w for w in wrapped[1:])]
    if plan.extra:
        lines += ["", "extra checks (not in a full run; `selftest --gpu --check NAME` runs them):"]
        for c in plan.extra:
            lines.append(f"     {c.name:<{width}}  ~{c.estimate_s:>4.0f} s")
            lines += textwrap.wrap(c.note, 80, initial_indent=" " * 9, subsequent_indent=" " * 9)
        lines.append(f"     {'total':<{width}}  ~{sum(c.estimate_s for c in plan.extra):>4.0f} s")
    return "\n".join(lines)
