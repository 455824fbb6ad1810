"""Names that tell the truth: every dotted ``retrieval.…`` / ``cosegment.…`` name written in the
project's docstrings and comments imports (a module, or an attribute of one), and every package's
``__init__`` docstring names each of its modules."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("retrieval", "cosegment")
REF = re.compile(r"(?<![\w./-])((?:retrieval|cosegment)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def project_files() -> List[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def texts(path: Path) -> List[str]:
    """The docstrings and comments of a file (where prose names modules)."""
    src = path.read_text(encoding="utf-8")
    out = [line.split("#", 1)[1] for line in src.splitlines() if "#" in line]
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append(doc)
    return out


def references() -> Dict[str, List[str]]:
    """dotted name → the files whose docstrings or comments write it."""
    refs: Dict[str, List[str]] = {}
    for path in project_files():
        for text in texts(path):
            for ref in REF.findall(text):
                refs.setdefault(ref.rstrip("."), []).append(str(path.relative_to(ROOT)))
    return refs


def resolves(dotted: str) -> Tuple[bool, str]:
    """Whether ``dotted`` is a module, or a module followed by attributes that exist."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False, f"{'.'.join(parts[:k])} has no '{attr}'"
            obj = getattr(obj, attr)
        return True, ""
    return False, "no such module"


def test_the_finder_sees_references():
    refs = references()
    assert "retrieval.search.query" in refs and len(refs) > 20


def test_every_dotted_name_in_docstrings_and_comments_resolves():
    bad = []
    for ref, where in sorted(references().items()):
        ok, why = resolves(ref)
        if not ok:
            bad.append(f"{ref} ({why}; in {', '.join(sorted(set(where)))})")
    assert not bad, "names that do not resolve:\n" + "\n".join(bad)


def _packages() -> List[Path]:
    return sorted(p.parent for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py"))


@pytest.mark.parametrize("package", _packages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_package_docstring_names_all_its_modules(package: Path):
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    members = [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
    members += [p.name for p in package.iterdir() if (p / "__init__.py").is_file()]
    missing = [m for m in sorted(members) if not re.search(rf"\b{re.escape(m)}\b", doc)]
    assert not missing, f"{package.relative_to(ROOT)}/__init__.py does not name: {', '.join(missing)}"
