"""Outputs of a roofline result: the files (:func:`write_outputs`) and the terminal summary
(:func:`print_summary`); both work from a :class:`~gpuprobe.roofline.schema.RooflineResult` alone."""
from __future__ import annotations

import sys
from pathlib import Path

from gpuprobe.render.plots.bandwidth import plot_bandwidth_vs_batch
from gpuprobe.render.plots.roofline import plot_roofline
from gpuprobe.render.plots.throughput import plot_result_throughput
from gpuprobe.render.report_md import verdict_lines, write_report
from gpuprobe.render.tables import print_roofline_table
from gpuprobe.roofline.schema import RooflineResult

#: The written files, in the order the summary names them.
FILE_ORDER = ("report", "json", "csv", "roofline", "bandwidth", "breakdown", "throughput")


def write_outputs(result: RooflineResult, out: str | Path, figures: tuple[str, ...] | None = None) -> dict[str, Path]:
    """roofline.json/.csv, the figures and report.md into ``out``; returns what was written.

    ``figures``: the figures to draw (of ``roofline``, ``bandwidth``, ``breakdown``, ``throughput``);
    None draws every one the result has data for and writes report.md (a measured run); a subset writes
    those figures and no report (the analytic mode: ``("roofline",)``)."""
    from gpuprobe.render.plots.breakdown import plot_time_breakdown

    want = set(figures) if figures is not None else {"roofline", "bandwidth", "breakdown", "throughput"}
    out = Path(out)
    files: dict[str, Path] = {}
    files["json"], files["csv"] = result.write(out)
    if result.points:
        if "roofline" in want:
            files["roofline"] = plot_roofline(result, out / "roofline.png")
        if "bandwidth" in want:
            files["bandwidth"] = plot_bandwidth_vs_batch(result, out / "bandwidth_vs_batch.png")
        if "breakdown" in want:
            files["breakdown"] = plot_time_breakdown(result, out / "time_breakdown.png")
    if "throughput" in want:
        tp = plot_result_throughput(result, out / "throughput.png")
        if tp is not None:
            files["throughput"] = tp
    if figures is None:
        files["report"] = write_report(result, out, figures={k: v.name for k, v in files.items()})
    return files


def print_summary(result: RooflineResult, files: dict[str, Path], fmt: str | None = None,
                  as_json: bool = False) -> None:
    """The requested output on stdout (the roofline table in ``fmt``, or ``roofline.json`` with
    ``as_json``); the verdicts, failed and throttled points and the files written on stderr."""
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_roofline_table(result, fmt=fmt)
    sys.stdout.flush()
    say = sys.stderr
    for line in verdict_lines(result):
        print(line, file=say)
    for f in result.extra.get("failed_points", []):
        print(f"batch {f['batch']}: {f['status']}: {f['reason']}", file=say)
    for s in result.extra.get("steps", []):
        if s.get("fallback"):
            fb = s["fallback"]
            print(f"batch {s['batch']}: measured in {fb.get('mode')} mode, not {fb.get('requested_mode')}: node "
                  f"{fb.get('node')} refused the GPU counters", file=say)
        if s.get("throttled"):
            print(f"batch {s['batch']}: measured while the GPU throttled ({', '.join(s['throttle_reasons'] or [])}); "
                  "its times may be slow", file=say)
    for name in FILE_ORDER:
        if name in files:
            print(f"wrote {files[name]}", file=say)
