"""The import graph of `lorekit/` has no cycle: every `import` and `from ... import` statement counts,
wherever it is (inside functions, under `if TYPE_CHECKING:`), read with `ast` without importing.

An edge goes to the module an import names (`from a.b import c` names `a.b.c` when that is a module,
else `a.b`); parent packages are not edges of their own (the convention of import-linter and grimp).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lorekit

# Packages whose modules must be on no cycle: all of them.
CYCLE_FREE = ("lorekit",)

ROOT = Path(lorekit.__file__).resolve().parent


def module_names(root: Path = ROOT) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def in_scope(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in CYCLE_FREE)


def test_the_cycle_finder_finds_cycles_and_only_them():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": set(), "f": {"f"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["f"]]


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "lorekit.serve.core" in graph["lorekit.serve.server"]  # top level
    assert "lorekit.serve.core" in graph["lorekit.serve.protocol"]  # under TYPE_CHECKING
    assert "lorekit.serve.watcher" in graph["lorekit.serve.core"]  # inside a function


def test_no_import_cycles():
    bad = [c for c in cycles(import_graph()) if any(in_scope(m) for m in c)]
    assert not bad, "import cycles: " + "; ".join(" <-> ".join(c) for c in bad)
