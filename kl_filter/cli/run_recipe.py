"""``kl-filter run RECIPE``: run a recipe (YAML in ``baselines/``); flags given beside it override its params."""

from .common import add_run_arguments, build_filter_from_params, print_summary, run_context
from .select import add_filter_flags, given_filter_params


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a recipe (baselines/NAME.yaml) and write its UID file")
    p.add_argument("recipe", help="recipe file or name (e.g. clip_score_l14_30)")
    add_run_arguments(p)
    add_filter_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..recipes import load_recipe
    from ..selection.runner import run_filter

    recipe = load_recipe(args.recipe)
    params = {**recipe.params, **given_filter_params(args)}
    flt = build_filter_from_params(recipe.filter, params)
    summary = run_filter(flt, args.metadata_dir, args.save_path, run_context(args), recipe=recipe.name)
    print_summary(summary, args.save_path)
    return 0
