"""retrieval.toy: the package imports no torch and, of the project, only retrieval.core."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TOY_DIR = Path(__file__).resolve().parents[1] / "retrieval" / "toy"


TOY_MODULES = sorted(f"retrieval.toy.{f.stem}" for f in TOY_DIR.glob("*.py") if f.stem != "__init__")


def test_import_does_not_pull_in_torch() -> None:
    assert "retrieval.toy.collection" in TOY_MODULES and len(TOY_MODULES) > 1
    code = f"import sys, {', '.join(TOY_MODULES)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"


def test_toy_package_stands_on_the_core_only() -> None:
    """Of the project, the toy modules import only ``retrieval.core`` and each other."""
    bad = []
    for f in sorted(TOY_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.name} imports {n}" for n in names if n.split(".")[0] in ("retrieval", "cosegment")
                    and not n.startswith(("retrieval.core.", "retrieval.toy."))]
    assert not bad, bad
