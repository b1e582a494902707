"""What a selftest run leaves in its folder: ``summary.md``, ``summary.json`` and ``evidence.tar.gz``.

``summary.json``: ``{"gpu", "started", "wall_s", "environment": {...}, "checks": [{"name", "status",
"seconds", "reason", "figures": {...}}, ...]}`` plus the run's budget, counts and an ``evidence``
entry. ``evidence.tar.gz`` holds every check's folder (``checks/<name>/``: logs, results, plots,
small .ncu-rep files) and is kept at most :data:`EVIDENCE_CAP_BYTES`: the largest files are dropped
first, and the dropped ones are listed in ``DROPPED.txt`` inside the archive and in the summaries.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuprobe.tools.selftest.runner import SelftestRun

EVIDENCE_CAP_BYTES = 16 * 2**20
SUMMARY_JSON, SUMMARY_MD, EVIDENCE = "summary.json", "summary.md", "evidence.tar.gz"


def format_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "null"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v[:6]) + (", ..." if len(v) > 6 else "") + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {format_value(x)}" for k, x in list(v.items())[:4]) \
            + (", ..." if len(v) > 4 else "") + "}"
    return str(v)


#: The figures key holding a check's targets (figure beside target, see gpuprobe.tools.selftest.targets):
#: shown in their own table, not among the key figures.
TARGETS_KEY = "targets"


def format_figures(figures: dict[str, Any], limit: int = 120) -> str:
    """``k=v, k=v`` with numbers to 4 significant digits, cut to about ``limit`` characters."""
    out = ""
    for k, v in figures.items():
        if k == TARGETS_KEY:
            continue
        part = f"{k}={format_value(v)}"
        sep = ", " if out else ""
        if out and len(out) + len(sep) + len(part) > limit:
            return out + ", ..."
        out += sep + part
    return out[: limit + 40]


# --------------------------------------------------------------------------------------------------
# evidence


def _evidence_files(out_dir: Path) -> list[tuple[Path, int]]:
    root = out_dir / "checks"
    if not root.is_dir():
        return []
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sorted(((p, p.stat().st_size) for p in files), key=lambda t: str(t[0]))


def _overhead(n_files: int) -> int:
    """Bytes a tar.gz adds beyond the files' own (headers, padding, end blocks, gzip framing), generously."""
    return 1536 * n_files + 16384


def write_evidence(out_dir: Path, cap_bytes: int = EVIDENCE_CAP_BYTES) -> dict[str, Any]:
    """Write ``evidence.tar.gz`` from ``out_dir/checks``; returns what went in and what was dropped."""
    out_dir = Path(out_dir)
    files = _evidence_files(out_dir)
    kept = sorted(files, key=lambda t: t[1])  # smallest first: drop from the end
    dropped: list[tuple[Path, int]] = []
    note_room = 64 * 1024  # room for DROPPED.txt
    while kept and sum(s for _, s in kept) + _overhead(len(kept) + 1) + note_room > cap_bytes:
        dropped.append(kept.pop())
    path = out_dir / EVIDENCE
    tmp = out_dir / (EVIDENCE + ".tmp")  # written aside, then renamed: a reader never sees half an archive
    while True:
        _write_tar(tmp, out_dir, sorted(kept, key=lambda t: str(t[0])), dropped)
        if tmp.stat().st_size <= cap_bytes or not kept:
            break
        dropped.append(kept.pop())  # the estimate was short (incompressible data): drop one more
    tmp.replace(path)
    return {
        "path": EVIDENCE,
        "bytes": path.stat().st_size,
        "cap_bytes": cap_bytes,
        "files": len(kept),
        "dropped": [{"path": str(p.relative_to(out_dir)), "bytes": s} for p, s in dropped],
    }


def _write_tar(path: Path, out_dir: Path, kept: list[tuple[Path, int]], dropped: list[tuple[Path, int]]) -> None:
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        for p, _ in kept:
            try:
                tar.add(p, arcname=str(p.relative_to(out_dir)), recursive=False)
            except OSError:
                continue
        if dropped:
            text = "Dropped to keep this archive under its size cap (largest first):\n" + "".join(
                f"{s:>12} bytes  {p.relative_to(out_dir)}\n" for p, s in dropped)
            data = text.encode()
            info = tarfile.TarInfo("DROPPED.txt")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------------------------------
# summaries


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _or(value: Any, missing: str = "not found") -> str:
    return missing if value is None else str(value)


def runtime_lines(versions: dict[str, Any]) -> list[str]:
    """The summary's first lines: where the run ran, each figure as the doctor measured it."""
    v = versions or {}
    release = v.get("kernel_release")
    runtime = f"{v.get('runtime') or 'unknown runtime'} (kernel {release})" if release else "not measured"
    driver = _or(v.get("driver")) + (f" (CUDA {v['driver_cuda']})" if v.get("driver_cuda") else "")
    torch = _or(v.get("torch")) + (f" (CUDA {v['torch_cuda']})" if v.get("torch_cuda") else "")
    return [
        f"- runtime: {runtime}",
        f"- GPU: {_or(v.get('gpu'), 'none')}; driver {driver}",
        f"- Python {_or(v.get('python'))}, torch {torch}, triton {_or(v.get('triton'))}, ncu {_or(v.get('ncu'))}; "
        f"counters: {v.get('counters') or 'not probed'}",
    ]


