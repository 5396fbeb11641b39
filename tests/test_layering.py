"""The package's layers, read from the import statements of every module (lazy imports inside
functions included): imports flow downward only (DESIGN.md), methods never touch Qt or napari,
and io/ and engine/ have no import cycles."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_histoai"

# lower number = lower layer; a module may import its own layer or lower ones
RANKS = {
    "errors": 0, "classes": 0, "bundled": 0, "__init__": 0, "resources": 0,
    "io": 1, "metrics": 1, "models": 1,
    "engine": 2, "project": 2, "evaluation": 2,
    "methods": 3, "devdata": 3,
    "tasks": 4, "batch": 4, "batch_records": 4, "batch_models": 4,
    "cli": 5, "widgets": 5,
}
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        yield ".".join(rel.parts), path


def _imports(name: str, path: Path):
    """(imported module, line) for every import in the file; relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = ".".join(["napari_histoai", *base, *([node.module] if node.module else [])])
                if node.module is None:  # from . import x
                    for a in node.names:
                        yield f"{mod}.{a.name}", node.lineno
                    continue
                yield mod, node.lineno
            elif node.module:
                yield node.module, node.lineno


def _top(internal: str) -> str:
    """``napari_histoai.io.points`` -> ``io``."""
    parts = internal.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph():
    return {name: list(_imports(name, path)) for name, path in _modules()}


def test_every_top_level_module_has_a_layer():
    tops = {name.split(".")[0] for name, _ in _modules()}
    assert tops <= set(RANKS), f"give these a layer in RANKS: {sorted(tops - set(RANKS))}"


def test_imports_flow_downward_only():
    bad = []
    for name, imports in _graph().items():
        src = name.split(".")[0]
        for mod, line in imports:
            if not mod.startswith("napari_histoai"):
                continue
            dst = _top(mod)
            if RANKS.get(dst, 0) > RANKS[src]:
                bad.append(f"{name}:{line} imports {mod} ({src} is below {dst})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", ["io", "engine"])
def test_io_and_engine_never_import_methods_widgets_or_cli(layer):
    bad = [f"{name}:{line} imports {mod}" for name, imports in _graph().items() if name.split(".")[0] == layer
           for mod, line in imports if mod.startswith("napari_histoai") and _top(mod) in ("methods", "widgets", "cli")]
    assert not bad, "\n".join(bad)


def test_only_widgets_touch_qt_or_napari():
    bad = []
    for name, imports in _graph().items():
        if name.split(".")[0] in ("widgets",) or name == "__init__":
            continue
        for mod, line in imports:
            if mod.split(".")[0] in GUI:
                bad.append(f"{name}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", ["io", "engine"])
def test_no_import_cycles(layer):
    graph = {}
    for name, imports in _graph().items():
        if name.split(".")[0] != layer:
            continue
        deps = set()
        for mod, _ in imports:
            inner = mod.removeprefix("napari_histoai.")
            if inner.split(".")[0] == layer and inner != name:
                deps.add(inner if inner in _names() else inner + ".__init__")
        graph[name] = deps
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for d in graph.get(n, ()):
            visit(d)
        stack.pop()

    for n in graph:
        visit(n)
    assert not cycles, "\n".join(cycles)


def _names() -> set:
    return {name for name, _ in _modules()}


def test_the_checker_sees_a_violation(tmp_path):
    """The rules above are not vacuous: a module of io/ importing methods/ is caught."""
    src = "from ..methods.detection import job\nfrom ..engine.jobs import Progress\n"
    p = tmp_path / "bad.py"
    p.write_text(src)
    found = [m for m, _ in _imports("io.bad", p)]
    assert found == ["napari_histoai.methods.detection", "napari_histoai.engine.jobs"]
    assert [RANKS[_top(m)] > RANKS["io"] for m in found] == [True, True]
