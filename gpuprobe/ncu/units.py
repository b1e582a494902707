"""Units of Nsight Compute values: parse numbers as ncu prints them and convert any unit to base units.

ncu prints each column of a CSV page in its own display unit (``Kbyte``, ``Mbyte``, ``us``,
``Tbyte/s``, ``Ghz`` ...) and groups thousands with commas (``2,601,098,901.10``). The base units
used throughout gpuprobe are SI base units: bytes, seconds, hertz, counts (instructions, cycles,
FLOPs) and percent. ``Kbyte`` is 1000 bytes (ncu's prefixes are decimal).
"""
from __future__ import annotations

import math
import re

#: Decimal SI prefixes ncu puts in front of a unit.
_PREFIX = {"": 1.0, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}

#: Unit words ncu uses, mapped to (base unit, factor to it). ``ns``/``nsecond`` are both seen.
_BASE = {
    "byte": ("byte", 1.0), "bytes": ("byte", 1.0), "bit": ("byte", 0.125),
    "second": ("s", 1.0), "s": ("s", 1.0), "sec": ("s", 1.0),
    "hz": ("hz", 1.0), "Hz": ("hz", 1.0),
    "cycle": ("cycle", 1.0), "inst": ("inst", 1.0), "warp": ("warp", 1.0), "thread": ("thread", 1.0),
    "sector": ("sector", 1.0), "request": ("request", 1.0), "block": ("block", 1.0), "pass": ("pass", 1.0),
    "register": ("register", 1.0), "cluster": ("cluster", 1.0), "SM": ("SM", 1.0), "flop": ("flop", 1.0),
    "op": ("op", 1.0), "wavefront": ("wavefront", 1.0), "transaction": ("transaction", 1.0),
    "sectors": ("sector", 1.0), "requests": ("request", 1.0), "cycles": ("cycle", 1.0), "warps": ("warp", 1.0),
    "threads": ("thread", 1.0), "sample": ("sample", 1.0), "samples": ("sample", 1.0), "branch": ("branch", 1.0),
    "branches": ("branch", 1.0), "instructions": ("inst", 1.0), "instruction": ("inst", 1.0),
    "%": ("%", 1.0), "W": ("W", 1.0), "C": ("C", 1.0), "J": ("J", 1.0), "V": ("V", 1.0),
}

#: Placeholders ncu writes where a value is absent.
NA_TOKENS = frozenset({"", "n/a", "N/A", "no data", "nan", "NaN", "-", "(!) n/a"})

#: A number as ncu prints it (thousands separators allowed), the grammar of :func:`parse_number`.
NUMBER_PATTERN = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")


def _word(token: str) -> tuple[str, float]:
    """One unit word (e.g. ``Kbyte``, ``usecond``, ``Ghz``, ``ns``) -> (base word, factor); an unknown word
    keeps its name and factor 1 (:func:`is_known_unit` tells)."""
    token = token.strip()
    if token in _BASE:
        return _BASE[token]
    if token.lower() in ("hz",):
        return _BASE["hz"]
    if len(token) > 1 and token[0] in _PREFIX:
        rest = token[1:]
        if rest in _BASE:
            base, f = _BASE[rest]
            return base, f * _PREFIX[token[0]]
        if rest.lower() == "hz":
            return "hz", _PREFIX[token[0]]
    return token, 1.0


def unit_factor(unit: str) -> tuple[str, float]:
    """``unit`` (as ncu prints it, e.g. ``Tbyte/s``, ``Kbyte/cycle``, ``%/Kbyte``) -> (base unit, factor).

    ``value * factor`` is the value in the base unit. Unknown words keep their name and factor 1.
    """
    unit = (unit or "").strip()
    if not unit:
        return "", 1.0
    num, _, den = unit.partition("/")
    nb, nf = _word(num)
    if not den:
        return nb, nf
    db, df = _word(den)
    return f"{nb}/{db}", nf / df


def parse_number(text: object) -> float | None:
    """A value as ncu prints it (``1,980,000``, ``16896.000000``, ``no data``) -> float, None when absent.

    Raises ``ValueError`` on text that is neither a number nor a placeholder.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if not (isinstance(text, float) and math.isnan(text)) else None
    s = str(text).strip()
    if s in NA_TOKENS:
        return None
    if not NUMBER_PATTERN.match(s) or s in ("+", "-", "."):
        raise ValueError(f"not a number: {text!r}")
    return float(s.replace(",", ""))


def is_number(text: object) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def _known_word(token: str) -> bool:
    token = token.strip()
    if token in _BASE or token.lower() == "hz":
        return True
    return len(token) > 1 and token[0] in _PREFIX and (token[1:] in _BASE or token[1:].lower() == "hz")


def is_known_unit(unit: str) -> bool:
    """True for a unit made of words ncu uses (``Mbyte``, ``byte/s``, ``cycle/second``...); blank is known
    (a count)."""
    unit = (unit or "").strip()
    if not unit:
        return True
    num, _, den = unit.partition("/")
    return _known_word(num) and (not den or _known_word(den))


def expected_base(metric: str) -> str | None:
    """The base unit a metric gpuprobe computes with must have, judged by its name: a duration
    (``gpu__time_duration.sum``) ``s``; a byte count (``dram__bytes_read.sum``) ``byte``; a byte rate or a
    clock (``....bytes.sum.per_second``, ``sm__cycles_elapsed.avg.per_second``) a rate; a percent of peak
    ``%``. None when the name does not say (op counts may come without a unit)."""
    m = metric.lower()
    if m.startswith("derived__"):
        return None  # ncu's own derived values carry loose units in real reports (a rate labelled 'Tbyte')
    if "pct_of_peak" in m:
        return "%"
    if re.search(r"(bytes[a-z_]*|cycles_elapsed)\.(sum|avg|min|max)\.per_second$", m):
        return "/s"
    if re.search(r"time_duration\.(sum|avg|min|max)$", m) or m.endswith(": duration"):
        return "s"
    if re.search(r"bytes[a-z_]*\.(sum|avg|min|max)$", m):
        return "byte"
    return None


def _count_word(token: str) -> bool:
    """A plain count noun (``sectors``, ``branches``, ``sample``, ``1``): factor 1 is right for it."""
    t = token.strip()
    return t == "1" or (t.isalpha() and t.islower() and len(t) <= 24)


def metric_unit(metric: str, unit: str) -> tuple[str, float, str | None]:
    """(base unit, factor, problem) of a metric's unit: ``problem`` is None when the values can be put in
    base units, else why not (an unknown unit, a blank one where the metric has a dimension, a unit of the
    wrong kind). A metric with a problem must not be read as numbers."""
    base, factor = unit_factor(unit)
    u = (unit or "").strip()
    want = expected_base(metric)
    if not is_known_unit(u):
        num, _, den = u.partition("/")
        countable = _count_word(num) and (not den or _known_word(den) or _count_word(den))
        if want is not None or not countable:
            return base, factor, f"an unknown unit '{u[:20]}'"
        return base, factor, None  # a count of something ncu names in its own words
    if want is None:
        return base, factor, None
    if not u:
        return base, factor, f"no unit where a {'rate' if want == '/s' else want} unit belongs"
    if want == "/s":
        ok = base.endswith("/s") or base == "hz"
    elif want == "%":
        ok = base == "%"
    else:
        ok = base == want
    return base, factor, None if ok else f"the unit '{u[:20]}', not a {'rate' if want == '/s' else want} unit"
