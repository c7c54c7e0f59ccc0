"""``kl-filter run RECIPE``: run a recipe (YAML in ``baselines/``); filter flags given beside it override its params."""

from kl_filter.apps.cli.common import add_run_arguments, filter_params_from_cli, print_summary, run_context


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a recipe (baselines/NAME.yaml) and write its UID file", allow_abbrev=False,
                       description="Run a recipe; its filter's parameters may be overridden by flags.")
    p.add_argument("recipe", help="recipe file or name (e.g. clip_score_l14_30)")
    add_run_arguments(p)
    p.set_defaults(func=run, filter_params=True)


def run(args) -> int:
    from kl_filter.filters import build_filter, get_filter_class
    from kl_filter.core.params import validate
    from kl_filter.recipes import load_recipe
    from kl_filter.core.outputs import In, Out, check
    from kl_filter.runner import run_filter

    recipe = load_recipe(args.recipe)
    check([Out(args.save_path, "--save_path"), Out(args.save_path + ".json", "--save_path's sidecar")],
          [In(recipe.path, "recipe")])  # the rest is checked by the run itself
    # the file's own keys are checked as written (errors name the file), then the flags override them, and only
    # the merged parameters build the filter (a recipe may leave out what its flags supply: --centroids ...)
    cls = get_filter_class(recipe.filter)
    validate(cls, recipe.params, recipe.filter, recipe.path, partial=True)
    given = filter_params_from_cli(recipe.filter, args.extra, recipe.params)
    flt = build_filter(recipe.filter, cls.with_flags(recipe.params, given), source=None if given else recipe.path)
    summary = run_filter(flt, args.metadata_dir, args.save_path, run_context(args), recipe=recipe.name)
    print_summary(summary, args.save_path)
    return 0
