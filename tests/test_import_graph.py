"""The package's imports follow the flow in docs/design.md: no circle between modules, at
the top of a module or inside a function, and no import from a later stage into an
earlier one. Read from the source with `ast`, so a function-level import counts as much
as a top-level one; imports under `if TYPE_CHECKING:` are annotations only and are left
out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"autointerp": ROOT / "autointerp", "autointerp.sae": ROOT / "sae",
            "autointerp.baselines": ROOT / "baselines"}

STAGES = [
    {"autointerp", "autointerp.errors", "autointerp.types", "autointerp.progress",
     "autointerp.distributed", "autointerp.db"},
    {"autointerp.harvest"},
    {"autointerp.llm"},
    {"autointerp.dictionaries"},
    {"autointerp.sae", "autointerp.baselines"},
    {"autointerp.causal"},
    {"autointerp.scoring"},
    {"autointerp.results"},
    {"autointerp.demo"},
    {"autointerp.cli", "autointerp.__main__"},
]
"""docs/design.md, "Imports follow the flow": a module may import its own stage and the
stages above it, never one below."""


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if pkg == "autointerp" and parts and parts[0] in ("sae", "baselines"):
                continue
            out[".".join([pkg, *parts])] = f
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in mods] or [base]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.startswith("autointerp") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stage(module: str) -> int:
    best = None
    for i, group in enumerate(STAGES):
        for prefix in group:
            if module == prefix or module.startswith(prefix + ".") and prefix != "autointerp":
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} belongs to no stage of docs/design.md"
    return best[0]


def test_no_circle_between_modules():
    assert cycles(edges(modules())) == []


def test_imports_follow_the_flow():
    graph = edges(modules())
    against = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs
                     if stage(b) > stage(a))
    assert against == []


def test_the_check_sees_function_level_circles(tmp_path, monkeypatch):
    """The check itself can fail: two modules importing each other inside functions."""
    pkg = tmp_path / "autointerp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from autointerp.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from autointerp import a\n")
    monkeypatch.setitem(PACKAGES, "autointerp", pkg)
    monkeypatch.delitem(PACKAGES, "autointerp.sae")
    monkeypatch.delitem(PACKAGES, "autointerp.baselines")
    assert cycles(edges(modules())) == [["autointerp.a", "autointerp.b"]]


def test_test_modules_do_not_import_each_other():
    """Shared test code lives in tests/support/, so no test module imports another."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    ("tests.test_", "tests.conftest")):
                offenders.append(f"{path.name}: {node.module}")
    assert offenders == []


def test_no_command_module_imports_another():
    """Each command's module is a thin shell; what two commands share (options, the LLM
    factory, display helpers) has its own home."""
    from autointerp.cli import COMMAND_MODULES

    commands = {f"autointerp.cli.{name}" for name in COMMAND_MODULES}
    graph = edges(modules())
    crossing = sorted(f"{a} -> {b}" for a in commands for b in graph.get(a, ()) if b in commands)
    assert crossing == []
