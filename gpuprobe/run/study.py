"""``gpuprobe sweep STUDY.toml``: a measured roofline over models x GPUs x contexts x batches x modes in one run.

Each GPU is a Slurm partition or constraint (or this machine's GPU with the local executor). The study:

- one results folder per (model, GPU, context) (and mode, when more than one is asked), each an ordinary
  ``gpuprobe roofline`` sweep folder (``sweep.json``, ``results.jsonl``, and at the end ``roofline.json``,
  the figures and ``report.md``), so ``gpuprobe report``, ``--resume`` and ``--status`` work on any one;
- ``study.json``: the index (the plan, every folder with its model, GPU, placement, context, mode);
- every folder's points in flight together through one executor (:func:`gpuprobe.measure.sweep.run_sweeps`);
- one comparison across GPUs: ``comparison.csv`` (per op and batch: time and DRAM % of peak per GPU), the
  table on stdout and ``comparison.png``;
- with ``calibrate = true``, one calibration per GPU (``calibration-<gpu>.json``, fitted on all its folders).

The study file (TOML; every key but ``models`` and ``gpus`` optional)::

    models = ["qwen2-0.5b", "qwen2-1.5b"]      # registry names or folders holding config.json
    contexts = [1024]
    batches = [1, 8, 64, 256]                  # default: 1..512, cut at what fits each GPU
    modes = ["ncu"]                            # ncu | timing | nsys; ncu falls back to timing per point
    dtype = "bf16"
    attention = "triton"
    layers = "one"
    calibrate = true                           # also one calibration.json per GPU, from all its folders
    [[gpus]]
    name = "h100-sxm"                          # the registry's GPU (datasheet roofs, memory)
    partition = "h100"                         # and/or constraint = "..."
    [executor]                                 # the command line's options win
    kind = "slurm"                             # also max_parallel, retries, time, account, setup, gpus_per_job
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpuprobe.errors import GpuprobeError, UserError
from gpuprobe.jsonsafe import dumps
from gpuprobe.measure.executors import LocalExecutor, folder_status
from gpuprobe.measure.sweep import Sweep, latest_records, read_points, read_results, run_sweeps
from gpuprobe.parsing import parse_int_list
from gpuprobe.paths import output_dir
from gpuprobe.render.plots.study import plot_study_comparison
from gpuprobe.render.tables import Column, emit, fmt_int, fmt_num
from gpuprobe.run.measured import POINT_TIMEOUT_S, WORKERS, assemble_and_write
from gpuprobe.run.options import DEFAULT_BATCHES, LAYERS
from gpuprobe.run.plan import SWEEP_FILE, cached_roofs, check_resume, make_points, plan_batches, sweep_config
from gpuprobe.specs.gpus import get_gpu, normalize_dtype
from gpuprobe.specs.models import check_context, load_model_spec

STUDY_FILE = "study.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PNG = "comparison.png"
STUDY_MODES = ("ncu", "timing", "nsys")
STUDY_KEYS = ("models", "gpus", "contexts", "batches", "modes", "dtype", "attention", "layers", "calibrate",
              "executor")
GPU_KEYS = ("name", "partition", "constraint")
#: ``[executor]`` keys of a study file -> the command line's option (``args`` attribute).
EXECUTOR_KEYS = {"kind": "executor", "max_parallel": "max_parallel", "retries": "retries",
                 "partition": "slurm_partition", "gpus_per_job": "slurm_gpus_per_job",
                 "constraint": "slurm_constraint", "time": "slurm_time", "account": "slurm_account",
                 "setup": "slurm_setup"}


@dataclass(frozen=True)
class StudyGpu:
    """One GPU of a study: the registry's name and where its nodes are (partition and/or constraint)."""

    name: str
    partition: str | None = None
    constraint: str | None = None

    @property
    def placement(self) -> dict[str, str]:
        return {k: v for k, v in (("partition", self.partition), ("constraint", self.constraint)) if v}


