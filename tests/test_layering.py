"""The package's layering: every module imports, no import cycles between modules, nothing outside
``gpuprobe.cli`` imports it (docs/contracts.md section 6).

The graph is built with ``ast`` from every ``import`` and ``from ... import`` of every module, at the
top of the file and inside functions alike (an import inside a function is still a dependency); imports
under ``if TYPE_CHECKING:`` are left out (they never run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg``; importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` (their ``__init__``), so those
are edges too, except the importing module's own packages (always loaded before it).
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpuprobe", "kernels")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node of a module, wherever it sits, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _internal(name: str) -> str | None:
    """The module of ours that ``name`` names (or the nearest package above it), else None. ``kernels/`` is
    installed as ``gpuprobe.kernels``: an import of ``gpuprobe.kernels.x`` is an edge to ``kernels.x``."""
    if name == "gpuprobe.kernels" or name.startswith("gpuprobe.kernels."):
        name = name[len("gpuprobe."):]
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(module, path, node)
                if base == "gpuprobe.kernels" or base.startswith("gpuprobe.kernels."):
                    base = base[len("gpuprobe."):]
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            own = _ancestors(module) | {module}
            for t in targets:
                dep = _internal(t)
                if dep is not None:
                    graph[module] |= ({dep} | _ancestors(dep)) - own
    return graph


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, groups = set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(set(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, g) for g in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    start = min(group)
    prev = {start: None}
    queue = [start]
    while queue:  # breadth-first back to start, inside the group: the shortest cycle through it
        v = queue.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return sorted(group)


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


#: What may import the command line: itself and ``python -m gpuprobe`` (the entry point, as the console script).
CLI_USERS = ("gpuprobe.cli", "gpuprobe.__main__")


def test_nothing_outside_cli_imports_cli():
    bad = sorted(f"{m} imports {d}" for m, deps in import_graph().items()
                 if not (m in CLI_USERS or m.startswith("gpuprobe.cli."))
                 for d in deps if d == "gpuprobe.cli" or d.startswith("gpuprobe.cli."))
    assert not bad, "\n".join(bad)


def test_the_graph_sees_function_level_imports_and_cycles():
    """The checker itself: a function-level import is an edge, and a two-module cycle is found."""
    graph = import_graph()
    assert "gpuprobe.render.plots.roofline" in graph["gpuprobe.render.outputs"]  # imported inside a function
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module):
    """Under the name it is installed as: ``kernels.x`` is ``gpuprobe.kernels.x``."""
    importlib.import_module(f"gpuprobe.{module}" if module.split(".")[0] == "kernels" else module)


def _loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    probe = code + f"\nimport sys\nprint(','.join(sorted(m for m in sys.modules if m in {watch!r} or m.startswith('gpuprobe.cli'))))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.strip().split(",") if m]


def test_core_modules_import_without_cli_or_torch():
    """The torch-free core (analytic and report paths, the measured roofline's stages, the advisor) loads
    no command-line module, no torch and no triton."""
    mods = ["gpuprobe.analytic", "gpuprobe.roofline.points", "gpuprobe.run.plan", "gpuprobe.roofline.assemble",
            "gpuprobe.run.measured", "gpuprobe.roofline.analytic_roofline", "gpuprobe.ncu.counter_roofline",
            "gpuprobe.advise.advisor", "gpuprobe.advise.curves", "gpuprobe.measure.point", "gpuprobe.tools.doctor"]
    assert _loaded_after("".join(f"import {m}\n" for m in mods), ("torch", "triton")) == []


def test_command_line_loads_no_heavy_library():
    """Building the whole parser (what `gpuprobe --help` does) loads none of the heavy optional libraries."""
    heavy = ("torch", "triton", "matplotlib", "pandas", "ncu_report", "pynvml")
    got = _loaded_after("import gpuprobe.cli as c\nc.build_parser()", heavy)
    assert [m for m in got if not m.startswith("gpuprobe.cli")] == []


def _folder(module: str) -> str:
    """The folder of a module: ``gpuprobe.measure.sweep`` -> ``measure``; top-level modules are their own."""
    parts = module.split(".")
    if parts[0] == "kernels":
        return "kernels"
    if len(parts) == 1:
        return "gpuprobe"
    return parts[1] if (len(parts) > 2 or MODULES[module].name == "__init__.py") else "(top)" + parts[1]


def test_no_cycle_between_folders():
    """The layers of docs/architecture.md: at folder scale too, no two folders import each other, even
    through others (``measure`` and ``ceilings`` once did, through ``measure.telemetry``)."""
    graph: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        a = _folder(module)
        graph.setdefault(a, set()).update(_folder(d) for d in deps if _folder(d) != a)
    assert find_cycles(graph) == []
    assert graph.get("kernels", set()) == set()  # the Triton kernels import nothing of gpuprobe


#: docs/architecture.md's floors, top first: a module imports its own floor (acyclically) or those below it.
#: A folder is named as ``_folder`` names it; a top-level module as ``(top)NAME``.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("cli", "(top)__main__"),
    ("run", "tools"),
    ("render", "calibration"),
    ("measure",),
    ("advise",),
    ("(top)reports", "(top)diff"),
    ("nsys",),
    ("ncu",),
    ("ceilings",),
    ("engine",),
    ("system",),
    ("gpuprobe", "(top)ops", "specs", "(top)analytic", "roofline", "(top)kernel_rules", "(top)paths",
     "(top)parsing", "(top)jsonsafe", "(top)errors", "data"),
    ("kernels",),
)
FLOOR_OF = {name: i for i, names in enumerate(FLOORS) for name in names}


def test_every_folder_has_a_floor():
    """A new folder or top-level module must be placed (here and in docs/architecture.md) before it lands."""
    assert sorted({_folder(m) for m in MODULES} - set(FLOOR_OF)) == []


def test_no_import_runs_up_a_floor():
    ups = sorted(f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
                 if FLOOR_OF[_folder(d)] < FLOOR_OF[_folder(m)])
    assert ups == [], "imports up a floor (docs/architecture.md):\n" + "\n".join(ups)


def test_the_floors_are_the_documented_ones():
    """docs/architecture.md's table names every folder of ``FLOORS``, in the same order."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ") and line.split("|")[1].strip()[:1].isdigit()]
    assert len(rows) == len(FLOORS)
    for row, names in zip(rows, FLOORS):
        for name in names:
            if name != "gpuprobe":
                bare = name.replace("(top)", "")
                token = bare if bare == "__main__" else bare + (".py" if name.startswith("(top)") else "/")
                assert token in row, (name, row)
