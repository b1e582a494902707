"""Name the op class of any engine's kernel from its name, with a rule table kept as data.

Used only where a report has no NVTX ranges: a kernel inside a known NVTX op range takes that op
(``gpuprobe.ncu.attribution``, op names as in ``gpuprobe.ops`` and docs/contracts.md); otherwise the
first rule whose regex matches the kernel's name gives its op class. The packaged table is
``gpuprobe/data/kernel_rules.csv``; its format, the op classes and how to add rules
(``gpuprobe report FILE --rules RULES``) are in docs/kernel-rules.md.

A rule is searched (``re.search``) in the name as given: a demangled name (``void flash::
flash_fwd_splitkv_kernel<...>(...)``) or a short one (``flash_fwd_splitkv_kernel``) both match.
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gpuprobe.errors import UserError

#: Op classes a rule may name. Where the class is one op of a decode step its name is that op's
#: (``gpuprobe.ops.OPS``); the others group kinds of kernels that several ops share.
OP_CLASSES: tuple[str, ...] = (
    "gemm", "attention", "norm", "rope", "kv_write", "act", "softmax", "sample", "embed",
    "elementwise", "reduce", "memcpy", "memset",
)

#: Columns of a rules file, in the packaged table's order.
COLUMNS: tuple[str, ...] = ("pattern", "op", "example", "engine")

_PACKAGED = "kernel_rules.csv"


@dataclass(frozen=True)
class KernelRule:
    """One row of a rules file: a regex, the op class it names, a kernel name it matches, its source."""

    pattern: str
    op: str
    example: str
    engine: str = ""

    @property
    def regex(self) -> re.Pattern[str]:
        """The compiled pattern (compiled once per distinct pattern)."""
        return _compile(self.pattern)

    def matches(self, name: str) -> bool:
        """True when the pattern is found anywhere in ``name``."""
        return self.regex.search(name) is not None


@functools.lru_cache(maxsize=None)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class RuleTable:
    """Rules in order of precedence: the first rule that matches a name gives its op class."""

    def __init__(self, rules: Iterable[KernelRule]):
        self.rules: tuple[KernelRule, ...] = tuple(rules)
        self._compiled = tuple((r.regex, r) for r in self.rules)
        self._seen: dict[str, KernelRule | None] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[KernelRule]:
        return iter(self.rules)

    def match(self, name: str) -> KernelRule | None:
        """The first rule whose pattern is found in ``name``; None for no match or no name."""
        if not isinstance(name, str) or not name:
            return None
        if name not in self._seen:
            self._seen[name] = next((rule for rx, rule in self._compiled if rx.search(name)), None)
        return self._seen[name]

    def classify(self, name: str) -> str | None:
        """Op class of the kernel called ``name`` (demangled or short), or None when no rule knows it."""
        rule = self.match(name)
        return rule.op if rule else None

    def with_user_rules(self, path: str | Path) -> "RuleTable":
        """A table where the rules of the user's file come first, then these."""
        return RuleTable(load_rules(path) + self.rules)


def _fail(source: str, row: int | None, what: str) -> UserError:
    where = f"{source}, row {row}" if row is not None else source
    return UserError(f"{where}: {what}")


def _check_row(source: str, row: int, pattern: str, op: str, example: str) -> None:
    if not pattern:
        raise _fail(source, row, "empty pattern; give a Python regex that the kernel name contains")
    try:
        rx = _compile(pattern)
    except re.error as e:
        raise _fail(source, row, f"pattern {pattern!r} is not a valid regex ({e}); fix it or quote it "
                    "(a pattern holding a comma must be in double quotes)") from None
    if rx.search("") is not None:
        raise _fail(source, row, f"pattern {pattern!r} matches every name (it matches empty text); "
                    "make it require part of a kernel name")
    if op not in OP_CLASSES:
        raise _fail(source, row, f"op {op!r} is not an op class; use one of {', '.join(OP_CLASSES)}")
    if not example:
        raise _fail(source, row, "empty example; give one kernel name the pattern matches")
    if not rx.search(example):
        raise _fail(source, row, f"pattern {pattern!r} does not match its example {example!r}; "
                    "fix the pattern or the example")


