"""Import contracts: the package layout is the architecture, and this test keeps it so.

Every ``import`` of every module counts, the lazy ones inside functions included (they are design all the same).

- The library (``kl_filter`` outside ``kl_filter/apps/``) never imports the applications (``kl_filter.apps``).
- Library packages import only their own layer and the layers below (``LAYERS``, bottom first): the core imports
  nothing above it; scorers never import filters, rules, stages or the runner.
- No cycles between modules.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kl_filter")

# bottom first: a package imports itself and packages of lower layers only (not its own layer's others)
LAYERS = [
    {"core"},
    {"text", "engines", "encoders", "recipes"},
    {"kernels", "pool"},
    {"stats"},
    {"scorers", "rules"},
    {"stages"},
    {"filters"},
    {"runner"},
    {"kl_filter", "testing"},  # the public API (kl_filter/__init__.py) and the conformance suite
]
APPS = "apps"


def _modules() -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the kl_filter modules it imports (``from a import b`` counts ``a.b`` when that is a module)."""
    mods, graph = _modules(), {}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names)
        graph[mod] = {r for t in targets if t.split(".")[0] == "kl_filter"
                      for r in [_resolve(t, mods)] if r and r != mod}
    return graph


def package(mod: str) -> str:
    """``kl_filter.scorers.kl`` -> ``scorers``; ``kl_filter.runner`` -> ``runner``; ``kl_filter`` -> ``kl_filter``."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "kl_filter"


def layer(pkg: str) -> int:
    for i, names in enumerate(LAYERS):
        if pkg in names:
            return i
    raise AssertionError(f"kl_filter/{pkg}: a library package in no layer: add it to LAYERS in {__file__}")


GRAPH = import_graph()
LIBRARY = sorted(m for m in GRAPH if package(m) not in (APPS, "__main__"))


def test_every_library_package_has_a_layer_and_nothing_is_missed():
    assert len(GRAPH) > 100 and "kl_filter.scorers.base" in GRAPH and "kl_filter.apps.cli" in GRAPH
    for m in LIBRARY:
        layer(package(m))


def test_the_library_never_imports_the_applications():
    bad = [f"{m} imports {t}" for m in LIBRARY for t in sorted(GRAPH[m]) if package(t) == APPS]
    assert not bad, "\n".join(bad)


def test_library_packages_import_only_their_own_layer_and_below():
    bad = []
    for m in LIBRARY:
        own = package(m)
        for t in sorted(GRAPH[m]):
            other = package(t)
            if other != own and (other == APPS or layer(other) >= layer(own)):
                bad.append(f"{m} (layer {layer(own)}) imports {t} (layer {'apps' if other == APPS else layer(other)})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg, never", [
    ("core", {"pool", "engines", "kernels", "stats", "scorers", "stages", "rules", "filters", "runner", "recipes",
              "text", "encoders", "kl_filter", "testing", APPS}),
    ("scorers", {"filters", "rules", "stages", "runner", "recipes", "kl_filter", "testing", APPS}),
])
def test_the_named_contracts(pkg, never):
    bad = [f"{m} imports {t}" for m in LIBRARY if package(m) == pkg for t in sorted(GRAPH[m]) if package(t) in never]
    assert not bad, "\n".join(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_no_import_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself
    assert cycles({"a": {"b"}, "b": set()}) == []
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)
