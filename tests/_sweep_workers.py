"""The worker the sweep and executor tests run: child processes import it by its ``module:function`` name."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

WORKER = "_sweep_workers:work"


def work(batch: int, fail: bool = False, oom: bool = False, sleep: float = 0.0, record: str | None = None) -> dict:
    """Note the batch in ``record``, wait ``sleep`` seconds, then run out of memory, die, or return a result."""
    if record:
        with open(record, "a") as f:
            f.write(f"{batch}\n")
    time.sleep(sleep)
    if oom:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if fail:
        os._exit(3)
    return {"batch": batch, "tokens_per_s": 100.0 * batch, "pid": os.getpid()}


def put_worker_on_path(monkeypatch: Any) -> Path:
    """Make this module importable by child processes (PYTHONPATH) and in this one (sys.path); its folder."""
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(here))
    return here
