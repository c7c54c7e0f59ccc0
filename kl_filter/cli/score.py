"""``kl-filter score``: per-shard score files with the KL-family columns ``{mode}_{arch}_{target}``."""

import os

from .common import add_engine_arguments, engine_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="compute KL-family score columns for every shard")
    p.add_argument("--metadata_dir", required=True)
    p.add_argument("--stats", required=True, help="statistics .npz from `kl-filter stats`")
    p.add_argument("--out", required=True, help="scores directory: <shard>.parquet per shard")
    p.add_argument("--modes", nargs="+", default=["kl", "kl_reverse", "centered", "whitened"],
                   choices=["kl", "kl_reverse", "centered", "whitened"])
    p.add_argument("--arch", nargs="+", default=["b32", "l14"], choices=["b32", "l14"])
    p.add_argument("--target", nargs="+", default=["txt", "img"], choices=["txt", "img"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--logit_scale", type=float, default=100.0)
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true", help="recompute even valid existing score files")
    p.add_argument("--no_progress", action="store_true")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..pool import Pool
    from ..scores.stage import all_columns, score_pool
    from ..stats.reference import load_stats
    from ..progress import tqdm_progress

    t = time.perf_counter()
    pool = Pool(args.metadata_dir)
    stats = load_stats(args.stats, pool, archs=args.arch, moments=bool(set(args.modes) & {"centered", "whitened"}))
    specs = all_columns(args.modes, args.arch, args.target)
    counts = score_pool(pool, stats, args.out, specs, args.logit_scale, args.device, args.num_workers,
                        args.overwrite, None if args.no_progress else tqdm_progress, engine=engine_from_args(args))
    print(f"score: {len(specs)} columns for {len(pool)} shards ({counts['computed']} computed, "
          f"{counts['reused']} reused) in {time.perf_counter() - t:.2f}s -> {args.out}")
    return 0
