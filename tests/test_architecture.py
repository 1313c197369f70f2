"""The house (docs/architecture.md): two floors, no import circles, the edge knows engines only by contract.

Imports are read from the source with `ast` (every import, also the lazy ones inside functions and the
ones under `if TYPE_CHECKING:`), so a circle cannot hide behind an import placed late.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.server import ROOT

PACKAGES = ("app", "engine")
# The assembly: app/main.py builds the app, app/settings.py reads the options, app/wiring/ builds the
# engines, and the CLI's `random-model` writes a Qwen3 checkpoint. Only these may name a concrete engine.
ASSEMBLY = ("app.main", "app.settings", "app.wiring", "app.cli.main")
CONCRETE_ENGINES = ("engine.qwen", "engine.embedded")
FAMILIES = {"speech", "batch", "voices", "sockets", "audio", "ops", "cli", "wiring", "static", "wyoming",
            "chatterbox", "soprano", "voicereader", "transcription"}
# each drop-in protocol adapter (app/wiring/protocols.py) adds its package here


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a `from pkg import sub` counts as importing `pkg.sub`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import engine.qwen.engine as x` or a name in a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_parser_sees_the_imports() -> None:
    graph = _graph()
    assert "engine.service" in graph["app.speech.serving"]
    assert "engine.qwen.engine" in graph["app.wiring.qwen"]
    assert "app.sockets.speak" in graph["app.sockets.routes"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_engine_never_imports_app() -> None:
    upward = {(m, t) for m, targets in _graph().items() if m.startswith("engine") for t in targets
              if t.startswith("app")}
    assert upward == set()


def test_the_edge_knows_engines_only_by_contract() -> None:
    """Outside the assembly, app/ reaches engines through engine/ (base, service, errors...), never
    into a concrete engine's package."""
    leaks = {(m, t) for m, targets in _graph().items()
             if m.startswith("app") and not any(m == a or m.startswith(a + ".") for a in ASSEMBLY)
             for t in targets if any(t == e or t.startswith(e + ".") for e in CONCRETE_ENGINES)}
    assert leaks == set()


def test_app_holds_only_the_assembly_and_family_packages() -> None:
    entries = {p.name for p in (ROOT / "app").iterdir() if p.name != "__pycache__"}
    assert entries == {"__init__.py", "main.py", "settings.py", *FAMILIES}
    for family in FAMILIES - {"static"}:
        assert (ROOT / "app" / family / "__init__.py").is_file(), family
