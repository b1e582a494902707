"""Build and check ncu ``--nvtx-include`` / ``--nvtx-exclude`` expressions.

ncu's syntax, as seen on a real H100 run (shared fixtures README):

* a push/pop range path ends with a slash: ``decode/layer0/attention/`` matched one kernel, while
  ``decode/layer0/attention`` is read as a start/end range named that and matches nothing;
* a path matches a run of nested ranges anywhere on the stack: ``attention/`` matched the attention
  kernels inside and outside ``decode``, ``decode/layer0/`` every kernel under that layer;
  ``*`` stands for one range in the middle (``decode/*/attention/``), but a leading ``*``
  (``*/attention/``) matched nothing;
* a start/end range is its bare name, no slash: ``step``;
* a range of a named domain is ``domain@range`` (``domain@a/b/`` for a push/pop path).
"""
from __future__ import annotations

import re
from typing import Sequence

from gpuprobe.errors import UserError


def nvtx_filter(ranges: str | Sequence[str], *, push_pop: bool = True, domain: str | None = None) -> str:
    """The ncu expression that matches ``ranges``.

    ``nvtx_filter(["decode", "layer0", "attention"])`` -> ``decode/layer0/attention/``;
    ``nvtx_filter("step", push_pop=False)`` -> ``step``; ``domain="app"`` prefixes ``app@``.
    A string is split on ``/`` (a trailing slash is optional here).
    """
    parts = [p for p in (ranges.split("/") if isinstance(ranges, str) else list(ranges))]
    parts = [p.strip() for p in parts]
    while parts and parts[-1] == "":
        parts.pop()
    if not parts or any(not p for p in parts):
        raise UserError(f"empty NVTX range name in {ranges!r}")
    if any("@" in p for p in parts):
        raise UserError(f"'@' inside an NVTX range name {ranges!r}: give the domain with domain=... (or dom@path/)")
    if push_pop:
        if parts[0] == "*":
            raise UserError(
                f"NVTX path {ranges!r} starts with '*', which ncu does not match; drop it (a path may start "
                f"at any depth: '{'/'.join(parts[1:])}/') or name the outer range ('decode/*/...')")
        expr = "/".join(parts) + "/"
    else:
        if len(parts) != 1:
            raise UserError(f"a start/end NVTX range is one name, not a path: {ranges!r}")
        expr = parts[0]
    if domain:
        expr = f"{domain}@{expr}"
    return expr


def check_expression(expr: str) -> str:
    """Validate a user's ``--nvtx-include`` text; returns it unchanged or raises a UserError with the fix.

    A path with inner slashes but no trailing slash is almost always a push/pop path missing its
    slash (ncu would read it as one start/end range name and match nothing).
    """
    text = expr.strip()
    if not text:
        raise UserError("empty --nvtx-include expression")
    body = text.split("@", 1)[1] if "@" in text else text
    if not body:
        raise UserError(f"NVTX expression '{expr}' names a domain but no range")
    if "/" in body.rstrip("/") and not body.endswith("/"):
        raise UserError(
            f"NVTX expression '{expr}' looks like a push/pop path without its trailing slash; ncu needs "
            f"'{text}/' (a start/end range is a bare name without slashes)")
    if body.startswith("*/"):
        raise UserError(
            f"NVTX expression '{expr}' starts with '*/', which ncu does not match; use '{body[2:]}' (matches at "
            "any depth) or name the outer range, e.g. 'decode/*/attention/'")
    return text


def stack_matches(expr: str, nvtx_stack: Sequence[str], nvtx_ranges: Sequence[str] = ()) -> bool:
    """Whether a kernel with this push/pop stack and open start/end ranges matches ``expr``, as ncu reads it.

    Used to explain a filter that matched nothing; mirrors the rules in the module docstring (as far as
    they were observed; ncu itself is the authority).
    """
    text = check_expression(expr)
    domain = None
    if "@" in text:
        domain, text = text.split("@", 1)

    def strip(names: Sequence[str]) -> list[str]:
        out = []
        for n in names:
            d, _, r = n.rpartition("@")
            if (d or None) == domain:
                out.append(r)
        return out

    if not text.endswith("/"):
        return text in strip(nvtx_ranges)
    # a contiguous run of the stack, anywhere in it; '*' stands for one or more ranges
    want = text.rstrip("/").split("/")
    pat = "/".join(r"[^/]+(?:/[^/]+)*" if w == "*" else re.escape(w) for w in want)
    return re.search(rf"(?:^|/){pat}(?:/|$)", "/".join(strip(nvtx_stack))) is not None
