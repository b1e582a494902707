"""CUDA graph node attribution, eager alignment, decode steps and the roofline of a trace, on SQLite
files these tests build from the export schema (the column names and event types of the real exports
in tests/fixtures/nsys/, and ``graphNodeId``/``graphId`` of ``--cuda-graph-trace=node``).

No real node-traced fixture exists yet: none of the shared exports traced CUDA graphs node by node, so
the graph cases are built here from the documented schema.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprobe.nsys import load_trace

PID, TID = 4242, 4243
GTID, GPID = (PID << 24) | TID, PID << 24
US = 1000  # ns


class TraceBuilder:
    """Writes a minimal nsys SQLite export: StringIds, the kernel, runtime and NVTX tables, GPU and version."""

    def __init__(self) -> None:
        self.strings: dict[str, int] = {}
        self.kernels: list[tuple] = []
        self.runtime: list[tuple] = []
        self.nvtx: list[tuple] = []
        self.corr = 0

    def sid(self, s: str) -> int:
        return self.strings.setdefault(s, len(self.strings) + 1)

    def range(self, name: str, start: int, end: int, tid: int = GTID, event_type: int = 59) -> None:
        self.nvtx.append((start, end, event_type, name, tid))

    def _call(self, name: str, t: int, tid: int = GTID) -> int:
        self.corr += 1
        self.runtime.append((t, t + 2 * US, tid, self.corr, self.sid(name)))
        return self.corr

    def _kernel(self, name: str, gpu_start: int, dur: int, corr: int, node=None, graph=None) -> None:
        self.kernels.append((gpu_start, gpu_start + dur, corr, self.sid(f"void {name}<128>(Params)"),
                             self.sid(name), node, graph))

    def launch(self, name: str, t: int, gpu_start: int, dur: int, tid: int = GTID) -> None:
        self._kernel(name, gpu_start, dur, self._call("cudaLaunchKernel_v7000", t, tid))

    def graph_launch(self, t: int, kernels: list[tuple[str, int, int]], graph_id: int = 1) -> None:
        corr = self._call("cudaGraphLaunch_v10000", t)
        for node, (name, start, dur) in enumerate(kernels):
            self._kernel(name, start, dur, corr, node=1000 + node, graph=graph_id)

    def write(self, path: Path) -> Path:
        con = sqlite3.connect(path)
        con.executescript("""
            CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER, end INTEGER, deviceId INTEGER, contextId INTEGER,
                greenContextId INTEGER, streamId INTEGER, correlationId INTEGER, globalPid INTEGER,
                demangledName INTEGER, shortName INTEGER, mangledName INTEGER, launchType INTEGER, gridX INTEGER,
                gridY INTEGER, gridZ INTEGER, blockX INTEGER, blockY INTEGER, blockZ INTEGER, graphNodeId INTEGER,
                graphId INTEGER);
            CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER, end INTEGER, eventClass INTEGER,
                globalTid INTEGER, correlationId INTEGER, nameId INTEGER, returnValue INTEGER, callchainId INTEGER);
            CREATE TABLE NVTX_EVENTS (start INTEGER, end INTEGER, eventType INTEGER, rangeId INTEGER,
                category INTEGER, color INTEGER, text TEXT, globalTid INTEGER, endGlobalTid INTEGER, textId INTEGER,
                domainId INTEGER, uint64Value INTEGER, int64Value INTEGER, doubleValue REAL, uint32Value INTEGER,
                int32Value INTEGER, floatValue REAL, jsonTextId INTEGER, jsonText TEXT, binaryData TEXT);
            CREATE TABLE TARGET_INFO_GPU (vmId INTEGER, id INTEGER, name TEXT);
            CREATE TABLE META_DATA_EXPORT (name TEXT, value TEXT);
        """)
        con.executemany("INSERT INTO StringIds VALUES (?, ?)", [(i, s) for s, i in self.strings.items()])
        con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, 0, 1, NULL, 7, ?, ?, ?, ?, NULL, 0, "
                        "64, 1, 1, 128, 1, 1, ?, ?)",
                        [(s, e, c, GPID, d, sh, n, g) for s, e, c, d, sh, n, g in self.kernels])
        con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?, ?, 0, ?, ?, ?, 0, NULL)", self.runtime)
        con.executemany("INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) "
                        "VALUES (?, ?, ?, ?, ?, 0)", self.nvtx)
        con.execute("INSERT INTO TARGET_INFO_GPU VALUES (0, 0, 'NVIDIA H100 80GB HBM3')")
        con.execute("INSERT INTO META_DATA_EXPORT VALUES ('EXPORT_PRODUCT_VERSION', '2025.5.1.121')")
        con.commit()
        con.close()
        return path


# one decode layer as an eager engine launches it: (op, kernel short name, GPU µs)
LAYER = [("input_norm", "rms_norm_kernel", 3), ("qkv_proj", "nvjet_hsh_64x8_TNT", 16),
         ("rope", "rotary_kernel", 2), ("attention", "flash_fwd_splitkv_kernel", 17),
         ("attention", "flash_fwd_splitkv_combine_kernel", 2), ("o_proj", "nvjet_hsh_64x8_TNT", 6),
         ("gate_up_proj", "nvjet_hsh_128x8_TNT", 15), ("act", "silu_and_mul_kernel", 3),
         ("down_proj", "nvjet_hsh_64x16_TNT", 18)]


def eager_step(tb: TraceBuilder, t0: int, layers: int = 2, name: str = "decode") -> int:
    """Push decode > layer{i} > op ranges around each launch; GPU runs 50 µs behind the CPU."""
    t, gpu = t0, t0 + 50 * US
    start = t
    for i in range(layers):
        ls = t
        for op, k, dur in LAYER:
            tb.range(op, t, t + 5 * US)
            tb.launch(k, t + 1 * US, gpu, dur * US)
            t, gpu = t + 6 * US, gpu + dur * US + 1 * US
        tb.range(f"layer{i}", ls, t)
    tb.range(name, start, t + 1 * US)
    return gpu


def test_graph_kernels_take_the_ranges_around_the_graph_launch(tmp_path):
    tb = TraceBuilder()
    tb.range("decode", 0, 10 * US)
    kernels = [(k, 200 * US + j * 20 * US, 15 * US) for j, (_, k, _) in enumerate(LAYER)]
    tb.graph_launch(2 * US, kernels)
    # while the GPU replays the graph, the CPU is already in another range: it must not be taken
    tb.range("prepare_inputs", 100 * US, 400 * US)
    tb.launch("argmax_kernel", 150 * US, 500 * US, 3 * US)
    df = load_trace(tb.write(tmp_path / "g.sqlite")).kernels
    g = df[df["graph_node_id"].notna()]
    assert len(g) == len(LAYER) and set(g["graph_id"]) == {1}
    assert list(g["graph_node_id"]) == list(range(1000, 1000 + len(LAYER)))
    assert all(s == ("decode",) for s in g["nvtx_stack"]) and set(g["launch_api"]) == {"cudaGraphLaunch_v10000"}
    assert g["launch_s"].iloc[0] == pytest.approx(2e-6)
    eager = df[df["graph_node_id"].isna()]
    assert list(eager["nvtx_stack"]) == [("prepare_inputs",)]
    assert set(g["op"]) == {"other:" + k for _, k, _ in LAYER} or set(g["op_source"]) == {"rules"}


def test_push_pop_ranges_are_per_thread_start_end_ranges_per_process(tmp_path):
    other = GTID + 1  # another thread of the same process
    tb = TraceBuilder()
    tb.range("layer0", 0, 100 * US)                      # push/pop on the main thread
    tb.range("qkv_proj", 10 * US, 20 * US)
    tb.range("loader_work", 0, 100 * US, tid=other)      # push/pop on the other thread
    tb.range("step", 5 * US, 60 * US, event_type=60)     # start/end, process-wide
    tb.launch("k_main", 12 * US, 200 * US, 5 * US)
    tb.launch("k_other", 30 * US, 210 * US, 5 * US, tid=other)
    tb.launch("k_late", 70 * US, 220 * US, 5 * US)       # after the start/end range closed
    df = load_trace(tb.write(tmp_path / "t.sqlite")).kernels.set_index("kernel_short")
    assert df.at["k_main", "nvtx_stack"] == ("layer0", "qkv_proj") and df.at["k_main", "nvtx_ranges"] == ("step",)
    assert df.at["k_other", "nvtx_stack"] == ("loader_work",) and df.at["k_other", "nvtx_ranges"] == ("step",)
    assert df.at["k_late", "nvtx_stack"] == ("layer0",) and df.at["k_late", "nvtx_ranges"] == ()
    assert df.at["k_main", "op"] == "qkv_proj" and df.at["k_main", "layer"] == 0
    assert int(df.at["k_other", "thread_id"]) == other


def test_align_graph_kernels_with_an_eager_step(tmp_path):
    eager = TraceBuilder()
    t = 0
    for _ in range(3):  # a few eager steps; the last one is the reference
        eager_step(eager, t)
        t += 500 * US
    eager_path = eager.write(tmp_path / "eager.sqlite")

    graph = TraceBuilder()
    seq = [(op, k) for _ in range(2) for op, k, _ in LAYER]
    # the graph differs from the eager step in two ways: a kernel variant (another GEMM tile) and one
    # extra kernel (a copy the capture added)
    seq[6] = ("gate_up_proj", "nvjet_hsh_256x8_TNT")
    seq.insert(12, ("?", "copy_kernel"))
    kernels = [(k, 100 * US + j * 20 * US, 10 * US) for j, (_, k) in enumerate(seq)]
    graph.range("decode", 0, 5 * US)
    graph.graph_launch(1 * US, kernels)
    graph_path = graph.write(tmp_path / "graph.sqlite")

    df = load_trace(graph_path, align_eager=eager_path).kernels
    g = df[df["graph_node_id"].notna()].sort_values("start_s")
    expected = [op for op, _ in seq]
    got = list(g["op"])
    for j, (want, have, src) in enumerate(zip(expected, got, g["op_source"])):
        if want == "?":
            assert src != "eager_alignment" and have.startswith("other:") or src == "rules", j
        else:
            assert have == want and src == "eager_alignment", (j, want, have)
    layers = [lay for lay, op in zip(g["layer"], expected) if op != "?"]
    assert layers == [0] * len(LAYER) + [1] * len(LAYER)
    assert g["nvtx_stack"].iloc[0] == ("decode", "layer0", "input_norm")
    a = df.attrs["alignment"]
    assert a == [{"correlation_id": 1, "kernels": len(seq), "reference_kernels": 2 * len(LAYER),
                  "paired": 2 * len(LAYER)}]


def test_steps_from_a_marker_kernel_with_idle_time(tmp_path):
    tb = TraceBuilder()
    gpu = 0
    # four steps of: gemm 10 µs, gap 5 µs, attention 20 µs, gap 2 µs, argmax 3 µs; then a gap of 100 µs
    for _ in range(4):
        for name, dur, gap in (("nvjet_gemm", 10, 5), ("flash_fwd_kernel", 20, 2), ("argmax_kernel", 3, 100)):
            tb.launch(name, gpu, gpu, dur * US)
            gpu += (dur + gap) * US
    df = load_trace(tb.write(tmp_path / "m.sqlite"))
    st = df.steps(step_kernel="argmax")
    assert st.summary["n_steps"] == 3  # the run before the first marker is partial
    assert list(st.steps["n_kernels"]) == [3, 3, 3]
    # a step: from the gemm after the previous argmax to this argmax; idle inside = 5 + 2 µs
    assert list(st.steps["kernel_time_s"]) == pytest.approx([33e-6] * 3)
    assert list(st.steps["idle_s"]) == pytest.approx([7e-6] * 3)
    assert list(st.steps["span_s"]) == pytest.approx([40e-6] * 3)
    # the marker is searched in the full name too (torch's argmax is a reduce_kernel<..ArgMaxOps..>)
    assert df.steps(step_kernel=r"argmax_kernel<128>").summary["n_steps"] == 3


def test_steps_from_nvtx_ranges_and_shapes_in_names(tmp_path):
    tb = TraceBuilder()
    t = 0
    for b in (8, 8, 8, 32):
        eager_step(tb, t, name=f"decode b={b} c=512")
        t += 500 * US
    st = load_trace(tb.write(tmp_path / "s.sqlite")).steps()
    assert st.summary["n_steps"] == 4
    assert list(st.steps["batch"]) == [8, 8, 8, 32] and set(st.steps["context"]) == {512}
    assert list(st.steps["n_kernels"]) == [2 * len(LAYER)] * 4
    assert st.op_median_s["attention"] == pytest.approx(2 * 19e-6)
    assert st.op_median_s["qkv_proj"] == pytest.approx(2 * 16e-6)
    assert st.summary["idle_s_median"] == pytest.approx((2 * len(LAYER) - 1) * 1e-6)


# ---- the roofline of a trace on the H100 reference timing data --------------------------------------
REFERENCE = Path("/work/shared/reference/h100_measurements.md")
# per-layer µs and %bw from the reference's plain-PyTorch decode table (Qwen2-0.5B shapes, 24 layers,
# dense KV cache of 1024 tokens), columns qkv_proj, attention, gate_up, down, lm_head
H100_TABLE = {
    64: {"qkv_proj": (16, 5), "attention": (17, 67), "gate_up_proj": (15, 41), "down_proj": (18, 18), "lm_head": (105, 93)},
    256: {"qkv_proj": (18, 6), "attention": (51, 89), "gate_up_proj": (15, 50), "down_proj": (14, 28), "lm_head": (130, 90)},
}
COPY_BW = 3.01e12  # the reference's measured device-to-device copy bandwidth


def test_reference_table_transcribed_right():
    if not REFERENCE.is_file():
        pytest.skip("the shared reference is not on this machine")
    text = REFERENCE.read_text()
    for b, ops in H100_TABLE.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {b} |"))
        cells = re.findall(r"(\d+) us, (\d+)% bw", row)
        assert [(int(t), int(p)) for t, p in cells] == list(ops.values())


def h100_trace(path: Path, steps: int = 3) -> Path:
    tb = TraceBuilder()
    t = 0
    for b, ops in H100_TABLE.items():
        for _ in range(steps):
            start, gpu = t, t + 20 * US
            for layer in range(24):
                ls = t
                for op in ("qkv_proj", "attention", "gate_up_proj", "down_proj"):
                    tb.range(op, t, t + 3 * US)
                    tb.launch(f"{op}_kernel", t + 1 * US, gpu, ops[op][0] * US)
                    t, gpu = t + 4 * US, gpu + ops[op][0] * US
                tb.range(f"layer{layer}", ls, t)
            tb.range("lm_head", t, t + 3 * US)
            tb.launch("lm_head_gemm", t + 1 * US, gpu, ops["lm_head"][0] * US)
            t = max(t + 4 * US, gpu + ops["lm_head"][0] * US) + 10 * US
            tb.range(f"decode b={b} c=1024", start, t - 5 * US)
    return tb.write(path)


def test_roofline_from_a_trace_on_h100_reference_times(tmp_path):
    from gpuprobe.analytic import decode_costs
    from gpuprobe.nsys.trace_roofline import trace_roofline
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    tr = load_trace(h100_trace(tmp_path / "h100.sqlite"))
    spec = get_model("qwen2-0.5b")
    res = trace_roofline(tr.steps(), spec=spec, gpu=get_gpu("h100-sxm"), copy_bw=COPY_BW, copy_source="reference")
    assert res.mode == "nsys" and res.batch == [64, 256] and res.context == 1024
    by = {(p.op, p.batch): p for p in res.points}
    assert set(by) == {(op, b) for b in H100_TABLE for op in H100_TABLE[b]}
    for b, ops in H100_TABLE.items():
        costs = {c.op: c for c in decode_costs(spec, b, 1024, "bf16")}
        for op, (us, pct) in ops.items():
            p = by[(op, b)]
            n = 1 if op == "lm_head" else 24
            assert p.time_s == pytest.approx(n * us * 1e-6)
            assert p.dram_bytes == pytest.approx(costs[op].dram_bytes)
            bw = costs[op].dram_bytes / p.time_s
            assert p.dram_pct_of_measured == pytest.approx(100 * bw / COPY_BW)
            # the reference's own %bw (its bytes model and rounded times) agrees within 12%
            assert p.dram_pct_of_measured == pytest.approx(pct, rel=0.12), (op, b)
            assert p.extra["time_source"].startswith("nsys")
    assert by[("attention", 256)].limiter == "memory" and by[("qkv_proj", 64)].limiter == "latency"
    tp = {r["batch"]: r for r in res.extra["throughput"]}
    assert tp[64]["mode"] == "eager" and tp[64]["tokens_per_s"] > 0


def test_report_cli_writes_roofline_json_mode_nsys(tmp_path):
    path = h100_trace(tmp_path / "h100.sqlite", steps=2)
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "report", str(path), "--model", "qwen2-0.5b",
                        "--measured-dram-tbps", "3.01", "--out", str(out)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads((out / "roofline.json").read_text())
    assert d["mode"] == "nsys" and d["schema_version"] == 1 and d["model"] == "qwen2-0.5b"
    assert d["batch"] == [64, 256] and d["context"] == 1024 and d["gpu"] == "h100-sxm"
    assert d["provenance"]["nsys_version"] == "2025.5.1.121" and d["provenance"]["trace"] == str(path)
    att = next(p for p in d["points"] if p["op"] == "attention" and p["batch"] == 256)
    assert att["time_s"] == pytest.approx(24 * 51e-6) and att["flops_executed"] is None
    assert (out / "report.md").is_file()
    from gpuprobe.roofline.schema import RooflineResult

    assert RooflineResult.from_dict(d).mode == "nsys"


def test_report_needs_model_for_json(tmp_path):
    path = h100_trace(tmp_path / "h100.sqlite", steps=1)
    r = subprocess.run([sys.executable, "-m", "gpuprobe", "report", str(path), "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_without_a_measured_copy_bandwidth_the_limiter_is_not_guessed(tmp_path):
    from gpuprobe.nsys.trace_roofline import trace_roofline
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    tr = load_trace(h100_trace(tmp_path / "h100.sqlite", steps=1))
    res = trace_roofline(tr.steps(), spec=get_model("qwen2-0.5b"), gpu=get_gpu("h100-sxm"))
    assert all(p.dram_pct_of_measured is None for p in res.points)
    assert all(p.limiter in (None, "compute") for p in res.points)
    assert "--measured-dram-tbps" in res.provenance["limiter_note"]
    assert all(p.bound == "memory" for p in res.points if p.op == "attention")


def engine_trace(path: Path, batch: int, context: int, graph_steps: int = 4) -> Path:
    """What gpuprobe.measure.nsys_target leaves in a trace: unannotated warm-up steps, eager steps with op
    ranges (decode > layer{i} > op), then graph replays inside 'graph_decode b=B c=C' ranges, whose
    kernels carry graph node ids and the graph launch's correlation id (built from the schema)."""
    tb = TraceBuilder()
    t = 0
    for _ in range(2):  # warm-up: no ranges
        for _, k, dur in LAYER:
            tb.launch(k, t, t + 20 * US, dur * US)
            t += 30 * US
    for _ in range(2):
        eager_step(tb, t)
        t += 2000 * US
    for _ in range(graph_steps):
        gpu = t + 10 * US
        kernels = []
        for _layer in range(2):
            for _, k, dur in LAYER:
                kernels.append((k, gpu, dur * US))
                gpu += dur * US
        tb.range(f"graph_decode b={batch} c={context}", t, t + 5 * US)
        tb.graph_launch(t + 1 * US, kernels)
        t = gpu + 50 * US
    return tb.write(path)


