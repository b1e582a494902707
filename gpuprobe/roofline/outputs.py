"""Outputs of a measured roofline: the files (:func:`write_outputs`) and the terminal summary
(:func:`print_summary`); both work from a :class:`~gpuprobe.roofline.schema.RooflineResult` alone."""
from __future__ import annotations

from pathlib import Path

from gpuprobe.render.plots.throughput import plot_result_throughput
from gpuprobe.render.report_md import verdict_lines, write_report
from gpuprobe.render.tables import print_roofline_table
from gpuprobe.roofline.schema import RooflineResult

#: The written files, in the order the summary names them.
FILE_ORDER = ("report", "json", "csv", "roofline", "bandwidth", "breakdown", "throughput")


def write_outputs(result: RooflineResult, out: str | Path) -> dict[str, Path]:
    """roofline.json/.csv, the four figures and report.md into ``out``; returns what was written."""
    from gpuprobe.render.plots.bandwidth import plot_bandwidth_vs_batch  # matplotlib: loaded when drawing
    from gpuprobe.render.plots.breakdown import plot_time_breakdown
    from gpuprobe.render.plots.roofline import plot_roofline

    out = Path(out)
    files: dict[str, Path] = {}
    files["json"], files["csv"] = result.write(out)
    if result.points:
        files["roofline"] = plot_roofline(result, out / "roofline.png")
        files["bandwidth"] = plot_bandwidth_vs_batch(result, out / "bandwidth_vs_batch.png")
        files["breakdown"] = plot_time_breakdown(result, out / "time_breakdown.png")
    tp = plot_result_throughput(result, out / "throughput.png")
    if tp is not None:
        files["throughput"] = tp
    files["report"] = write_report(result, out, figures={k: v.name for k, v in files.items()})
    return files


def print_summary(result: RooflineResult, files: dict[str, Path]) -> None:
    """The roofline table, the verdicts, failed and throttled points, and the files written."""
    print_roofline_table(result)
    for line in verdict_lines(result):
        print(line)
    for f in result.extra.get("failed_points", []):
        print(f"batch {f['batch']}: {f['status']}: {f['reason']}")
    for s in result.extra.get("steps", []):
        if s.get("throttled"):
            print(f"batch {s['batch']}: measured while the GPU throttled ({', '.join(s['throttle_reasons'] or [])}); "
                  "its times may be slow")
    for name in FILE_ORDER:
        if name in files:
            print(f"wrote {files[name]}")
