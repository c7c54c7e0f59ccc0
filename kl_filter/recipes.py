"""Recipes are data: one YAML file per recipe in ``kl_filter/baselines/``, the file name is the recipe name. Two forms:

    name: clip_score        # a registered filter or scorer (a scorer: a top cut on its column)
    params: {arch: l14, fraction: 0.3}

    cuts:                   # the generic filter's list of cuts (kl_filter/filters/cuts.py)
      - {score: {name: negcliploss, params: {arch: l14}}, fraction: 0.3}
      - {score: {name: normsim, params: {arch: l14, norm: inf}}, fraction: 0.2, then: pool}

A recipe argument is a path to such a file, or a bare name looked up in ``$KL_FILTER_RECIPES``, then in the
package's own ``kl_filter/baselines/`` (package data, like open_clip's model configs: no build step; the
repository's top-level ``baselines`` is a link to it). CLI flags given beside a recipe override its params.
:func:`shipped_recipes` names the recipes an installation must have (``kl-filter demo`` refuses to run without).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field

from kl_filter.core.errors import KLFilterError

RECIPES_ENV = "KL_FILTER_RECIPES"
DISTRIBUTION = "kl-filter"
RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baselines")  # package data


_warned: set = set()  # $KL_FILTER_RECIPES entries already warned about (one line each per process)


def recipe_dirs() -> list[str]:
    """Where bare recipe names are looked up, in order: ``$KL_FILTER_RECIPES``, then ``kl_filter/baselines/``.
    Empty entries (``::``) are skipped; an entry that is not a directory (missing, a file, a FIFO: never opened)
    is skipped with one warning, since a recipe there would otherwise be silently replaced by a shipped one."""
    dirs = []
    for d in os.environ.get(RECIPES_ENV, "").split(os.pathsep):
        if not d:
            continue
        try:
            mode = os.stat(d).st_mode
            what = None if stat.S_ISDIR(mode) else "is not a directory"
        except FileNotFoundError:
            what = "does not exist"
        except OSError as e:
            what = f"cannot be read ({e.strerror or e})"
        if what is None:
            dirs.append(d)
        elif d not in _warned:
            _warned.add(d)
            logging.getLogger(__name__).warning("$%s entry %r %s: skipped", RECIPES_ENV, d, what)
    if os.path.isdir(RECIPES_DIR):
        dirs.append(RECIPES_DIR)
    return dirs


def shipped_recipes() -> list[str]:
    """The recipe names kl-filter ships: the ``kl_filter/baselines/*.yaml`` its installation record lists (a
    regular install: so a file lost since is still named), and those in the folder (an editable install)."""
    from importlib.metadata import files

    names = {f[:-5] for f in os.listdir(RECIPES_DIR) if f.endswith(".yaml")} if os.path.isdir(RECIPES_DIR) else set()
    try:
        record = files(DISTRIBUTION) or []
    except Exception:  # noqa: BLE001 - not installed, or an unreadable RECORD: the folder's names are what we have
        record = []
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for f in record:
        if f.parent.as_posix() == "kl_filter/baselines" and f.suffix == ".yaml" and \
                os.path.abspath(f.locate()).startswith(here + os.sep):  # this installation's record only
            names.add(f.stem)
    return sorted(names)


def _looked_in() -> str:
    dirs = recipe_dirs()
    return (", ".join(dirs) if dirs else
            f"nowhere: this installation has no kl_filter/baselines/ (reinstall kl-filter) and ${RECIPES_ENV} is unset")


@dataclass
class Recipe:
    name: str          # recipe name (file stem)
    filter: str        # registered filter name
    params: dict = field(default_factory=dict)
    path: str | None = None
    description: str = ""

    def names(self) -> list[str]:
        """Every filter and scorer the recipe names (its own, and its cuts')."""
        cuts = self.params.get("cuts")
        specs = [c.get(k) for c in (cuts if isinstance(cuts, list) else []) if isinstance(c, dict)
                 for k in ("filter", "score")]
        names = [s.get("name") if isinstance(s, dict) else s for s in specs]
        return [self.filter, *(n for n in names if isinstance(n, str))]


def resolve(recipe: str) -> str:
    """The file of a recipe path or bare name. ``lexists``: a dangling link or a symlink loop is found, and the
    reading layer says what it is, rather than "no such recipe"."""
    if not recipe:
        raise KLFilterError("a recipe is a YAML file or a recipe name, got an empty string")
    if os.path.lexists(recipe):
        return recipe
    for d in recipe_dirs():
        p = os.path.join(d, recipe if recipe.endswith((".yaml", ".yml")) else recipe + ".yaml")
        if os.path.lexists(p):
            return p
    raise KLFilterError(f"no such recipe (looked in {_looked_in()})", recipe)


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few lines of YAML


def load_recipe(recipe: str) -> Recipe:
    """The recipe file (or shipped name) ``recipe``, read by :mod:`kl_filter.core.inputs`: a regular UTF-8 file of at
    most 1 MiB, YAML of bounded depth whose aliases neither cycle nor expand past a bound; then its structure."""
    from kl_filter.core.inputs import parse_yaml, read_text

    path = resolve(recipe)
    text = read_text(path, "recipe", MAX_RECIPE_BYTES)
    doc = parse_yaml(text, path, "recipe")
    if isinstance(doc, dict) and set(doc) == {"cuts"}:
        doc = {"name": "cuts", "params": {"cuts": doc["cuts"]}}
    elif isinstance(doc, dict) and doc.get("name") == "all_of" and isinstance(doc.get("params"), dict):
        members = doc["params"].get("filters")  # the earlier form of a list of whole-pool cuts
        doc = {"name": "cuts", "params": {"cuts": [{"filter": m} for m in members] if isinstance(members, list)
                                          else members}}
    if not isinstance(doc, dict) or "name" not in doc:
        raise KLFilterError("a recipe is a mapping with 'name' (a filter) and optional 'params', or with 'cuts'", path)
    extra = set(doc) - {"name", "params"}
    if extra:
        raise KLFilterError(f"unknown recipe keys {sorted(extra)} (allowed: name, params; or cuts alone)", path)
    if not isinstance(doc["name"], str) or not doc["name"]:  # `name: [clip_score]` was a TypeError traceback
        raise KLFilterError(f"'name' must be a filter name (a string), got {doc['name']!r:.80}", path)
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise KLFilterError("'params' must be a mapping", path)
    odd = [k for k in params if not isinstance(k, str)]
    if odd:
        raise KLFilterError(f"'params' keys must be parameter names, got {odd[0]!r:.80}", path)
    desc = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
    stem = os.path.splitext(os.path.basename(path))[0]
    return Recipe(stem, doc["name"], params, path, desc)


def list_recipes() -> list[Recipe]:
    seen, out = set(), []
    for d in recipe_dirs():
        try:
            entries = sorted(os.listdir(d))
        except OSError as e:
            raise KLFilterError(f"cannot list the recipe directory ({e.strerror or e})", d) from None
        for f in entries:
            if f.endswith(".yaml") and f[:-5] not in seen:
                seen.add(f[:-5])
                out.append(load_recipe(os.path.join(d, f)))
    return out
