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
    "predictors": {"core"},
    "policies": {"core", "predictors"},
    "results": {"core"},
    "sim": {"core", "policies", "results"},
    "analysis": {"core", "predictors"},
    "traces": {"core"},
    "calibrate": {"core", "sim"},
    "testbed": set(),
    "router": {"core", "policies", "predictors", "results", "sim", "traces"},
    "sweep": {"core", "policies", "results", "sim", "traces"},
    "experiments": {"analysis", "core", "policies", "predictors", "results", "sim", "sweep", "traces"},
    "cli": {
        "analysis",
        "calibrate",
        "core",
        "experiments",
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


def _imports(path: Path) -> set[str]:
    """Rooms (top-level subpackages) a module imports; the package root itself (``__version__``) is not a room."""
    parts = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[:-1])[: len(parts) - node.level]
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "dpbalance":
                mod = node.module.split(".")[1:]
            else:
                continue
            if mod:
                out.add(mod[0])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dpbalance.")}
    return out


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines; split it (limit {MAX_LINES})"
