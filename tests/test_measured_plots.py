"""The measured roofline's figures and report.md from recorded real H100 results (CPU)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pytest

from gpuprobe.specs.gpus import get_gpu
from gpuprobe.specs.models import get_model
from gpuprobe.measure.sweep import read_results

MEASURED = Path(__file__).resolve().parent / "fixtures" / "measured"


def _result(mode: str, copy_bw: float | None = 3.01e12):
    from gpuprobe.roofline.assemble import assemble_result

    return assemble_result(read_results(MEASURED / mode / "results.jsonl"), spec=get_model("qwen2-0.5b"),
                           gpu=get_gpu("h100-sxm"), dtype="bf16", copy_bw=copy_bw, copy_source="test")


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 400 and img.shape[1] > 600 and img.std() > 0.05


@pytest.mark.parametrize("mode", ["timing", "ncu"])
def test_bandwidth_breakdown_throughput_figures(mode, tmp_path):
    from gpuprobe.render.plots.bandwidth import plot_bandwidth_vs_batch
    from gpuprobe.render.plots.breakdown import plot_time_breakdown
    from gpuprobe.render.plots.throughput import plot_result_throughput

    res = _result(mode)
    _assert_png(plot_bandwidth_vs_batch(res, tmp_path / "bw.png"))
    _assert_png(plot_time_breakdown(res, tmp_path / "bd.png"))
    tp = plot_result_throughput(res, tmp_path / "tp.png")
    if mode == "timing":
        _assert_png(tp)
    else:
        assert tp is None  # the recorded ncu reports came without step times


def test_breakdown_shares_come_from_the_recorded_op_times():
    from gpuprobe.render.plots.breakdown import op_times_by_batch

    times, source = op_times_by_batch(_result("timing"))
    assert sorted(times) == [1, 8, 32, 64, 128, 256, 512, 1024] and "CUDA-event" in source
    assert times[1024]["attention"] == pytest.approx(182e-6 * 24)  # the reference table's 182 µs per layer
    share = times[1024]["attention"] / sum(times[1024].values())
    assert 0.6 < share < 0.75
    times, source = op_times_by_batch(_result("ncu"))
    assert "ncu kernel time" in source and set(times[64]) == {"qkv_proj", "attention", "o_proj", "mlp"}


def test_throughput_series_and_bandwidth_without_measured_copy(tmp_path):
    from gpuprobe.render.plots.bandwidth import plot_bandwidth_vs_batch
    from gpuprobe.render.plots.throughput import throughput_rows

    rows = throughput_rows(_result("timing"))
    assert {r["mode"] for r in rows} == {"eager"}  # no CUDA-graph times were recorded with that table
    assert [r["batch"] for r in rows][:2] == [1, 8] and rows[0]["tokens_per_s"] == 242
    assert rows[-1]["tokens_per_s"] == 138770 and all(r["status"] == "ok" for r in rows)
    res = _result("ncu", copy_bw=None)  # no measured copy: DRAM % of ncu's own peak is drawn
    assert all(p.dram_pct_of_measured is None for p in res.points)
    _assert_png(plot_bandwidth_vs_batch(res, tmp_path / "bw.png"))


def test_report_md_verdicts_are_backed_by_numbers(tmp_path):
    from gpuprobe.render.report_md import attention_claim, verdict_lines
    from gpuprobe.render.outputs import write_outputs

    res = _result("timing")
    files = write_outputs(res, tmp_path)
    md = files["report"].read_text()
    att = [p for p in res.points if p.op == "attention" and p.batch == 1024][0]
    line = f"attention: DRAM {att.dram_pct_of_measured:.0f}% of peak, {att.tensor_pct:.0f}% of the tensor roof, " \
           "at batch 1024: memory-bound"
    assert line in md and line in verdict_lines(res)
    assert "Holds in this run" in attention_claim(res)
    assert "lm_head: intensity 1.0 -> 476.4 FLOP/B from batch 1 to 1024; past the ridge from batch 1024" in md
    assert "Timing mode: no counters" in md and "No counter cross-checks" in md
    assert "| 1024 | ok | n/a | n/a | 138,770 |" in md
    for name in ("roofline.png", "bandwidth_vs_batch.png", "time_breakdown.png", "throughput.png"):
        assert f"]({name})" in md
        _assert_png(tmp_path / name)


def test_advisor_reads_a_measured_roofline_folder(tmp_path):
    """roofline.json's throughput section is what `gpuprobe advise --from DIR` reads."""
    from gpuprobe.advise.curves import load_curve

    import shutil

    res = _result("timing")
    res.write(tmp_path)
    shutil.copy(MEASURED / "timing" / "results.jsonl", tmp_path / "results.jsonl")  # as a sweep leaves it
    section = res.extra["throughput"]
    assert [r["batch"] for r in section] == sorted(r["batch"] for r in section)
    assert all(r["tokens_per_s"] > 0 and r["mode"] in ("graph", "eager") for r in section)
    curve = load_curve(tmp_path)
    assert {p.batch: p.tokens_per_s for p in curve.points} == {r["batch"]: r["tokens_per_s"] for r in section}


def test_plots_never_change_the_session_backend(tmp_path):
    """A notebook's inline backend must survive importing and calling gpuprobe's figures."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import gpuprobe.render.plots.roofline, gpuprobe.render.plots.bandwidth, gpuprobe.render.plots.breakdown, "
        "gpuprobe.render.plots.advisor, gpuprobe.render.plots.pareto; "
        "from gpuprobe.render.plots.style import new_figure; "
        "fig = new_figure(figsize=(2, 2)); fig.subplots().plot([1, 2]); "
        f"fig.savefig({str(tmp_path / 'x.png')!r}); "
        "import matplotlib.pyplot as plt; print(matplotlib.get_backend(), len(plt.get_fignums()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "0"]
    assert (tmp_path / "x.png").stat().st_size > 1000
