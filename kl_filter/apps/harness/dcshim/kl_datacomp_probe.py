"""Can this interpreter run DataComp's scripts? ``python -B kl_datacomp_probe.py [--quick] DATACOMP_DIR SCRIPT...``

Prints one JSON object (stdout) and writes nothing. For each script (``resharder.py``, ``train.py``,
``evaluate.py``), read with ``ast``, never run:

1. the module-level imports of the script and, recursively, of the modules it imports from the checkout
   (``scale_configs``, ``eval_utils``) and of open_clip's trainer (``training`` / ``open_clip_train``, whose
   imports such as pandas and braceexpand are what ``train.py`` needs without naming them); imports inside
   ``try`` blocks and functions are optional and not followed. Each top-level module is looked up
   (``importlib.util.find_spec``): ``missing`` lists those not found.
2. when nothing is missing, the script's own import statements are executed (a version without a name the
   script imports: ``broken``), then every attribute chain the script reads at module level from an imported
   module (``wds.writer.gopen.Pipe`` in the resharder, gone from webdataset 0.2.86) is looked up. ``--quick``
   stops after step 1.

``trainer``: ``"training"`` when the interpreter has open_clip's pre-2.26 trainer package (what ``train.py``
imports), ``"open_clip_train"`` when it has only the new one (the harness then puts this directory's
``training`` shim on ``PYTHONPATH``), ``"missing"`` otherwise. Standalone: runs in DataComp's interpreter.
"""

import ast
import importlib
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = ("training", "open_clip_train")


def _imports(path, package):
    """Module-level ``(module, names, lineno)`` of a source file; ``package`` resolves relative imports."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno, a.asname or a.name.split(".")[0], a.name if a.asname else
                     a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, mod] if mod else base)
            out.append((mod, [a.name for a in node.names], node.lineno, None, None))
    return tree, out


def _origin(module):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None, False
    return spec, spec is not None


def _follow(module, root):
    """Is ``module`` one whose own imports are followed: the checkout's, or open_clip's trainer? Decided from its
    top-level package alone (looking up ``a.b`` imports ``a``: torch, for ``torch.utils.data``)."""
    top = module.split(".")[0]
    if top in TRAINER:
        return True
    spec, found = _origin(top)
    if not found:
        return False
    places = [spec.origin] if spec.origin else []
    places += list(spec.submodule_search_locations or [])
    return any(p and os.path.abspath(p).startswith(root + os.sep) for p in places)


def collect(path, root):
    """Every top-level module name the script needs, following local and trainer modules."""
    seen_files, tops, queue = set(), set(), [(path, "")]
    while queue:
        f, package = queue.pop()
        if f in seen_files:
            continue
        seen_files.add(f)
        for mod, names, _, _, _ in _imports(f, package)[1]:
            if not mod:
                continue
            top = mod.split(".")[0]
            if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
                continue
            tops.add(top)
            if not _follow(mod, root):
                continue
            spec, found = _origin(mod)
            candidates = [(mod, spec)] if found else []
            if found and spec.submodule_search_locations is not None:
                # `from package import name`: name may be a submodule (looking up a.b.c imports a.b: only for a
                # package, never a module, whose import would run it)
                candidates += [(f"{mod}.{n}", _origin(f"{mod}.{n}")[0]) for n in names if n != "*"]
            for c, spec in candidates:
                origin = getattr(spec, "origin", None)
                if origin and origin.endswith(".py") and os.path.isfile(origin):
                    pkg = c if origin.endswith("__init__.py") else c.rpartition(".")[0]
                    queue.append((origin, pkg))
    return tops


def _chains(tree, aliases):
    """Attribute chains read at module level from an imported module: ``[(alias, [attr, ...], lineno)]``."""
    found = []

    def chain(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases and parts:
            return node.id, parts[::-1]
        return None

    def visit(node):
        if isinstance(node, ast.Attribute):
            c = chain(node)
            if c:
                found.append((c[0], c[1], node.lineno))
                return
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in stmt.decorator_list + stmt.args.defaults + stmt.args.kw_defaults:
                if n is not None:
                    visit(n)
        elif isinstance(stmt, ast.ClassDef):
            for n in stmt.decorator_list + stmt.bases:
                visit(n)
        elif not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            visit(stmt)
    return found


def check_script(path, root, quick=False):
    report = {"missing": sorted(m for m in collect(path, root) if not _origin(m)[1]), "broken": []}
    if report["missing"] or quick:
        return report
    tree, imports = _imports(path, "")
    aliases = {}
    name = os.path.basename(path)
    for mod, names, lineno, alias, target in imports:
        try:
            module = importlib.import_module(mod)
            for n in names:
                if n != "*" and not hasattr(module, n):
                    importlib.import_module(f"{mod}.{n}")  # a submodule not imported by its package
        except ModuleNotFoundError as e:
            report["missing"].append(e.name.split(".")[0] if e.name else mod.split(".")[0])
            continue
        except Exception as e:  # noqa: BLE001 - any failure to import is what this probe reports
            report["broken"].append({"module": mod, "where": f"{name} line {lineno}",
                                     "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            continue
        if alias:
            aliases[alias] = target
    for alias, parts, lineno in _chains(tree, aliases):
        obj, walked = importlib.import_module(aliases[alias]), aliases[alias]
        for p in parts:
            if not hasattr(obj, p):
                report["broken"].append({"module": aliases[alias], "where": f"{name} line {lineno}",
                                         "error": f"no {walked}.{p}"})
                break
            obj, walked = getattr(obj, p), f"{walked}.{p}"
    report["missing"] = sorted(set(report["missing"]))
    return report


def _version(top):
    """The version of an imported package: its ``__version__``, else its distribution's (None if neither)."""
    v = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(v, str):
        return v
    try:
        from importlib.metadata import packages_distributions, version

        dists = packages_distributions().get(top, [])
        return version(dists[0]) if dists else None
    except Exception:  # noqa: BLE001 - a version only makes the message better
        return None


def main():
    args = sys.argv[1:]
    quick = bool(args) and args[0] == "--quick"
    args = args[1:] if quick else args
    root, scripts = os.path.abspath(args[0]), args[1:]
    # as `python SCRIPT` run in the checkout sees it: the checkout first, not this directory
    sys.path[:] = [root] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != HERE]
    trainer = "missing"
    if _origin("training")[1]:
        trainer = "training"
    elif _origin("open_clip_train")[1]:
        trainer = "open_clip_train"
        sys.path.append(HERE)  # the `training` shim, as the harness will put it on PYTHONPATH
    reports = {s: check_script(os.path.join(root, s), root, quick) for s in scripts}
    if trainer == "missing":
        for r in reports.values():
            r["missing"] = sorted("open_clip_train" if m == "training" else m for m in r["missing"])
    versions = {}
    for r in reports.values():
        for b in r["broken"]:
            top = b["module"].split(".")[0]
            versions[top] = _version(top)
    print(json.dumps({"python": sys.executable, "version": sys.version.split()[0], "trainer": trainer,
                      "scripts": reports, "versions": versions}))


if __name__ == "__main__":
    main()
