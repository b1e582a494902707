"""Lists of integers as users write them (``1,2,4``; ``1-512`` for powers of two): one parser for the
command line and for the functions that take the same text (e.g. :func:`gpuprobe.run.advise.measure_curve`)."""
from __future__ import annotations

from gpuprobe.errors import UserError

#: Upper limits of integer options: far above any real decode batch or context, low enough that the
#: arithmetic downstream stays exact and fast.
LIMITS = {"batch": 1 << 16, "context": 1 << 22}


def show_int(v: int) -> str:
    """An integer for a message: itself, or its number of digits when it is absurdly long."""
    text = str(v)
    return text if len(text) <= 20 else f"a {len(text)}-digit number"


def parse_int_list(text: str, what: str = "batch") -> list[int]:
    """'1,2,4' or '1-8' (powers of two) -> sorted unique positive ints; bad input -> UserError."""
    text = str(text).strip()
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise ValueError
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo <= 0 or hi < lo:
                    raise ValueError
                b = lo
                while b <= hi:
                    out.add(b)
                    b *= 2
            else:
                out.add(int(part))
    except ValueError:
        raise UserError(
            f"malformed {what} list '{text}'; give positive integers separated by commas, e.g. 1,2,4,8 "
            "(or a range of powers of two, e.g. 1-512)."
        ) from None
    if not out or min(out) <= 0:
        raise UserError(f"{what} values must be positive integers, got '{text}'.")
    limit = LIMITS.get(what)
    if limit is not None and max(out) > limit:
        raise UserError(f"{what} {show_int(max(out))} is above the limit of {limit:,}; give smaller values.")
    return sorted(out)


def parse_int_sequence(text: str, what: str = "batch") -> list[int]:
    """'512,128,128' -> [512, 128, 128]: order and repeats kept, each value checked as by :func:`parse_int_list`."""
    parts = [p.strip() for p in str(text).split(",")]
    for p in parts:
        if not p.isdigit():
            parse_int_list(p or str(text), what)  # raises the one-line error for this value
            raise UserError(f"give single {what} values separated by commas here (no ranges), got '{text}'.")
        parse_int_list(p, what)
    return [int(p) for p in parts]
