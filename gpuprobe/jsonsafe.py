"""Missing values for strict JSON, in one place: NaN, inf and pandas' NA become ``None`` (``null``), numpy
scalars become Python numbers (docs/contracts.md section 2: missing values stay missing, never 0, never NaN)."""
from __future__ import annotations

import json
import math
from typing import Any


def finite(x: Any) -> float | None:
    """A finite float, or None (None, NaN, inf, pandas NA and text are missing values)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_value(x: Any) -> Any:
    """One scalar made JSON-safe: NaN/inf/NA/NaT -> None, numpy scalars -> Python; anything else as is."""
    if x is None:
        return None
    if hasattr(x, "item") and not isinstance(x, (list, dict, str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if type(x).__name__ in ("NAType", "NaTType"):
        return None
    return x


def scrub(obj: Any) -> Any:
    """``obj`` with every scalar inside dicts, lists and tuples made JSON-safe (:func:`json_value`)."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return json_value(obj)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for what JSON cannot hold: numpy scalars, sets, tuples, others as text."""
    if hasattr(o, "item"):
        return json_value(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON text of ``obj`` (no ``NaN`` or ``Infinity`` ever: missing values are ``null``)."""
    return json.dumps(scrub(obj), allow_nan=False, default=json_default, **kw)
