"""``kl-filter run RECIPE``: run a recipe (YAML in ``baselines/``); filter flags given beside it override its params."""

from .common import add_run_arguments, filter_params_from_cli, print_summary, run_context


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a recipe (baselines/NAME.yaml) and write its UID file", allow_abbrev=False,
                       description="Run a recipe; its filter's parameters may be overridden by flags.")
    p.add_argument("recipe", help="recipe file or name (e.g. clip_score_l14_30)")
    add_run_arguments(p)
    p.set_defaults(func=run, filter_params=True)


def run(args) -> int:
    from ..filters import build_filter
    from ..recipes import load_recipe
    from ..selection.runner import run_filter

    recipe = load_recipe(args.recipe)
    flt = build_filter(recipe.filter, recipe.params, source=recipe.path)  # the file's own keys, checked as written
    given = filter_params_from_cli(recipe.filter, args.extra)
    if given:
        flt = build_filter(recipe.filter, {**recipe.params, **given})
    summary = run_filter(flt, args.metadata_dir, args.save_path, run_context(args), recipe=recipe.name)
    print_summary(summary, args.save_path)
    return 0
