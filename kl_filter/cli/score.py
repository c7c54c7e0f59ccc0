"""``kl-filter score``: per-shard score files with the KL-family columns ``{mode}_{arch}_{target}`` (the KL
scorer run by the score stage, as ``select`` runs it for a KL filter: the files are shared and reused)."""

import os

from ..errors import KLFilterError

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
    p.add_argument("--logit_scale", type=float, default=None,
                   help="CLIP logit scale a of D_KL/D_KLR (default: the temperature each family's embedding model "
                        "learned, recorded in the pool's embeddings.json; else OpenAI CLIP's 100)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true", help="recompute even valid existing score files")
    p.add_argument("--no_progress", action="store_true")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..outputs import In, Out, check
    from ..pool import Pool
    from ..scores.kl import KLScorer
    from ..scores.stage import run_scores
    from ..stats.reference import load_stats

    t = time.perf_counter()
    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    check([Out(args.out, "--out", "dir", marker="scores")],
          [In(args.metadata_dir, "--metadata_dir"), In(args.stats, "--stats")])
    pool = Pool(args.metadata_dir)
    stats = load_stats(args.stats, pool, archs=args.arch, moments=bool(set(args.modes) & {"centered", "whitened"}))
    scorers = [KLScorer(args.modes, a, t_, args.logit_scale) for a in args.arch for t_ in args.target]
    done = run_scores(pool, scorers, stats, args.out, engine_from_args(args), args.device, args.overwrite)
    print(f"score: {len(done.names)} columns for {len(pool)} shards ({done.computed} computed, "
          f"{done.reused} reused) in {time.perf_counter() - t:.2f}s -> {args.out}")
    for a in args.arch:
        s = next(s for s in scorers if s.arch == a)
        if {"kl", "kl_reverse"} & set(args.modes):
            print(f"score: {a} logit scale {s.scale:g} ({s.temperature.source})")
    return 0
