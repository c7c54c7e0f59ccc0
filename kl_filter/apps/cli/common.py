"""Pieces shared by the commands: run flags, filter parameters from flags, run context, the summary line."""

from __future__ import annotations

import argparse
import os

from kl_filter.core.errors import KLFilterError
from kl_filter.filters import get_filter_class
from kl_filter.core.progress import NoProgress, tqdm_progress


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one :class:`KLFilterError` line (no usage dump)."""

    def error(self, message):
        raise KLFilterError(message)


def parse_flags(prog: str, extra: list[str], params: list) -> dict:
    """The values of ``params`` given among ``extra`` (what the command's own flags left), converted by their declared
    types; a flag none of them takes is one line naming it."""
    from kl_filter.core.params import add_arguments, from_args

    parser = _OneLineParser(prog=f"kl-filter {prog}", add_help=False, allow_abbrev=False)
    declared = add_arguments(parser, params, f"{prog} parameters")
    args, unknown = parser.parse_known_args(extra)
    if unknown:
        flags = [u.split("=")[0] for u in unknown if u.startswith("-")] or unknown
        takes = ", ".join(p.flag for p in declared) or "no options"
        raise KLFilterError(f"{', '.join(flags)} not used by {prog} (it takes: {takes})")
    return from_args(args, declared)


def filter_params_from_cli(name: str, extra: list[str], recipe_params: dict | None = None) -> dict:
    """The parameters of filter ``name`` given on the command line, by the types of the filter's ``__init__``
    signature (or, for a cuts recipe, of its cuts' scorers, filters and rules: ``recipe_params``)."""
    return parse_flags(f"--name {name}", extra, get_filter_class(name).flag_params(recipe_params or {}))


def add_run_arguments(p) -> None:
    """Flags every selecting command shares (DataComp's names where DataComp has one)."""
    p.add_argument("--metadata_dir", required=True, help="directory (local or fsspec URL) of <shard>.parquet + <shard>.npz")
    p.add_argument("--save_path", required=True, help="output .npy of sorted u8,u8 uids (a .json sidecar is written beside it)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="parallel shards (default: cores)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (recorded in the sidecar)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where scores are computed")
    p.add_argument("--scores_dir", default=None, help="per-shard score parquet files: read where complete, written where not")
    p.add_argument("--stats", default=None, help="reference statistics .npz (computed on the way when absent)")
    p.add_argument("--overwrite", action="store_true", help="recompute statistics and scores even if present")
    add_engine_arguments(p)
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def add_engine_arguments(p) -> None:
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local threads/processes, or Ray tasks (pip install 'kl-filter[ray]')")
    p.add_argument("--ray_address", default=None, help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--task_timeout", type=float, default=None, metavar="SECONDS",
                   help="stop a task (one shard or batch) running longer, naming the plugin it was in (default: none)")


def engine_from_args(args):
    from kl_filter.engines import get_engine

    if args.num_workers < 1:  # `stats --num_workers 0` ran with one worker, while select refused it
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    return get_engine(args.engine, args.num_workers, NoProgress if args.no_progress else tqdm_progress,
                      args.ray_address, args.task_timeout)


def run_context(args):
    from kl_filter.runner import RunContext

    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    if not 0 <= args.seed < 2**63:
        raise KLFilterError(f"--seed must be in [0, 2**63), got {args.seed}")
    return RunContext(num_workers=args.num_workers, seed=args.seed, device=args.device, scores_dir=args.scores_dir,
                      stats=args.stats, overwrite=args.overwrite,
                      progress=NoProgress if args.no_progress else tqdm_progress,
                      engine=args.engine, ray_address=args.ray_address, task_timeout=args.task_timeout)


def print_summary(summary: dict, save_path: str) -> None:
    thr = [f"{r['column']}{'<=' if r.get('reverse') else '>='}{r['computed_threshold']:.6g}"  # what each rule keeps
           for r in summary["rules"] if "computed_threshold" in r]
    distinct = summary.get("kept_distinct", summary["kept"])
    kept = f"kept {distinct:,} of {summary['pool_rows']:,} ({100 * distinct / max(summary['pool_rows'], 1):.2f}%)"
    if distinct != summary["kept"]:  # a Resample rule: the file repeats uids
        kept = f"drew {summary['kept']:,} entries ({distinct:,} distinct uids of {summary['pool_rows']:,})"
    print(f"{summary['name']}: {kept}{' ' + ' '.join(thr) if thr else ''} "
          f"in {summary['timings']['total_s']:.2f}s -> {save_path}")