def result_line(summary: dict[str, Any]) -> str:
    """Counts, then what the counts alone do not say: a stop from outside, no GPU verdict."""
    c = summary.get("counts", {})
    line = f"- result: {c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped"
    if summary.get("interrupted"):
        sig = summary.get("stop_signal") or "SIGINT"
        line += (f"; STOPPED ({'Ctrl-C' if sig == 'SIGINT' else sig}): the check in flight and those after it "
                 "have no verdict")
    if summary.get("no_gpu_verdict"):
        line += f"; NO GPU VERDICT: {summary['no_gpu_verdict']}"
    return line


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# gpuprobe selftest",
        "",
        *runtime_lines(summary.get("versions") or {}),
        f"- started: {summary.get('started')}; wall time {summary.get('wall_s', 0):.1f} s "
        f"of a {summary.get('budget_s', 0):.0f} s budget; estimates for {summary.get('gpu_class') or 'the default class'}",
        f"- gpuprobe {summary.get('gpuprobe')}; command: `{summary.get('command')}`",
        result_line(summary),
        "",
        "| check | result | key figures | seconds | estimate |",
        "|---|---|---|---|---|",
    ]
    for chk in summary.get("checks", []):
        result = chk["status"] + (f": {chk['reason']}" if chk.get("reason") else "")
        est = chk.get("estimate_s")
        lines.append(f"| {_cell(chk['name'])} | {_cell(result)} | {_cell(format_figures(chk.get('figures') or {}))} "
                     f"| {chk.get('seconds', 0):.1f} | {'-' if est is None else f'{est:.0f}'} |")
    lines += _targets_table(summary.get("checks", []))
    env = summary.get("environment") or {}
    lines += ["", "## Environment (gpuprobe doctor)", ""]
    if env.get("items"):
        lines += ["| item | status | found | what to do |", "|---|---|---|---|"]
        for it in env["items"]:
            fix = "" if it.get("status") == "ok" else it.get("fix", "")
            lines.append(f"| {_cell(it.get('name'))} | {_cell(it.get('status'))} | {_cell(it.get('detail'))} "
                         f"| {_cell(fix)} |")
    else:
        lines.append(f"not available: {env.get('error', 'the doctor did not run')}")
    ev = summary.get("evidence")
    if ev:
        lines += ["", "## Evidence", "",
                  f"`{ev['path']}`: {ev['files']} files, {ev['bytes'] / 2**20:.2f} MiB "
                  f"(cap {ev['cap_bytes'] / 2**20:.0f} MiB); each check's files are under `checks/<name>/`."]
        if ev.get("dropped"):
            lines.append("Dropped to stay under the cap (largest first):")
            lines += [f"- `{d['path']}` ({d['bytes'] / 2**20:.2f} MiB)" for d in ev["dropped"]]
    return "\n".join(lines) + "\n"


def _targets_table(checks: list[dict[str, Any]]) -> list[str]:
    """Figures beside their GPU-aware targets (from the GPU registry), one row per target."""
    rows = []
    for chk in checks:
        for t in (chk.get("figures") or {}).get(TARGETS_KEY) or []:
            if not isinstance(t, dict):
                continue
            value = t.get("value")
            shown = "-" if value is None else f"{format_value(value)} {t.get('unit') or ''}".strip()
            verdict = {True: "met", False: "MISSED", None: "not measured"}.get(t.get("met"), "?")
            rows.append(f"| {_cell(chk['name'])} | {_cell(t.get('figure'))} | {_cell(shown)} | {_cell(t.get('target'))} "
                        f"| {verdict} |")
    if not rows:
        return []
    return ["", "## Figures against targets", "", "| check | figure | measured | target | verdict |",
            "|---|---|---|---|---|", *rows]


def write_summary(run: "SelftestRun", evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json and summary.md for ``run`` (also mid-run, so a killed run leaves one)."""
    summary = run.to_dict()
    if evidence is not None:
        summary["evidence"] = evidence
    out_dir = Path(run.out_dir)
    tmp = out_dir / (SUMMARY_JSON + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    tmp.replace(out_dir / SUMMARY_JSON)
    (out_dir / SUMMARY_MD).write_text(render_markdown(summary))
    return summary


def write_bundle(run: "SelftestRun", cap_bytes: int = EVIDENCE_CAP_BYTES) -> dict[str, Any]:
    """The evidence archive, then both summaries (which list what the archive holds)."""
    evidence = write_evidence(Path(run.out_dir), cap_bytes)
    return write_summary(run, evidence)
