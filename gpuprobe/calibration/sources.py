"""Measured per-op times from every source a calibration is fitted to, as one measurement frame.

The frame has one row per measured call: ``op_class``, the class's shape columns
(:data:`gpuprobe.calibration.shapes.SHAPE_COLUMNS`), ``measured_s`` (seconds per call), ``shape_key`` (what a
held-out shape is) and ``op`` (the source's own op name). :func:`with_floors` adds ``floor_s``.

Sources:

* ``aiconfigurator``: NVIDIA's published per-op tables in the installed ``aiconfigurator-core`` package
  (Apache-2.0), ``systems/data/<system>/{gemm,attention}/<framework>/<version>/*.parquet``: ``latency`` in
  milliseconds per call of one layer's op, timed in CUDA graphs; GEMM rows ``y[m, n] = x[m, k] W[n, k]^T``
  (``gemm_dtype``); decode attention (``generation_attention_perf``) rows with per-GPU ``num_heads`` and
  ``num_key_value_heads`` (the package's model code divides both by the tensor-parallel size before it
  queries the table) and ``step``, the KV history, so a row's context is ``isl + step`` tokens. Read only
  the dense bf16/fp16 rows: ``kv_cache_dtype`` of the activation dtype, no sliding window.
* ``vidur``: Vidur's per-op profile CSV layout (``time_stats.<op>.median`` in ms; ``num_tokens``,
  ``n_head``, ``n_kv_head``, ``n_embd``, ``n_expanded_embd``, ``use_gated_mlp``,
  ``num_tensor_parallel_workers``; its attention profile: ``batch_size``, ``kv_cache_size``, ``n_q_head``,
  ``is_prefill``, ``time_stats.attn_decode.median``).
* ``measurements``: a CSV in ``gpuprobe predict``'s input layout plus ``measured_s``.
* ``gpuprobe``: a ``roofline --mode timing|ncu|nsys`` results folder or a ``roofline.json`` with a model.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpuprobe.analytic import decode_costs
from gpuprobe.calibration.shapes import (SHAPE_COLUMNS, check_op_class, clean_shape, flops_and_bytes, op_class_and_shape,
                                         roofs_of)
from gpuprobe.errors import UserError
from gpuprobe.measure.sweep import read_results
from gpuprobe.ops import is_known
from gpuprobe.roofline.assemble import assemble_result
from gpuprobe.roofline.schema import RooflineResult
from gpuprobe.specs.gpus import DTYPE_BYTES, GPUSpec, get_gpu, gpu_from_device_name, normalize_dtype
from gpuprobe.specs.models import get_model

#: gpuprobe registry name -> aiconfigurator-core system folder.
AICONFIGURATOR_SYSTEMS: dict[str, str] = {
    "a100-80gb": "a100_sxm", "h100-sxm": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm", "l40s": "l40s",
}
KERNEL_SOURCES = ("vllm", "sglang", "trtllm")
_TABLE_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
FRAME_COLUMNS = ("op", "op_class", "m", "n", "k", "batch", "context", "heads", "kv_heads", "head_dim", "bytes",
                 "measured_s", "shape_key")


def shape_key(op_class: str, row: dict[str, float]) -> str:
    """What a held-out shape is: a GEMM's weight shape, an attention's head configuration, an elementwise size."""
    if op_class == "gemm":
        return f"gemm {row['n']:g}x{row['k']:g}"
    if op_class == "decode_attention":
        return f"attn {row['heads']:g}/{row['kv_heads']:g}/{row['head_dim']:g}"
    return f"elementwise {row['bytes']:g}"


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in FRAME_COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[list(FRAME_COLUMNS) + [c for c in df.columns if c not in FRAME_COLUMNS]]


def with_floors(frame: pd.DataFrame, gpu: GPUSpec, dtype: str) -> pd.DataFrame:
    """``frame`` with ``floor_s``: each row's floor on ``gpu``'s datasheet roofs."""
    out = frame.copy()
    floors = np.empty(len(out))
    bw, peak = roofs_of(gpu, dtype)
    for cls in out["op_class"].unique():
        mask = (out["op_class"] == cls).to_numpy()
        sub = out.loc[mask]
        cols = {c: sub[c].to_numpy(float) for c in SHAPE_COLUMNS[cls]}
        flops, nbytes = flops_and_bytes(cls, cols, dtype)
        floors[mask] = np.maximum(np.asarray(flops, float) / peak, np.asarray(nbytes, float) / bw)
    out["floor_s"] = floors
    return out


# ---- aiconfigurator-core ------------------------------------------------------------------------------
def aiconfigurator_root() -> Path:
    try:
        import aiconfigurator_core
    except ImportError:
        raise UserError("--from aiconfigurator needs the published tables of aiconfigurator-core; install them "
                        "with: pip install 'gpuprobe[calibration]'") from None
    return Path(aiconfigurator_core.__file__).resolve().parent / "systems" / "data"


def aiconfigurator_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("aiconfigurator-core")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return None


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.\-a-z]+", v) if p != "") + (v,)


def _newest_table(system: Path, kind: str, framework: str, filename: str) -> Path | None:
    base = system / kind / framework
    found = [d / filename for d in base.glob("*") if (d / filename).exists()] if base.is_dir() else []
    return max(found, key=lambda p: _version_key(p.parent.name)) if found else None


def _need(df: pd.DataFrame, cols: tuple[str, ...], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise UserError(f"{path}: table has no column(s) {', '.join(missing)}; not an aiconfigurator-core "
                        "per-op table this reader knows.")


def read_aiconfigurator(gpu: GPUSpec, dtype: str, framework: str = "vllm",
                        root: Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The GEMM and decode-attention rows of ``gpu``'s ``framework`` tables, and their provenance. fp16 with
    no fp16 rows is served by the bf16 rows (same tensor rate on these GPUs), said so in ``note``."""
    if framework not in KERNEL_SOURCES:
        raise UserError(f"unknown kernel source '{framework}'; use one of {', '.join(KERNEL_SOURCES)}.")
    system_name = AICONFIGURATOR_SYSTEMS.get(gpu.name)
    if system_name is None:
        raise UserError(f"aiconfigurator-core publishes no tables gpuprobe reads for {gpu.name}; GPUs with tables: "
                        f"{', '.join(AICONFIGURATOR_SYSTEMS)}.")
    system = (root or aiconfigurator_root()) / system_name
    dtype = normalize_dtype(dtype)
    gemm_path = _newest_table(system, "gemm", framework, "gemm_perf.parquet")
    attn_path = _newest_table(system, "attention", framework, "generation_attention_perf.parquet")
    if gemm_path is None and attn_path is None:
        raise UserError(f"no {framework} tables for {gpu.name} under {system}.")
    rows: list[pd.DataFrame] = []
    served = dtype
    versions: dict[str, str] = {}
    if gemm_path is not None:
        g = pd.read_parquet(gemm_path)
        _need(g, ("gemm_dtype", "m", "n", "k", "latency"), gemm_path)
        _check_device(g, gpu, gemm_path)
        sel = g[g["gemm_dtype"] == _TABLE_DTYPE[dtype]]
        if sel.empty and dtype == "fp16":
            sel, served = g[g["gemm_dtype"] == "bfloat16"], "bf16"
        sel = sel[sel["latency"] > 0]
        rows.append(pd.DataFrame({
            "op": "gemm", "op_class": "gemm", "m": sel["m"].astype(float), "n": sel["n"].astype(float),
            "k": sel["k"].astype(float), "measured_s": sel["latency"].astype(float) * 1e-3}))
        versions["gemm"] = gemm_path.parent.name
    if attn_path is not None:
        a = pd.read_parquet(attn_path)
        _need(a, ("batch_size", "num_heads", "num_key_value_heads", "head_dim", "step", "latency"), attn_path)
        _check_device(a, gpu, attn_path)
        want = _TABLE_DTYPE[served if served != dtype else dtype]
        keep = pd.Series(True, index=a.index)
        for col, val in (("attn_dtype", want), ("kv_cache_dtype", want), ("window_size", 0), ("beam_width", 1)):
            if col in a:
                keep &= a[col] == val
        if not keep.any() and dtype == "fp16":
            served, keep = "bf16", pd.Series(True, index=a.index)
            for col, val in (("attn_dtype", "bfloat16"), ("kv_cache_dtype", "bfloat16"), ("window_size", 0),
                             ("beam_width", 1)):
                if col in a:
                    keep &= a[col] == val
        sel = a[keep & (a["latency"] > 0)]
        isl = sel["isl"].astype(float) if "isl" in sel else 1.0
        rows.append(pd.DataFrame({
            "op": "generation_attention", "op_class": "decode_attention", "batch": sel["batch_size"].astype(float),
            "context": sel["step"].astype(float) + isl, "heads": sel["num_heads"].astype(float),
            "kv_heads": sel["num_key_value_heads"].astype(float), "head_dim": sel["head_dim"].astype(float),
            "measured_s": sel["latency"].astype(float) * 1e-3}))
        versions["attention"] = attn_path.parent.name
    frame = pd.concat(rows, ignore_index=True)
    frame = _frame(frame.to_dict("records"))
    frame["shape_key"] = [shape_key(c, r) for c, r in zip(frame["op_class"], frame.to_dict("records"))]
    fw_version = versions.get("gemm") or versions.get("attention")
    source = {"kind": "aiconfigurator", "name": "aiconfigurator-core", "version": aiconfigurator_version(),
              "license": "Apache-2.0", "rows": int(len(frame)), "framework": framework,
              "framework_version": fw_version, "table_versions": versions, "system": system_name,
              "tables": [str(p.relative_to(system.parent)) for p in (gemm_path, attn_path) if p is not None],
              "attribution": "NVIDIA aiconfigurator-core published per-op latency tables (Apache-2.0), read from the "
                             "installed package; only fitted parameters are stored here"}
    note = (f"{dtype} served by the {served} rows: the {framework} tables have no {dtype} rows and these GPUs run "
            f"both at the same tensor rate") if served != dtype else None
    if note:
        source["served_dtype"] = served
    return frame, {"source": source, "note": note}


