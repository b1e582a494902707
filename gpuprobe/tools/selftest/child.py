"""Runs one selftest check in its own process: ``python -m gpuprobe.tools.selftest.child REQUEST.json``.

The request names the check's function (module, qualified name, and the file to load it from when the
module is not importable here, as for a check defined in a test file), its evidence folder, whether
GPU checks are on, its budget and the run's options. The child calls the function and writes
``{"status", "reason", "figures", "seconds"}`` to the request's ``result`` path; a traceback goes to
stderr, which the runner keeps in the check's ``output.txt``. A crash or a kill leaves no result
file, and the runner records that instead.

SIGTERM (the runner stopping the check at a budget, or the kernel's parent-death signal when the runner
itself dies) raises :class:`Stopped` in the check: its ``finally`` blocks and context managers run (an
MPS daemon is stopped, a temporary folder removed) before the process ends; such a check has no verdict.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable
from gpuprobe.tools.selftest.registry import CheckContext, CheckFailed, Skip


def load_function(module: str, qualname: str, file: str | None = None) -> Callable[..., Any]:
    """The function ``module.qualname``, importing ``module`` or, failing that, loading ``file``."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not file or e.name != module.split(".")[0] and e.name != module:
            raise
        spec = importlib.util.spec_from_file_location(module, file)
        if spec is None or spec.loader is None:
            raise
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        spec.loader.exec_module(mod)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def jsonable(x: Any) -> Any:
    """Figures made safe for strict JSON: numpy scalars to numbers, NaN/inf to strings, others to str."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        try:
            return jsonable(x.item())
        except Exception:
            pass
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return str(x)


class Stopped(BaseException):
    """Raised in a check by SIGTERM: not an ``Exception``, so a check's ``except Exception`` does not swallow
    it, while its clean-up (``finally``, ``with``) still runs."""


def _stop(signum, frame) -> None:  # noqa: ARG001
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: the clean-up must not be cut short
    raise Stopped(f"stopped by {signal.Signals(signum).name}")


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = request.get("run_dir")
    ctx = CheckContext(out_dir=out_dir, gpu=bool(request["gpu"]), budget_s=float(request["budget_s"]),
                       options=dict(request.get("options") or {}), run_dir=Path(run_dir) if run_dir else None)
    t0 = time.perf_counter()
    figures: Any = {}
    reason = None
    try:
        func = load_function(request["module"], request["function"], request.get("file"))
        figures = func(ctx) or {}
        status = "passed"
    except Skip as e:
        status, reason = "skipped", str(e) or "skipped by the check"
    except CheckFailed as e:
        status, reason, figures = "failed", str(e) or "the check's claim did not hold", e.figures
    except Stopped as e:
        status, reason = "skipped", f"not finished: {e}"
    except BaseException as e:  # noqa: BLE001 - every failure of a check is recorded, never raised
        traceback.print_exc()
        status, reason = "failed", f"{type(e).__name__}: {e}".strip()
    if not isinstance(figures, dict):
        figures = {"value": figures}
    return {"status": status, "reason": reason, "figures": jsonable(figures),
            "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gpuprobe.tools.selftest.child REQUEST.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    request = json.loads(Path(argv[0]).read_text())
    result = run_request(request)
    path = Path(request["result"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, allow_nan=False))
    tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    raise SystemExit(main())
