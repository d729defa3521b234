"""The import graph of the `volrot` package and its cycles (stdlib only; any Python runs it).

    python tools/import_graph.py            # edges "a -> b", then the cycles (exit 1 if any)
    python tools/import_graph.py --dot      # Graphviz DOT of the graph

Every `import volrot.x` / `from volrot.x import y` counts, including imports inside functions
(a lazy import that closes a loop is still a loop in the design). `from volrot.pkg import name`
counts as an edge to `volrot.pkg.name` when that is a module, else to `volrot.pkg`. A package's
own `__init__` importing its submodules is not a cycle of the submodules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "volrot"


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def edges() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    targets.append(full if full in mods else base)
            for t in targets:
                while t and t not in mods:  # `import volrot.x.y` of a name -> its module
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("volrot"):
                    if is_pkg and t.startswith(mod + "."):
                        continue  # a package re-exporting its own submodules
                    graph[mod].add(t)
    # importing volrot.a.b runs volrot/a/__init__: an edge to a submodule implies its package,
    # but a package's __init__ only counts through what it imports itself (above).
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv: list[str]) -> int:
    graph = edges()
    if "--dot" in argv:
        print("digraph volrot {")
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    for a in sorted(graph):
        for b in sorted(graph[a]):
            print(f"{a} -> {b}")
    found = cycles(graph)
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} modules, {n_edges} edges, {len(found)} cycles")
    for c in found:
        print("cycle: " + " <-> ".join(c))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
