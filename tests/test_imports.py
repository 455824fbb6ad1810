"""The rules of the house, read from the code: imports only flow down, and they are all visible.

Every module of ``retrieval`` and ``cosegment`` is parsed (not imported) and every project import it
makes, function-local ones included, is checked:

* ``retrieval.core`` imports nothing else of the project; ``cosegment`` imports only ``retrieval.core``;
* no import cycle between any two modules, nor between any two packages (rooms);
* project imports stand at module level (an import inside a function hides a dependency);
* the packages stand on floors, and an import never goes up a floor;
* tools only parse arguments, call the library and print: each is at most ~100 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("retrieval", "cosegment")
#: Floors from the bottom up: a module may import only from its own floor or below.
FLOORS: List[Tuple[str, ...]] = [
    ("retrieval.core",),
    ("cosegment",),
    ("retrieval.model",),
    ("retrieval.search", "retrieval.toy"),
    ("retrieval.settings", "retrieval.loading"),
    ("retrieval.evaluation",),
    ("retrieval.training",),
    ("retrieval", "retrieval.demo", "retrieval.jobs", "retrieval.serve"),
    ("retrieval.commands",),
]
TOOL_MAX_LINES = 110


def module_files(root: Path = ROOT) -> Dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    mods: Dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = f
    return mods


def project_imports(name: str, path: Path, mods: Iterable[str]) -> List[Tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every project import in ``path``
    (``from a.b import c`` resolves to ``a.b.c`` when that is a module, else ``a.b``)."""
    known = set(mods)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".") if is_pkg else name.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            if t.split(".")[0] not in PACKAGES:
                continue
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.append((t, node.lineno, id(node) in top_level))
    return out


def room(module: str) -> str:
    """The package (room) a module lives in: ``retrieval.search.index`` → ``retrieval.search``;
    top-level modules of ``retrieval`` are rooms of their own; all of ``cosegment`` is one room."""
    parts = module.split(".")
    if parts[0] == "cosegment":
        return "cosegment"
    if len(parts) >= 2 and (ROOT / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def floor(module: str) -> int:
    r = room(module)
    for i, rooms in enumerate(FLOORS):
        if r in rooms:
            return i
    raise AssertionError(f"{module} (room {r}) stands on no floor: add it to FLOORS")


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One cycle of ``graph`` as a list of nodes (first == last), or [] when it has none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(v: str) -> List[str]:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if not state.get(w):
                c = visit(w)
                if c:
                    return c
        stack.pop()
        state[v] = 2
        return []

    for v in sorted(graph):
        if not state.get(v):
            c = visit(v)
            if c:
                return c
    return []


def graphs(root: Path = ROOT) -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]], List[str]]:
    """(module graph, room graph, function-local imports as 'file:line -> module')."""
    mods = module_files(root)
    mg: Dict[str, Set[str]] = {m: set() for m in mods}
    rg: Dict[str, Set[str]] = {}
    local: List[str] = []
    for m, path in mods.items():
        for t, line, top in project_imports(m, path, mods):
            # a package's own __init__ and its parents are not dependencies of its modules
            if m.startswith(t + ".") or t.startswith(m + "."):
                continue
            mg[m].add(t)
            if room(m) != room(t):
                rg.setdefault(room(m), set()).add(room(t))
            if not top:
                local.append(f"{path.relative_to(root)}:{line} -> {t}")
    return mg, rg, local


def test_core_imports_nothing_else_of_the_project():
    mods = module_files()
    bad = [f"{m} imports {t}" for m, p in mods.items() if room(m) == "retrieval.core"
           for t, _, _ in project_imports(m, p, mods) if room(t) != "retrieval.core"]
    assert not bad, bad


def test_cosegment_stands_on_the_core_only():
    mods = module_files()
    bad = [f"{m} imports {t}" for m, p in mods.items() if room(m) == "cosegment"
           for t, _, _ in project_imports(m, p, mods) if room(t) not in ("cosegment", "retrieval.core")]
    assert not bad, bad


def test_no_import_cycle_between_modules_or_rooms():
    mg, rg, _ = graphs()
    assert find_cycle(mg) == [], f"module import cycle: {' -> '.join(find_cycle(mg))}"
    assert find_cycle(rg) == [], f"package import cycle: {' -> '.join(find_cycle(rg))}"


def test_imports_only_flow_down_the_floors():
    mg, _, _ = graphs()
    up = [f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
          for m, ts in mg.items() for t in ts if floor(t) > floor(m)]
    assert not up, up


def test_project_imports_are_at_module_level():
    _, _, local = graphs()
    assert not local, "function-local project imports: " + "; ".join(local)


@pytest.mark.parametrize("tool", sorted((ROOT / "tools").glob("*.py")), ids=lambda p: p.name)
def test_tools_are_thin(tool: Path):
    n = len(tool.read_text(encoding="utf-8").splitlines())
    assert n <= TOOL_MAX_LINES, f"{tool.name} has {n} lines: move its logic into the library"


def test_the_checker_finds_what_it_must(tmp_path: Path):
    """The rules above would fail on a tree that breaks them (the flat tree before the restructure
    had network ↔ settings and function-local imports)."""
    (tmp_path / "retrieval" / "core").mkdir(parents=True)
    (tmp_path / "cosegment").mkdir()
    (tmp_path / "retrieval" / "__init__.py").write_text("")
    (tmp_path / "retrieval" / "core" / "__init__.py").write_text("")
    (tmp_path / "retrieval" / "core" / "a.py").write_text("from retrieval.settings import X\n")
    (tmp_path / "retrieval" / "settings.py").write_text("def f():\n    from retrieval.core.a import Y\n")
    (tmp_path / "cosegment" / "__init__.py").write_text("import retrieval.settings\n")
    mg, rg, local = graphs(tmp_path)
    assert find_cycle(mg) in (["retrieval.core.a", "retrieval.settings", "retrieval.core.a"],
                              ["retrieval.settings", "retrieval.core.a", "retrieval.settings"])
    assert local == ["retrieval/settings.py:2 -> retrieval.core.a"]
    assert "retrieval.settings" in rg["cosegment"]


def test_public_api_names_resolve():
    """Every name of the public API at the top of the packages resolves to what its module defines."""
    import importlib

    import cosegment
    import retrieval

    for name in retrieval.__all__:
        assert getattr(retrieval, name) is getattr(importlib.import_module(retrieval._API[name]), name), name
    assert callable(cosegment.cosegment) and callable(retrieval.train)
    with pytest.raises(AttributeError):
        retrieval.no_such_name  # noqa: B018