def _parse(source: str, text: str) -> tuple[KernelRule, ...]:
    """Rules of a CSV text; blank lines and lines starting with ``#`` are skipped."""
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rules: list[KernelRule] = []
    try:
        for cells in reader:
            row = reader.line_num
            if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                continue
            cells = [c.strip() for c in cells]
            if header is None:
                header = cells
                missing = [c for c in COLUMNS if c not in header]
                if missing:
                    raise _fail(source, row, f"header lacks column(s) {', '.join(missing)}; "
                                f"the first row must be {','.join(COLUMNS)}")
                continue
            if len(cells) > len(header):
                raise _fail(source, row, f"{len(cells)} cells for {len(header)} columns; "
                            "put a pattern or name holding a comma in double quotes")
            values = dict(zip(header, cells + [""] * (len(header) - len(cells))))
            rule = KernelRule(*(values[c] for c in COLUMNS))
            _check_row(source, row, rule.pattern, rule.op, rule.example)
            rules.append(rule)
    except csv.Error as e:
        raise _fail(source, reader.line_num, f"not a CSV row ({e}); check its quotes") from None
    if header is None:
        raise _fail(source, None, f"no rules: the file is empty; its first row must be {','.join(COLUMNS)}")
    return tuple(rules)


@functools.lru_cache(maxsize=1)
def _packaged_rules() -> tuple[KernelRule, ...]:
    text = resources.files("gpuprobe.data").joinpath(_PACKAGED).read_text(encoding="utf-8")
    return _parse(f"gpuprobe/data/{_PACKAGED}", text)


def load_rules(path: str | Path | None = None) -> tuple[KernelRule, ...]:
    """Rules of a CSV file with columns ``pattern,op,example,engine`` (None: the packaged table).

    Every row is checked: the pattern compiles, the op is one of :data:`OP_CLASSES`, the example is
    matched by the pattern. Anything wrong raises :class:`UserError`, one line naming the file and row.
    """
    if path is None:
        return _packaged_rules()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a spreadsheet's UTF-8 CSV starts with a BOM
    except FileNotFoundError:
        raise _fail(str(p), None, f"no such rules file; pass a CSV with columns {','.join(COLUMNS)}") from None
    except IsADirectoryError:
        raise _fail(str(p), None, "is a folder; pass a CSV rules file") from None
    except UnicodeDecodeError:
        raise _fail(str(p), None, "is not UTF-8 text; save the rules file as UTF-8 CSV") from None
    except OSError as e:
        raise _fail(str(p), None, f"cannot be read ({e.strerror}); check the path and its permissions") from None
    return _parse(str(p), text)


@functools.lru_cache(maxsize=1)
def default_table() -> RuleTable:
    """The packaged rules as a table (built once)."""
    return RuleTable(load_rules())


def classify(name: str) -> str | None:
    """Op class of a kernel by the packaged rules, or None when no rule knows it."""
    return default_table().classify(name)


def with_user_rules(path: str | Path) -> RuleTable:
    """The packaged rules with the user's rules (``--rules RULES``) taking precedence."""
    return default_table().with_user_rules(path)


#: ``classify(kernel_name) -> op class | None``: what every reader calls for a kernel no NVTX range names.
KernelClassifier = Callable[[str], "str | None"]


def classifier(user_rules: str | Path | None = None) -> KernelClassifier:
    """The one kernel-name classifier of every reader (ncu, nsys): the packaged table, with the rules of
    ``user_rules`` (``--rules RULES``) matched first when given."""
    return default_table().classify if user_rules is None else with_user_rules(user_rules).classify
