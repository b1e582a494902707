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
    "%": ("%", 1.0), "W": ("W", 1.0), "C": ("C", 1.0), "J": ("J", 1.0), "V": ("V", 1.0),
}

#: Placeholders ncu writes where a value is absent.
NA_TOKENS = frozenset({"", "n/a", "N/A", "no data", "nan", "NaN", "-", "(!) n/a"})

_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")


def _word(token: str) -> tuple[str, float]:
    """One unit word (e.g. ``Kbyte``, ``usecond``, ``Ghz``, ``ns``) -> (base word, factor)."""
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
    if not _NUMBER.match(s) or s in ("+", "-", "."):
        raise ValueError(f"not a number: {text!r}")
    return float(s.replace(",", ""))


def is_number(text: object) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True
