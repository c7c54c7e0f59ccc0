"""Recipes are data: one YAML file per recipe in ``baselines/``, the file name is the recipe name.

    name: clip_score        # a registered filter
    params: {arch: l14, fraction: 0.3}

A recipe argument is a path to such a file, or a bare name looked up in ``$KL_FILTER_RECIPES`` and then in
the ``baselines/`` folder of this checkout. CLI flags given beside a recipe override its params.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

from .errors import KLFilterError

RECIPES_ENV = "KL_FILTER_RECIPES"


def recipe_dirs() -> list[str]:
    dirs = [d for d in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if d]
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "baselines"))
    return dirs


@dataclass
class Recipe:
    name: str          # recipe name (file stem)
    filter: str        # registered filter name
    params: dict = field(default_factory=dict)
    path: str | None = None
    description: str = ""


def resolve(recipe: str) -> str:
    if os.path.exists(recipe):
        return recipe
    for d in recipe_dirs():
        p = os.path.join(d, recipe if recipe.endswith((".yaml", ".yml")) else recipe + ".yaml")
        if os.path.exists(p):
            return p
    raise KLFilterError(f"no such recipe (looked in {', '.join(recipe_dirs())})", recipe)


def load_recipe(recipe: str) -> Recipe:
    path = resolve(recipe)
    try:
        with open(path) as f:
            text = f.read()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise KLFilterError(f"unreadable recipe ({str(e).splitlines()[0]})", path) from e
    if not isinstance(doc, dict) or "name" not in doc:
        raise KLFilterError("a recipe is a mapping with 'name' (a filter) and optional 'params'", path)
    extra = set(doc) - {"name", "params"}
    if extra:
        raise KLFilterError(f"unknown recipe keys {sorted(extra)} (allowed: name, params)", path)
    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise KLFilterError("'params' must be a mapping", path)
    desc = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
    stem = os.path.splitext(os.path.basename(path))[0]
    return Recipe(stem, doc["name"], params, path, desc)


def list_recipes() -> list[Recipe]:
    seen, out = set(), []
    for d in recipe_dirs():
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if f.endswith(".yaml") and f[:-5] not in seen:
                    seen.add(f[:-5])
                    out.append(load_recipe(os.path.join(d, f)))
    return out
