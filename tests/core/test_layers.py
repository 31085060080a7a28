"""Layering: the device path sits below the CLI and the web layer; training never reaches up;
the command line starts without loading the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edge_app"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the edge_app modules a file imports (anywhere in it, lazily or not)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(p for p in (base, node.module) if p)
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("edge_app")}


def test_training_never_imports_the_cli_or_the_benchmark():
    for path in (PACKAGE / "training").glob("*.py"):
        bad = {m for m in imported_modules(path) if m.startswith(("edge_app.cli", "edge_app.bench", "edge_app.web"))}
        assert not bad, f"{path.name} imports {bad}"


def test_device_path_imports_neither_the_cli_nor_the_web_layer():
    bad = {m for m in imported_modules(PACKAGE / "device_path.py")
           if m.startswith(("edge_app.cli", "edge_app.web", "edge_app.bench"))}
    assert not bad


def test_training_modules_do_not_import_each_other_in_a_circle():
    modules = {f"edge_app.training.{p.stem}": p for p in (PACKAGE / "training").glob("*.py")}
    graph = {name: {m for m in imported_modules(p) if m in modules and m != name} for name, p in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert not circles, f"import circle through {circles}"


def test_the_command_line_starts_without_numpy_opencv_or_tqdm():
    code = ("import sys; from edge_app.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('numpy', 'cv2', 'tqdm', 'edge_app.runtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
