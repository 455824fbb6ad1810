"""The rules of the house, read from the code: imports only flow down, and they are all visible.

Every module of ``retrieval`` and ``cosegment`` is parsed (not imported) and every project import it
makes, function-local ones included, is checked:

* ``retrieval.core`` imports nothing else of the project; ``cosegment`` imports only ``retrieval.core``;
* no import cycle between any two modules, nor between any two packages (rooms);
* project imports stand at module level (an import inside a function hides a dependency);
* the packages stand on floors, and an import never goes up a floor;
* tools only parse arguments, call the library and print: each is at most ~100 lines.

And the tests can be found: every module is imported by at least one test file (function-local
imports count), and every test file is named after the module it tests (``retrieval/core/images.py``
→ ``tests/test_core_images.py``, ``cosegment/dff.py`` → ``tests/test_cosegment_dff.py``,
``tools/search.py`` end to end → ``tests/test_tools_search.py``) or is one of the few that are about no
single module (:data:`NOT_ONE_MODULE_S`).
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
    ("retrieval.search", "retrieval.toy", "retrieval.dedup"),
    ("retrieval.settings", "retrieval.loading"),
    ("retrieval.evaluation",),
    ("retrieval.training",),
    ("retrieval", "retrieval.demo", "retrieval.jobs", "retrieval.serve"),
    ("retrieval.commands",),
]
TOOL_MAX_LINES = 110
#: Files under tests/ that are not named after a module: fixtures and helpers, the end-to-end and
#: new-user scenarios, the house's rules, the README's examples, Slurm for real.
NOT_ONE_MODULE_S = {"conftest.py", "ddp_worker.py", "test_end_to_end.py", "test_new_user.py", "test_imports.py",
                    "test_names.py", "test_readme.py", "test_slurm.py"}
#: Helpers, not tests: what they import is not tested by importing it.
TEST_HELPERS = {"conftest.py", "ddp_worker.py"}


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


def imports_in_test_file(path: Path, known: Iterable[str]) -> Set[str]:
    """The project modules a test file imports anywhere in it, function-local imports included:
    ``import a.b`` and ``import a.b as x`` name ``a.b``; ``from a.b import c`` names ``a.b.c`` when
    that is a module, else ``a.b`` (whose name ``c`` is)."""
    known = set(known)
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known}
    return out


def is_empty_package(path: Path) -> bool:
    """An ``__init__.py`` that holds a docstring at most (nothing to test)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str) for n in body)


def untested_modules(root: Path = ROOT) -> List[str]:
    """Modules of the project that no test file imports (packages with nothing but a docstring
    aside)."""
    mods = module_files(root)
    seen: Set[str] = set()
    for f in sorted((root / "tests").glob("*.py")):
        if f.name not in TEST_HELPERS:
            seen |= imports_in_test_file(f, mods)
    return sorted(m for m, p in mods.items() if m not in seen and not is_empty_package(p))


def module_test_file_names(root: Path = ROOT) -> Set[str]:
    """The name of the test file of every module (the dotted path without ``retrieval.``, dots as
    ``_``: ``test_search_index.py``, ``test_cosegment_dff.py``; a package's own code:
    ``test_cosegment_factorizers.py``) and of every tool run end to end (``test_tools_search.py``)."""
    names = set()
    for m in module_files(root):
        parts = m.split(".")[1:] if m.split(".")[0] == "retrieval" else m.split(".")
        if parts:
            names.add(f"test_{'_'.join(parts)}.py")
    return names | {f"test_tools_{p.stem}.py" for p in (root / "tools").glob("*.py")}


def stray_test_files(root: Path = ROOT) -> List[str]:
    """Files under tests/ named after no module and no tool, and not one of :data:`NOT_ONE_MODULE_S`."""
    allowed = module_test_file_names(root) | NOT_ONE_MODULE_S
    return sorted(p.name for p in (root / "tests").glob("*.py") if p.name not in allowed)


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


def test_every_module_is_imported_by_a_test():
    missing = untested_modules()
    assert not missing, "no test file imports " + ", ".join(missing) + ": add a test to its tests/test_<module>.py"


def test_every_test_file_is_named_after_a_module_or_a_tool():
    stray = stray_test_files()
    assert not stray, ("test files named after no module or tool: " + ", ".join(stray)
                       + " (retrieval/x/y.py → tests/test_x_y.py, cosegment/z.py → tests/test_cosegment_z.py, "
                       "tools/t.py → tests/test_tools_t.py)")


def test_the_test_checks_find_what_they_must(tmp_path: Path):
    """An untested module and a stray test file are found; imports of every form count (a
    function-local ``from package import module`` too, for the module, not its package); a package
    with only a docstring needs none."""
    for d in ("retrieval/search", "cosegment", "tools", "tests"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "retrieval" / "__init__.py").write_text("X = 1\n")
    (tmp_path / "retrieval" / "search" / "__init__.py").write_text('"""Only a docstring."""\n')
    for name in ("index", "query", "topk", "lost"):
        (tmp_path / "retrieval" / "search" / f"{name}.py").write_text("")
    (tmp_path / "cosegment" / "__init__.py").write_text("from cosegment.dff import *\n")  # code of its own
    (tmp_path / "cosegment" / "dff.py").write_text("")
    (tmp_path / "tools" / "search.py").write_text("")
    (tmp_path / "tests" / "conftest.py").write_text("import retrieval.search.lost\n")  # a helper: does not count
    (tmp_path / "tests" / "test_search_index.py").write_text(
        "import retrieval\nimport retrieval.search.index as ix\n"
        "def test_x():\n    from retrieval.search import query\n    from cosegment import dff\n")
    (tmp_path / "tests" / "test_tools_search.py").write_text("from retrieval.search.topk import merge\n")
    (tmp_path / "tests" / "test_index.py").write_text("")
    assert untested_modules(tmp_path) == ["cosegment", "retrieval.search.lost"]
    assert stray_test_files(tmp_path) == ["test_index.py"]
    assert {"test_search.py", "test_search_index.py", "test_cosegment_dff.py", "test_cosegment.py",
            "test_tools_search.py"} <= module_test_file_names(tmp_path)


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