def test_rule_table_classes_become_points_without_nvtx(tmp_path):
    """A trace without op ranges (a serving engine's CUDA graphs): kernels named by class (here by a
    stand-in rule; the project's rule table does the same) give points for gemm (the five GEMMs' analytic
    figures summed) and attention; an elementwise class is time without a point."""
    from gpuprobe.analytic import decode_costs
    from gpuprobe.ncu.attribution import Attribution
    from gpuprobe.nsys.trace_roofline import trace_roofline
    from gpuprobe.specs.gpus import get_gpu
    from gpuprobe.specs.models import get_model

    classes = {"nvjet": "gemm", "flash": "attention", "rms": "norm", "rotary": "rope", "silu": "elementwise"}

    def by_class(stack, short):
        return Attribution(next((c for k, c in classes.items() if short.startswith(k)), f"other:{short}"), None)

    tb = TraceBuilder()
    t = 0
    for _ in range(3):
        gpu = t + 10 * US
        kernels = []
        for _, k, dur in LAYER * 24:
            kernels.append((k, gpu, dur * US))
            gpu += dur * US
        tb.range("decode b=16 c=2048", t, t + 5 * US)
        tb.graph_launch(t + 1 * US, kernels)
        t = gpu + 50 * US
    tr = load_trace(tb.write(tmp_path / "g.sqlite"), rule=by_class)
    spec = get_model("qwen2-0.5b")
    res = trace_roofline(tr.steps(), spec=spec, gpu=get_gpu("h100-sxm"), copy_bw=3.01e12)
    by = {p.op: p for p in res.points}
    assert set(by) == {"gemm", "attention", "norm", "rope"}
    costs = {c.op: c for c in decode_costs(spec, 16, 2048, "bf16")}
    gemm_bytes = sum(costs[o].dram_bytes for o in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"))
    assert by["gemm"].dram_bytes == pytest.approx(gemm_bytes)
    assert by["gemm"].time_s == pytest.approx(24 * (16 + 6 + 15 + 18) * 1e-6)
    assert by["attention"].time_s == pytest.approx(24 * 19e-6)
    assert res.extra["nsys"]["unattributed_s"] == pytest.approx({"elementwise": 24 * 3e-6})
