"""Pieces shared by the commands: progress bars, filter construction from flags, run context."""

from __future__ import annotations

import inspect
import os

from ..errors import KLFilterError
from ..filters import get_filter_class
from ..progress import NoProgress, tqdm_progress


def build_filter_from_params(name: str, params: dict, given_flags: set[str] | None = None):
    """Instantiate filter ``name`` with ``params``; a flag the filter does not take is a one-line error."""
    cls = get_filter_class(name)
    own_init = cls.__init__ is not object.__init__
    sig = inspect.signature(cls.__init__) if own_init else inspect.Signature()
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in params if k not in sig.parameters and not accepts_any]
    if unknown:
        flags = ", ".join(f"--{k}" for k in unknown)
        raise KLFilterError(f"{flags} not used by --name {name} (it takes: "
                            f"{', '.join('--' + p for p in sig.parameters if p != 'self') or 'no options'})")
    try:
        return cls(**params)
    except TypeError as e:
        raise KLFilterError(f"--name {name}: {e}") from e


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


def engine_from_args(args):
    from ..engines import get_engine

    return get_engine(args.engine, args.num_workers, NoProgress if args.no_progress else tqdm_progress,
                      args.ray_address)


def run_context(args):
    from ..selection.runner import RunContext

    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    return RunContext(num_workers=args.num_workers, seed=args.seed, device=args.device, scores_dir=args.scores_dir,
                      stats=args.stats, overwrite=args.overwrite,
                      progress=NoProgress if args.no_progress else tqdm_progress,
                      engine=args.engine, ray_address=args.ray_address)


def print_summary(summary: dict, save_path: str) -> None:
    thr = [f"{r['column']}>={r['computed_threshold']:.6g}" for r in summary["rules"] if "computed_threshold" in r]
    print(f"{summary['name']}: kept {summary['kept']:,} of {summary['pool_rows']:,} "
          f"({100 * summary['kept_share']:.2f}%){' ' + ' '.join(thr) if thr else ''} "
          f"in {summary['timings']['total_s']:.2f}s -> {save_path}")
