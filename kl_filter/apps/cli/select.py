"""``kl-filter select``: run one registered filter over a pool and write its UID file (DataComp's ``baselines.py``).

The filter's own flags come from its ``__init__`` signature (``kl-filter list-filters -v`` lists them): only the
flags a user gives reach the filter, so a flag it does not take is an error that names it, as DataComp's
``check_args`` does (``--fraction not used by --name laion2b``).
"""

from __future__ import annotations

from kl_filter.apps.cli.common import add_run_arguments, filter_params_from_cli, print_summary, run_context


def add_parser(sub) -> None:
    p = sub.add_parser("select", help="run one filter over a pool and write its UID file", allow_abbrev=False,
                       description="Run one filter (DataComp baseline, KL filter or plugin) and write the subset .npy. "
                                   "Filter parameters are flags too: `kl-filter list-filters -v` lists them.")
    p.add_argument("--name", required=True, help="filter name (kl-filter list-filters)")
    add_run_arguments(p)
    p.set_defaults(func=run, filter_params=True)


def run(args) -> int:
    from kl_filter.filters import build_filter
    from kl_filter.runner import run_filter

    flt = build_filter(args.name, filter_params_from_cli(args.name, args.extra))
    summary = run_filter(flt, args.metadata_dir, args.save_path, run_context(args))
    print_summary(summary, args.save_path)
    return 0