def _check_device(df: pd.DataFrame, gpu: GPUSpec, path: Path) -> None:
    if "device" not in df or df.empty:
        return
    name = str(df["device"].iloc[0])
    found = gpu_from_device_name(name)
    if found is not None and found.name != gpu.name:
        raise UserError(f"{path}: the table was measured on '{name}' ({found.name}), not {gpu.name}.")


# ---- Vidur's profile CSV ------------------------------------------------------------------------------
VIDUR_MLP_COLUMNS = ("num_tokens", "n_head", "n_kv_head", "n_embd", "n_expanded_embd")
VIDUR_ATTN_COLUMNS = ("batch_size", "kv_cache_size", "n_q_head", "n_kv_head", "n_embd", "is_prefill")


def is_vidur(df: pd.DataFrame) -> bool:
    """A Vidur profile: ``time_stats.<op>.median`` columns and its config columns."""
    stats = any(c.startswith("time_stats.") and c.endswith(".median") for c in df.columns)
    return stats and (set(VIDUR_MLP_COLUMNS) <= set(df.columns) or set(VIDUR_ATTN_COLUMNS) <= set(df.columns))


def _truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "yes")


def vidur_ops(row: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    """The per-op calls of one Vidur profile row: ``op`` (Vidur's name), class, shape, ``measured_s``."""
    s = DTYPE_BYTES[normalize_dtype(dtype)]
    tp = float(row.get("num_tensor_parallel_workers") or 1)
    out: list[dict[str, Any]] = []

    def add(op: str, op_class: str, shape: dict[str, float]) -> None:
        ms = row.get(f"time_stats.{op}.median")
        try:
            t = float(ms) * 1e-3
        except (TypeError, ValueError):
            return
        if t > 0 and np.isfinite(t):
            out.append({"op": op, "op_class": op_class, **shape, "measured_s": t})

    if "kv_cache_size" in row and "n_q_head" in row:  # the attention profile
        if _truthy(row.get("is_prefill")):
            return out
        hq, hkv, h = float(row["n_q_head"]), float(row["n_kv_head"]), float(row["n_embd"])
        add("attn_decode", "decode_attention", {"batch": float(row["batch_size"]), "context": float(row["kv_cache_size"]),
                                                "heads": hq / tp, "kv_heads": hkv / tp, "head_dim": h / hq})
        return out
    t_, hq, hkv = float(row["num_tokens"]), float(row["n_head"]), float(row["n_kv_head"])
    h, inter = float(row["n_embd"]), float(row["n_expanded_embd"])
    d = h / hq
    gated = _truthy(row.get("use_gated_mlp"))
    add("attn_pre_proj", "gemm", {"m": t_, "n": (hq + 2 * hkv) * d / tp, "k": h})
    add("attn_post_proj", "gemm", {"m": t_, "n": h, "k": hq * d / tp})
    add("mlp_up_proj", "gemm", {"m": t_, "n": inter * (2 if gated else 1) / tp, "k": h})
    add("mlp_down_proj", "gemm", {"m": t_, "n": h, "k": inter / tp})
    act = t_ * inter / tp * s
    add("mlp_act", "elementwise", {"bytes": (3 if gated else 2) * act})
    norm = (2 * t_ * h + h) * s
    for op in ("input_layernorm", "post_attention_layernorm"):
        add(op, "elementwise", {"bytes": norm})
    add("add", "elementwise", {"bytes": 3 * t_ * h * s})
    rotated = t_ * (hq + hkv) / tp * d
    add("attn_rope", "elementwise", {"bytes": 2 * rotated * s + 2 * t_ * d * s})
    add("emb", "elementwise", {"bytes": 2 * t_ * h * s + 8 * t_})
    return out


def read_vidur(df: pd.DataFrame, dtype: str = "fp16") -> pd.DataFrame:
    """A Vidur profile frame -> the measurement frame (one row per op of each profile row)."""
    rows = [r for rec in df.to_dict("records") for r in vidur_ops(rec, dtype)]
    if not rows:
        raise UserError("the Vidur profile has no decode rows with time_stats.<op>.median of a known op.")
    frame = _frame(rows)
    frame["shape_key"] = [shape_key(c, r) for c, r in zip(frame["op_class"], frame.to_dict("records"))]
    return frame


# ---- predict's layout plus measured_s ---------------------------------------------------------------------
def read_measurements(df: pd.DataFrame, where: str = "") -> pd.DataFrame:
    """A CSV in ``gpuprobe predict``'s input layout plus ``measured_s`` -> the measurement frame."""
    for col in ("op", "measured_s"):
        if col not in df.columns:
            raise UserError(f"{where}no '{col}' column; a measurement table has op, the op's shape columns and "
                            "measured_s (seconds per call).")
    rows = []
    for i, rec in enumerate(df.to_dict("records"), start=2):
        op_class = check_op_class(str(rec["op"]).strip())
        shape = clean_shape(op_class, rec, where=f"{where}line {i}: ")
        t = pd.to_numeric(pd.Series([rec["measured_s"]]), errors="coerce").iloc[0]
        if not (np.isfinite(t) and t > 0):
            raise UserError(f"{where}line {i}: measured_s must be a positive number of seconds, got {rec['measured_s']!r}.")
        rows.append({"op": op_class, "op_class": op_class, **shape, "measured_s": float(t)})
    frame = _frame(rows)
    frame["shape_key"] = [shape_key(c, r) for c, r in zip(frame["op_class"], frame.to_dict("records"))]
    return frame


def read_csv(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    try:
        return pd.read_csv(p)
    except FileNotFoundError:
        raise UserError(f"no such file: {p}") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"cannot read CSV '{p}': {str(e).splitlines()[0]}") from None


# ---- gpuprobe's own measurements ----------------------------------------------------------------------------
def load_result(path: str | Path, gpu: GPUSpec | None = None):
    """A measured :class:`~gpuprobe.roofline.schema.RooflineResult` from a results folder (its roofline.json, else
    its results.jsonl) or a roofline.json."""

    p = Path(path)
    if p.is_dir():
        if (p / "roofline.json").exists():
            return RooflineResult.from_json(p / "roofline.json")
        if (p / "results.jsonl").exists():
            return _assemble_jsonl(p, gpu)
        raise UserError(f"{p}: no roofline.json or results.jsonl in this folder; give a `roofline --mode "
                        "timing|ncu|nsys` results folder.")
    if not p.exists():
        raise UserError(f"no such file or folder: {p}")
    return RooflineResult.from_json(p)


def _assemble_jsonl(folder: Path, gpu: GPUSpec | None):
    records = [r for r in read_results(folder) if r.get("status") == "ok" and r.get("result")]
    if not records:
        raise UserError(f"{folder}/results.jsonl has no finished point.")
    res = records[0]["result"]
    device = (res.get("versions") or {}).get("device_name")
    measured_on = gpu_from_device_name(device) if device else None
    if gpu is not None and measured_on is not None and measured_on.name != gpu.name:
        raise UserError(f"{folder} was measured on {measured_on.name} ({device}), not {gpu.name}.")
    if gpu is None:
        gpu = measured_on
        if gpu is None:
            raise UserError(f"{folder}: the results do not name a known GPU ({device!r}); give --gpu.")
    return assemble_result(records, spec=get_model(res["model"]), gpu=gpu, dtype=res.get("dtype") or "bf16")


def read_gpuprobe(result, kernels: str | None = None) -> pd.DataFrame:
    """Per-call rows of a measured roofline: each op point's time over the calls of the op in one step."""

    if result.mode == "analytic":
        raise UserError("an analytic roofline holds no measured times; calibrate from a `roofline --mode "
                        "timing|ncu|nsys` result.")
    if not result.model:
        raise UserError("this roofline.json names no model (a report made without --model); per-op shapes need "
                        "one: rerun `gpuprobe report ... --model M`.")
    spec = get_model(result.model)
    dtype = result.dtype or "bf16"
    rows = []
    step_batch = result.batch if isinstance(result.batch, int) else None  # a report of one batch
    for p in result.points:
        batch = p.batch if p.batch is not None else step_batch
        if p.time_s is None or batch is None or not is_known(p.op) or p.time_s <= 0:
            continue
        context = result.context or p.extra.get("context")
        if not context:
            continue
        found = op_class_and_shape(spec, p.op, int(batch), int(context), dtype, kernels or "fused")
        if found is None:
            found = op_class_and_shape(spec, p.op, int(batch), int(context), dtype, "unfused")
        count = _count(spec, p.op, int(batch), int(context), dtype)
        if found is None or not count:
            continue
        op_class, shape = found
        rows.append({"op": p.op, "op_class": op_class, **shape, "measured_s": p.time_s / count,
                     "batch_of_step": int(batch)})
    if not rows:
        raise UserError("the roofline has no measured per-op points of known ops with a batch and context to "
                        "calibrate from (a report needs --model, --batch and --context).")
    frame = _frame(rows)
    frame["shape_key"] = [shape_key(c, r) for c, r in zip(frame["op_class"], frame.to_dict("records"))]
    return frame


def _count(spec, op: str, batch: int, context: int, dtype: str) -> int | None:
    for mode in ("fused", "unfused"):
        c = next((c for c in decode_costs(spec, batch, context, dtype, mode) if c.op == op), None)
        if c is not None:
            return c.count
    return None


def read_source(src: str, *, gpu: GPUSpec | None, dtype: str | None, kernel_source: str = "vllm"
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Any source -> (measurement frame, ``{gpu, dtype, kernel_source, source, note}``)."""
    if src == "aiconfigurator":
        if gpu is None:
            raise UserError("--from aiconfigurator needs --gpu (one of " + ", ".join(AICONFIGURATOR_SYSTEMS) + ").")
        d = normalize_dtype(dtype or "bf16")
        frame, meta = read_aiconfigurator(gpu, d, kernel_source)
        return frame, {"gpu": gpu, "dtype": d, "kernel_source": kernel_source, **meta}
    p = Path(src)
    if p.is_dir() or p.suffix == ".json":
        result = load_result(p, gpu)
        rgpu = get_gpu(result.gpu)
        if gpu is not None and gpu.name != rgpu.name:
            raise UserError(f"{p} was measured on {rgpu.name}, not {gpu.name}.")
        d = normalize_dtype(result.dtype or dtype or "bf16")
        frame = read_gpuprobe(result, (result.extra or {}).get("kernels"))
        source = {"kind": "gpuprobe", "name": f"gpuprobe {result.mode} measurement of {result.model}",
                  "version": (result.provenance or {}).get("gpuprobe_version"), "license": None,
                  "rows": int(len(frame)), "path": str(p), "mode": result.mode}
        return frame, {"gpu": rgpu, "dtype": d, "kernel_source": f"gpuprobe {result.mode}", "source": source,
                       "note": None}
    df = read_csv(p)
    if gpu is None:
        raise UserError(f"calibrating from {p.name} needs --gpu: the table does not say which GPU measured it.")
    if is_vidur(df):
        d = normalize_dtype(dtype or "fp16")
        frame = read_vidur(df, d)
        kind, ks = "vidur", "vidur profile"
    else:
        d = normalize_dtype(dtype or "bf16")
        frame = read_measurements(df, where=f"{p.name}: ")
        kind, ks = "measurements", "measured"
    source = {"kind": kind, "name": f"{kind} {p.name}", "version": None, "license": None, "rows": int(len(frame)),
              "path": str(p)}
    return frame, {"gpu": gpu, "dtype": d, "kernel_source": ks, "source": source, "note": None}
