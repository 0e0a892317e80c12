"""The package layout is the architecture: rooms import one way only, and no module grows past ~500 lines.

``MAY_IMPORT`` is the allowed direction (documented in the README's architecture section). A new import across
rooms that is not listed fails here: either it belongs in the table (and the README), or the code is in the
wrong room.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "dpbalance"

MAY_IMPORT = {
    "core": set(),
    "engine": {"core"},
    "predictors": {"core"},
    "policies": {"core", "predictors"},
    "results": {"core"},
    "sim": {"core", "engine", "policies", "results"},
    "analysis": {"core", "predictors"},
    "traces": {"core"},
    "calibrate": {"core", "engine"},
    "testbed": set(),
    "emulator": {"core", "engine"},
    "loadgen": {"core", "results"},
    "router": {"core", "engine", "policies", "predictors", "results", "traces"},
    # the gateway's picker is a second front door over the router's dispatcher, rank health and metrics; the
    # router never imports it
    "gateway": {"core", "policies", "predictors", "router"},
    "sweep": {"core", "engine", "policies", "results", "sim", "traces"},
    "experiments": {"analysis", "core", "policies", "predictors", "results", "sim", "sweep", "traces"},
    "cli": {
        "analysis",
        "calibrate",
        "core",
        "emulator",
        "engine",
        "experiments",
        "gateway",
        "loadgen",
        "policies",
        "predictors",
        "results",
        "router",
        "sim",
        "sweep",
        "testbed",
        "traces",
    },
}
MAX_LINES = 520


def _imported_modules(path: Path) -> set[tuple[str, ...]]:
    """Every ``dpbalance`` module path a module imports, anywhere in it (inside functions too), as a tuple of
    names under the package (``("sim", "engine")``; an imported name may be a submodule: ``from . import x``)."""
    parts = path.relative_to(PKG).parts
    pkg_parts = list(parts[:-1]) if parts[-1] != "__init__.py" else list(parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "dpbalance":
                mod = node.module.split(".")[1:]
            else:
                continue
            for a in node.names:
                out.add(tuple(mod + [a.name]))
            if mod:
                out.add(tuple(mod))
        elif isinstance(node, ast.Import):
            out |= {tuple(a.name.split(".")[1:]) for a in node.names if a.name.startswith("dpbalance.")}
    return out


def _imports(path: Path) -> set[str]:
    """Rooms (top-level subpackages) a module imports; the package root itself (``__version__``) is not a room."""
    return {m[0] for m in _imported_modules(path) if m}


def _module_of(names: tuple[str, ...]) -> Path | None:
    """The file of an imported name: the module itself, or the package whose ``__init__`` defines the name."""
    for k in range(len(names), 0, -1):
        p = PKG.joinpath(*names[:k])
        if p.with_suffix(".py").is_file():
            return p.with_suffix(".py")
        if (p / "__init__.py").is_file():
            return p / "__init__.py"
    return None


MODULES = sorted(p for p in PKG.rglob("*.py") if len(p.relative_to(PKG).parts) > 1)


def test_every_room_is_listed():
    rooms = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(MAY_IMPORT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_one_way(path):
    room = path.relative_to(PKG).parts[0]
    wrong = {r for r in _imports(path) if r in MAY_IMPORT and r != room} - MAY_IMPORT[room]
    assert not wrong, (
        f"{path.relative_to(PKG)} ({room}) imports {sorted(wrong)}; {room} may import {sorted(MAY_IMPORT[room])}"
    )


def test_no_cycles_between_rooms():
    done = set()

    def visit(r, stack):
        assert r not in stack, f"import cycle: {' -> '.join(stack + [r])}"
        if r in done:
            return
        for d in MAY_IMPORT[r]:
            visit(d, stack + [r])
        done.add(r)

    for r in MAY_IMPORT:
        visit(r, [])


def test_no_cycles_between_modules():
    """No module imports, directly or through others, a module that imports it back (a package importing its own
    submodules in ``__init__`` is not a cycle; a submodule importing its package's ``__init__`` is)."""
    files = sorted(PKG.rglob("*.py"))
    graph = {}
    for f in files:
        deps = set()
        for names in _imported_modules(f):
            m = _module_of(names)
            if m is not None and m != f:
                deps.add(m)
        graph[f] = deps
    # an __init__ re-exports its submodules: an edge into a package's __init__ from inside that package is the
    # cycle we look for, an edge from __init__ to its own submodules is not followed back
    state: dict[Path, int] = {}

    def visit(f: Path, stack: list[Path]) -> None:
        state[f] = 1
        for d in graph[f]:
            if f.name == "__init__.py" and f.parent in d.parents:
                continue
            if state.get(d) == 1:
                cyc = stack[stack.index(d) :] + [d] if d in stack else [f, d]
                raise AssertionError("import cycle: " + " -> ".join(str(p.relative_to(PKG)) for p in cyc))
            if d not in state:
                visit(d, stack + [d])
        state[f] = 2

    for f in files:
        if f not in state:
            visit(f, [f])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines; split it (limit {MAX_LINES})"


MAX_FUNCTION_LINES = 80
#: rooms held to the function-length limit (older rooms have long command-registration functions)
SHORT_FUNCTION_ROOMS = ("gateway",)


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if p.relative_to(PKG).parts[0] in SHORT_FUNCTION_ROOMS],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_function_size(path):
    long = [
        f"{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(PKG)}: {', '.join(long)} over {MAX_FUNCTION_LINES} lines; split them"
