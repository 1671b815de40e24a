"""The layering of docs/design.md, enforced: which package may import which, and no import cycles.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: an import hidden in
a function is still a dependency, and a cycle broken by one is still a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "opencbr"

# Package (or top-level module) -> the packages it may import. ``opencbr`` itself (the version) is free.
# Dependencies point down: the data plane and the catalog know nothing of the use cases above them.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "config": set(),
    # operating-system helpers (ctypes libc, processes, aligned direct-I/O buffers) several layers need
    "system": set(),
    "storage": {"domain", "system"},
    "engine": {"domain", "storage", "system"},
    "catalog": {"domain"},
    # how the service and its agents talk (certificates, TLS, framed messages): transport only
    "agentlink": {"system"},
    # the agent program on a protected host: the engine runs there, next to the data
    "agent": {"agentlink", "engine", "system", "domain"},
    "providers": {"domain", "system", "agentlink", "engine"},
    "services": {"domain", "config", "catalog", "engine", "storage", "providers", "agentlink"},  # agentlink: region links
    "scheduler": {"domain", "config", "catalog", "services"},
    "worker": {"domain", "config", "catalog", "engine", "services", "system"},
    "console": {"domain", "config"},
    "api": {"domain", "config", "catalog", "services", "console", "agentlink"},  # agentlink: the agent package it serves
    # process entry points: they assemble everything but the API's client
    "server": {"domain", "config", "catalog", "services", "scheduler", "worker", "api", "console", "system"},
    # the `cbr` command is a client of the API; it starts the service processes through `server`
    "cli": {"domain", "config", "server"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _imported(name: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [module] + [f"{module}.{a.name}" for a in node.names]


def _graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (an imported name resolves to its longest module)."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(name, path, node):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("opencbr") and target != name:
                    edges[name].add(target)
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_package_has_a_place_in_the_layers():
    packages = {_package(m) for m in _modules()} - {"opencbr"}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to ALLOWED and docs/design.md"


def test_dependencies_point_down():
    wrong = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                   if _package(b) not in ALLOWED.get(_package(a), set()) | {_package(a), "opencbr"})
    assert not wrong, "imports against the layering of docs/design.md:\n" + "\n".join(wrong)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_engine_and_storage_speak_their_own_errors():
    # The domain's errors carry HTTP statuses and CBR codes; the data plane raises its own
    # (engine/errors.py, storage/errors.py) and services/engine_errors.py maps them to the wire.
    wrong = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                   if _package(a) in ("engine", "storage") and b == "opencbr.domain.errors")
    assert not wrong, "the engine and storage import the domain's errors:\n" + "\n".join(wrong)