@dataclass(frozen=True)
class StudyPlan:
    """What a study measures (from a study file, the command line, or a ``study.json`` being resumed)."""

    models: tuple[str, ...]
    gpus: tuple[StudyGpu, ...]
    contexts: tuple[int, ...] = (1024,)
    batches: tuple[int, ...] | None = None
    modes: tuple[str, ...] = ("ncu",)
    dtype: str = "bf16"
    attention: str | None = None
    layers: str = "one"
    calibrate: bool = False
    executor: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = [asdict(g) for g in self.gpus]
        return d


# ---- reading and checking a plan -------------------------------------------------------------------
def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise UserError(f"reading '{path}' needs Python 3.11 or the tomli package (pip install tomli).") from None
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read the study file '{path}': {e.strerror or e}.") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"'{path}' is not valid TOML: {e}.") from None


def _unknown(keys, known, where: str) -> None:
    bad = sorted(set(keys) - set(known))
    if bad:
        raise UserError(f"{where}: unknown key{'s' if len(bad) > 1 else ''} {', '.join(bad)}; the keys are "
                        f"{', '.join(known)}.")


def _list(value: Any, what: str, where: str) -> list:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not items:
        raise UserError(f"{where}: '{what}' is empty; give at least one.")
    return items


def _ints(value: Any, what: str, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(parse_int_list(value, what))
    items = _list(value, what, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise UserError(f"{where}: '{what}' must be positive whole numbers, got {value!r}.")
    return tuple(items)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where}: 'calibrate' is true or false, got {value!r}.")
    return value


def parse_gpu(text: str) -> StudyGpu:
    """``NAME``, ``NAME:partition=P``, ``NAME:constraint=C`` or both (the command line's ``--gpu``)."""
    name, *rest = text.split(":")
    kw: dict[str, str] = {}
    for item in rest:
        k, sep, v = item.partition("=")
        if not sep or k not in ("partition", "constraint") or not v:
            raise UserError(f"--gpu '{text}': write NAME, NAME:partition=P or NAME:constraint=C (e.g. "
                            "h100-sxm:partition=gpu-h100).")
        kw[k] = v
    return StudyGpu(name.strip(), **kw)


def plan_from_dict(data: dict[str, Any], where: str) -> StudyPlan:
    """A plan from a study file's (or ``study.json``'s) contents; every value checked."""
    _unknown(data, STUDY_KEYS, where)
    gpus = []
    for g in _list(data.get("gpus"), "gpus", where):
        if isinstance(g, str):
            g = {"name": g}
        if not isinstance(g, dict) or "name" not in g:
            raise UserError(f"{where}: each of 'gpus' is a table with a name (and a partition or constraint), "
                            f"got {g!r}.")
        _unknown(g, GPU_KEYS, f"{where}: gpus")
        gpus.append(StudyGpu(str(g["name"]), g.get("partition"), g.get("constraint")))
    executor = data.get("executor") or {}
    if not isinstance(executor, dict):
        raise UserError(f"{where}: 'executor' is a table ([executor]), got {executor!r}.")
    _unknown(executor, list(EXECUTOR_KEYS), f"{where}: [executor]")
    modes = tuple(str(m) for m in _list(data.get("modes", ["ncu"]), "modes", where))
    return StudyPlan(models=tuple(str(m) for m in _list(data.get("models"), "models", where)), gpus=tuple(gpus),
                     contexts=_ints(data.get("contexts"), "contexts", where) or (1024,),
                     batches=_ints(data.get("batches"), "batches", where), modes=modes,
                     dtype=str(data.get("dtype", "bf16")), attention=data.get("attention"),
                     layers=str(data.get("layers", "one")), calibrate=_flag(data.get("calibrate", False), where),
                     executor=dict(executor))


def load_plan(path: str | Path | None, **overrides: Any) -> StudyPlan:
    """The plan of a study file, with the command line's lists (``overrides`` that are not None) on top."""
    data: dict[str, Any] = {}
    where = "the command line"
    if path is not None:
        p = Path(path)
        data = _load_toml(p)
        where = str(p)
    for k, v in overrides.items():
        if v is not None:
            data[k] = v
    return plan_from_dict(data, where)


@dataclass(frozen=True)
class Cell:
    """One results folder of a study: a model on a GPU at a context in a mode, and its points."""

    folder: str
    model: str
    model_name: str
    gpu: StudyGpu
    context: int
    mode: str
    batches: tuple[int, ...]
    note: str | None = None


def check_plan(plan: StudyPlan, *, local: bool) -> list[Cell]:
    """Every model, GPU, context, mode and dtype checked before anything runs; the folders of the study."""
    if not plan.models:
        raise UserError("a study needs at least one model (models = [...] in the study file, or --model).")
    if not plan.gpus:
        raise UserError("a study needs at least one GPU ([[gpus]] in the study file, or --gpu NAME:partition=P).")
    bad = [m for m in plan.modes if m not in STUDY_MODES]
    if bad:
        raise UserError(f"mode {', '.join(bad)}: a study measures in {', '.join(STUDY_MODES)} (ncu falls back to "
                        "timing on a node that refuses the GPU counters).")
    if plan.layers not in LAYERS:
        raise UserError(f"layers '{plan.layers}': give one of {', '.join(LAYERS)}.")
    dtype = normalize_dtype(plan.dtype)
    specs = {m: load_model_spec(m) for m in plan.models}
    names = [s.name for s in specs.values()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"models {', '.join(dup)} appear twice; give each model once.")
    gpus = {g.name: get_gpu(g.name) for g in plan.gpus}
    if len(gpus) != len(plan.gpus):
        raise UserError("a GPU appears twice in the study; give each GPU once.")
    if local and len(plan.gpus) > 1:
        raise UserError("the local executor runs every point on this machine's GPU, and the study names "
                        f"{len(plan.gpus)} GPUs; use --executor slurm, with a partition or constraint per GPU.")
    if not local and len(plan.gpus) > 1:
        unplaced = [g.name for g in plan.gpus if not g.placement]
        if unplaced:
            raise UserError(f"GPU {', '.join(unplaced)} has no partition or constraint, so its jobs could land on "
                            "any GPU; give each GPU a partition or a constraint.")
    cells = []
    for model, spec in specs.items():
        for g in plan.gpus:
            gpu = gpus[g.name]
            for context in plan.contexts:
                why = check_context(spec, context)
                if why:
                    raise UserError(f"{spec.name}: {why}")
                batches, note = plan_batches(plan.batches or DEFAULT_BATCHES, spec, gpu, context, dtype,
                                             explicit=plan.batches is not None)
                for mode in plan.modes:
                    folder = f"{spec.name}__{gpu.name}__c{context}" + (f"__{mode}" if len(plan.modes) > 1 else "")
                    cells.append(Cell(folder, model, spec.name, g, context, mode, tuple(batches), note))
    return cells


# ---- running a study -------------------------------------------------------------------------------
def _cell_config(plan: StudyPlan, cell: Cell) -> dict[str, Any]:
    layers = "all" if cell.mode == "nsys" else plan.layers
    return sweep_config(cell.model, context=cell.context, dtype=normalize_dtype(plan.dtype),
                        attention=plan.attention, mode=cell.mode, layers=layers, batches=list(cell.batches))


def write_index(out: Path, plan: StudyPlan, cells: list[Cell], executor_text: str) -> Path:
    path = out / STUDY_FILE
    index = {"schema_version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "plan": plan.to_dict(),
             "executor": executor_text,
             "folders": [{"folder": c.folder, "model": c.model, "model_name": c.model_name, "gpu": c.gpu.name,
                          "placement": c.gpu.placement, "context": c.context, "mode": c.mode,
                          "batches": list(c.batches)} for c in cells]}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(index, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_index(out: str | Path) -> dict[str, Any]:
    path = Path(out) / STUDY_FILE
    try:
        return json.loads(path.read_text())
    except OSError:
        raise UserError(f"'{out}' holds no study ({STUDY_FILE} missing); pass the --out folder of a "
                        "`gpuprobe sweep` run.") from None
    except ValueError:
        raise UserError(f"'{path}' is not valid JSON; start the study again with a new --out.") from None


def resume_plan(out: str | Path) -> StudyPlan:
    """The plan stored in a study folder's ``study.json`` (what ``--resume DIR`` continues)."""
    return plan_from_dict(read_index(out)["plan"], str(Path(out) / STUDY_FILE))


def run_study(plan: StudyPlan, *, executor, out: str | None = None, resume: str | None = None,
              fmt: str | None = None, progress: bool = True) -> int:
    """Plan, run every folder's points through ``executor``, then write each folder's outputs and the
    comparison; returns the exit status (0; 1 when no point finished; 130 after Ctrl-C, with what finished)."""

    t0 = time.perf_counter()
    cells = check_plan(plan, local=isinstance(executor, LocalExecutor))
    root = Path(resume) if resume else output_dir(out, "study")
    if resume:
        old = resume_plan(root)
        if old.to_dict() | {"executor": {}} != plan.to_dict() | {"executor": {}}:
            raise UserError(f"--resume {root}: the study there has another plan; resume it without a study file "
                            "and list options, or start a new --out.")
    sweeps = []
    for cell in cells:
        folder = root / cell.folder
        config = _cell_config(plan, cell)
        if resume and (folder / SWEEP_FILE).exists():
            check_resume(folder, config)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_FILE).write_text(json.dumps(config, indent=2) + "\n")
        sweeps.append(_cell_sweep(plan, cell, folder, config))
    index = write_index(root, plan, cells, executor.describe())
    where = ", ".join(f"{g.name} on " + " and ".join(f"{k} {v}" for k, v in g.placement.items()) if g.placement
                      else g.name for g in plan.gpus)
    print(f"gpuprobe sweep: {len(cells)} folder(s), {sum(len(s.points) for s in sweeps)} points ({where}), "
          f"{executor.describe()}; writing to {root}", file=sys.stderr, flush=True)
    for cell in cells:
        if cell.note:
            print(f"{cell.folder}: {cell.note}", file=sys.stderr, flush=True)
    interrupted = False
    try:
        run_sweeps(sweeps, resume=bool(resume), executor=executor, progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: every finished point is kept; continue with: gpuprobe sweep --resume {root}",
              file=sys.stderr, flush=True)
    results = []
    for cell, sweep in zip(cells, sweeps):
        result = _roofline_outputs(plan, cell, sweep, interrupted)
        if result is not None:
            results.append((cell, result))
    if not results:
        print("gpuprobe sweep: no point finished in any folder", file=sys.stderr)
        return 130 if interrupted else 1
    _comparison(root, results, fmt)
    if plan.calibrate:
        write_calibrations(root, results, normalize_dtype(plan.dtype))
    print(f"wrote {index}\nstudy wall time: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return 130 if interrupted else 0


def _cell_sweep(plan: StudyPlan, cell: Cell, folder: Path, config: dict[str, Any]) -> Sweep:
    points = make_points(cell.model, cell.batches, context=cell.context, dtype=config["dtype"],
                         attention=plan.attention, mode=cell.mode, layers=config["layers"], out_dir=folder)
    return Sweep(points=points, worker=WORKERS[cell.mode], out=folder, timeout_s=POINT_TIMEOUT_S[cell.mode],
                 label=lambda p: f"batch {p['batch']}", placement=cell.gpu.placement,
                 name=f"{cell.model_name} on {cell.gpu.name}, context {cell.context}"
                      + (f", {cell.mode}" if len(plan.modes) > 1 else ""))


def _roofline_outputs(plan: StudyPlan, cell: Cell, sweep: Sweep, interrupted: bool):
    """One folder's records -> roofline.json, the figures and report.md, as ``gpuprobe roofline`` writes
    them (:func:`gpuprobe.run.measured.assemble_and_write`); None when no point of it finished."""
    records = latest_records(read_results(sweep.out))
    wanted = {p["batch"] for p in sweep.points}
    records = [r for r in records if r["point"].get("batch") in wanted]
    if not any(r["status"] == "ok" for r in records):
        print(f"{cell.folder}: no point finished", file=sys.stderr, flush=True)
        return None
    spec, gpu = load_model_spec(cell.model), get_gpu(cell.gpu.name)
    dtype = normalize_dtype(plan.dtype)
    try:
        result, files = assemble_and_write(
            records, sweep.out, spec=spec, gpu=gpu, dtype=dtype, config=_cell_config(plan, cell), copy_bw=None,
            copy_source="not measured: the study's driver does not run on its GPUs (run `gpuprobe ceilings` on a "
                        "node to cache one)", extra_roofs=cached_roofs(gpu, dtype),
            sweep_extra={"interrupted": interrupted})
    except GpuprobeError as e:
        print(f"{cell.folder}: cannot assemble its roofline: {e}", file=sys.stderr, flush=True)
        return None
    print(f"{cell.folder}: wrote {', '.join(sorted(p.name for p in files.values()))}", file=sys.stderr, flush=True)
    return result


def comparison_rows(results) -> list[dict[str, Any]]:
    """One row per (model, context, mode, GPU, batch, op): time (µs) and DRAM % of peak, the peak named
    (the measured copy bandwidth when known, else ncu's own peak, else the datasheet)."""
    rows = []
    for cell, result in results:
        gpu = get_gpu(cell.gpu.name)
        for p in result.points:
            if p.time_s is None:
                continue
            if p.dram_pct_of_measured is not None:
                pct, peak = p.dram_pct_of_measured, "measured"
            elif p.dram_pct_of_ncu_peak is not None:
                pct, peak = p.dram_pct_of_ncu_peak, "ncu_peak"
            else:
                pct, peak = 100.0 * p.dram_bytes / p.time_s / gpu.dram_bytes_per_s, "datasheet"
            rows.append({"model": cell.model_name, "context": cell.context, "mode": result.mode, "gpu": cell.gpu.name,
                         "batch": p.batch, "op": p.op, "time_us": p.time_s * 1e6, "dram_pct_of_peak": pct,
                         "dram_peak": peak})
    return rows


def _comparison(root: Path, results, fmt: str | None) -> None:
    import pandas as pd

    frame = pd.DataFrame(comparison_rows(results))
    if frame.empty:
        print("gpuprobe sweep: no op was timed; no comparison", file=sys.stderr)
        return
    frame.to_csv(root / COMPARISON_CSV, index=False)
    gpus = list(dict.fromkeys(frame["gpu"]))
    keys = ["model", "context", "mode", "batch", "op"]
    wide = frame.pivot_table(index=keys, columns="gpu", values=["time_us", "dram_pct_of_peak"], aggfunc="first",
                             sort=False)
    rows = []
    for idx, vals in wide.iterrows():
        row = dict(zip(keys, idx))
        for g in gpus:
            row[f"time_us@{g}"] = vals.get(("time_us", g))
            row[f"dram_pct@{g}"] = vals.get(("dram_pct_of_peak", g))
        rows.append(row)
    columns = [Column("model", "model", numeric=False, name=True), Column("context", "context", "ctx", fmt=fmt_int),
               Column("mode", "mode", numeric=False), Column("batch", "batch", "B", fmt=fmt_int),
               Column("op", "op", numeric=False, name=True)]
    for g in gpus:
        columns.append(Column(f"time_us@{g}", f"{g} time (us)", f"{g} us", fmt=fmt_num,
                              field=f"time_us_{g}"))
    for g in gpus:
        columns.append(Column(f"dram_pct@{g}", f"{g} DRAM %", f"{g} DRAM%", fmt=fmt_num,
                              field=f"dram_pct_of_peak_{g}"))
    peaks = ", ".join(f"{g}: {', '.join(sorted(set(frame[frame['gpu'] == g]['dram_peak'])))}" for g in gpus)
    emit(columns, rows, fmt=fmt, title="per-op time and DRAM % of peak across GPUs",
         notes=[f"DRAM % of peak against: {peaks}", f"all rows: {root / COMPARISON_CSV}"])
    png = plot_study_comparison(frame, root / COMPARISON_PNG)
    print(f"wrote {root / COMPARISON_CSV}\nwrote {png}", file=sys.stderr, flush=True)


def write_calibrations(root: Path, results, dtype: str) -> list[Path]:
    """With ``calibrate = true``: one calibration per GPU (docs/contracts.md section 11), fitted on every
    folder measured on it (all its models and contexts), into ``calibration-<gpu>.json``; a GPU whose fit
    fails is said and skipped."""
    import pandas as pd

    from gpuprobe.calibration import calibration_from_frame
    from gpuprobe.calibration.sources import read_gpuprobe

    written = []
    by_gpu: dict[str, list] = {}
    for cell, result in results:
        by_gpu.setdefault(get_gpu(cell.gpu.name).name, []).append(result)
    for name, rs in by_gpu.items():
        path = root / f"calibration-{name}.json"
        try:
            frame = pd.concat([read_gpuprobe(r, (r.extra or {}).get("kernels")) for r in rs], ignore_index=True)
            modes = sorted({r.mode for r in rs})
            cal = calibration_from_frame(frame, gpu=get_gpu(name), dtype=dtype,
                                         kernel_source=f"gpuprobe {'+'.join(modes)}", source={"kind": "gpuprobe", "name": f"gpuprobe study {root.name} on {name} "
                                                 f"({', '.join(sorted({r.model for r in rs}))})",
                                                 "version": (rs[0].provenance or {}).get("gpuprobe_version"),
                                                 "license": None, "path": str(root), "mode": "+".join(modes)})
        except (GpuprobeError, ValueError, KeyError) as e:
            print(f"no calibration of {name}: {e}", file=sys.stderr, flush=True)
            continue
        path.write_text(dumps(cal.to_dict(), indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr, flush=True)
        written.append(path)
    return written


# ---- progress at any time --------------------------------------------------------------------------
def study_status(out: str | Path) -> list[dict[str, Any]]:
    """Progress of every folder of a study (or of one results folder) from its files and ``squeue``."""
    out = Path(out)
    if (out / STUDY_FILE).exists():
        index = read_index(out)
        rows = []
        for f in index["folders"]:
            folder = out / f["folder"]
            st = folder_status(folder, read_points(folder))
            rows.append({**st, "folder": f["folder"], "model": f["model_name"], "gpu": f["gpu"],
                         "context": f["context"], "mode": f["mode"]})
        return rows
    if (out / "results.jsonl").exists() or (out / SWEEP_FILE).exists():
        st = folder_status(out, read_points(out))
        cfg = {}
        try:
            cfg = json.loads((out / SWEEP_FILE).read_text())
        except (OSError, ValueError):
            pass
        return [{**st, "folder": str(out), "model": cfg.get("model"), "gpu": None, "context": cfg.get("context"),
                 "mode": cfg.get("mode")}]
    raise UserError(f"'{out}' holds no study and no sweep ({STUDY_FILE}, results.jsonl missing); pass the --out "
                    "folder of a `gpuprobe sweep` or `gpuprobe roofline` run.")


def print_status(out: str | Path, fmt: str | None = None) -> int:
    rows = study_status(out)
    for r in rows:
        r["eta_min"] = r["eta_s"] / 60 if r.get("eta_s") is not None else None
    columns = [Column("folder", "folder", numeric=False, name=True, cut="middle"),
               Column("points", "points", "pts", fmt=fmt_int), Column("done", "done", fmt=fmt_int),
               Column("failed", "failed", "fail", fmt=fmt_int), Column("queued", "queued", "queue", fmt=fmt_int),
               Column("running", "running", "run", fmt=fmt_int),
               Column("eta_min", "time left (min)", "left min", fmt=fmt_num)]
    notes = sorted({r["note"] for r in rows if r.get("note")})
    tot = {k: sum(r[k] for r in rows) for k in ("points", "done", "failed", "queued", "running")}
    emit(columns, rows, fmt=fmt, title=f"{out}: {tot['done']}/{tot['points']} done, {tot['failed']} failed, "
                                       f"{tot['queued']} queued, {tot['running']} running", notes=notes)
    return 0
