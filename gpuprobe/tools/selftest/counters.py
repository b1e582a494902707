"""Counter permission, probed once per selftest run and reused by every check that needs counters.

The probe (:func:`gpuprobe.ncu.runner.probe_counters`: one tiny torch program profiled by ncu for one metric, with
``--clock-control none`` as every gpuprobe ncu run on a shared node, about 15 s) runs in the ``doctor``
check, which comes first; the ``ncu_counter_permission`` check and every ncu check after it read that
answer (:func:`counter_probe`) instead of profiling a program of their own. Run alone (``--check``), the
first check that needs it probes and leaves the answer for the others.

A refusal is told apart from a failure: ``ERR_NVGPUCTRPERM`` (counters restricted to administrators)
and ``Failed to initialize the profiler: LibraryNotLoaded`` (seen under gVisor on an H200) are properties
of the node, so the ncu checks are skipped with that reason and the claims are checked in timing mode
where they can be; anything else is a failure of the probe. The markers are looked for in the whole of
ncu's output (the profiled program may print many lines after ncu's error), and the line found is kept
in the answer's message.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpuprobe.ncu import runner
from gpuprobe.ncu.runner import REFUSAL_MARKERS, probe_counters
from gpuprobe.tools.selftest.registry import CheckContext

PROBE_FILE = "counter_permission.json"
#: Where the probe's answer is kept in a run: this check's folder.
PROBE_CHECK = "ncu_counter_permission"
OK, MISSING, REFUSED, FAILING = "ok", "missing", "refused", "failing"
@dataclass(frozen=True)
class CounterProbe:
    """One answer: ``ok`` | ``missing`` (no ncu) | ``refused`` | ``failing``, the message, and where it came from."""

    status: str
    message: str
    source: str
    seconds: float | None = None

    @property
    def usable(self) -> bool:
        return self.status == OK

    def skip_reason(self) -> str:
        """Why an ncu check is skipped here (only meaningful when not usable)."""
        first = next((ln.strip() for ln in self.message.splitlines() if ln.strip()), self.status)
        if self.status == MISSING:
            return f"ncu is not installed here ({first})"
        if self.status == REFUSED:
            marker = next((m for m in REFUSAL_MARKERS if m in self.message), "refused")
            return f"GPU performance counters refused on this node ({marker}); the same claims run in timing mode"
        return f"the counter-permission probe failed ({first[:160]})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Characters of ncu's output kept with the probe's answer (its start and its end when longer).
OUTPUT_KEPT_CHARS = 20_000


def kept_output(output: str, limit: int = OUTPUT_KEPT_CHARS) -> str:
    if len(output) <= limit:
        return output
    half = limit // 2
    return output[:half] + f"\n[... {len(output) - limit} characters left out ...]\n" + output[-half:]


def classify(status: str, message: str) -> str:
    """``check_counter_permission``'s (status, message) as ok | missing | refused | failing."""
    if status == OK:
        return OK
    if status == MISSING:
        return MISSING
    return REFUSED if any(m in (message or "") for m in REFUSAL_MARKERS) else FAILING


def from_doctor(report: dict[str, Any]) -> CounterProbe | None:
    """The doctor's answer (``gpuprobe doctor --json``), or None where it did not probe (quick, no GPU)."""
    item = next((i for i in report.get("items", []) if i.get("name") == "counter_permission"), None)
    data = (item or {}).get("data") or {}
    if "probe_status" not in data:
        return None
    return CounterProbe(classify(data["probe_status"], data.get("probe_message", "")),
                        data.get("probe_message", ""), "the doctor check of this run")


def _read(path: Path | None) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None


def probe_path(ctx: CheckContext) -> Path:
    """Where this run keeps the probe's answer (the check's own folder outside a run)."""
    folder = ctx.check_dir(PROBE_CHECK) or ctx.out_dir
    return folder / PROBE_FILE


def counter_probe(ctx: CheckContext, timeout_s: float = 60.0) -> CounterProbe:
    """This run's answer: kept from an earlier check, else the doctor's, else probed now (and kept)."""
    kept = _read(probe_path(ctx))
    if kept is not None:
        return CounterProbe(**kept)
    doctor = _read(ctx.check_dir("doctor") / "doctor.json") if ctx.check_dir("doctor") else None
    found = from_doctor(doctor) if doctor else None
    path = probe_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    if found is None:
        t0 = time.monotonic()
        status, message, output = probe_counters(runner.find_ncu(), timeout_s=timeout_s)
        found = CounterProbe(classify(status, message), message, "probed by this check",
                             round(time.monotonic() - t0, 1))
        path.with_name("counter_probe_output.txt").write_text(kept_output(output))
    path.write_text(json.dumps(found.to_dict(), indent=2) + "\n")
    return found
