"""``kl-filter synth-pool OUT_DIR``: a synthetic DataComp-format pool (see :mod:`kl_filter.pool.synth`)."""


def add_parser(sub) -> None:
    p = sub.add_parser("synth-pool", help="write a synthetic DataComp-format metadata pool")
    p.add_argument("out_dir")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mismatch", type=float, default=0.25, help="share of captions from another concept")
    p.add_argument("--generic", type=float, default=0.08, help="share of generic captions ('image', 'IMG_2041.jpg')")
    p.add_argument("--non_english", type=float, default=0.12, help="share of non-English captions")
    p.add_argument("--compress", action="store_true", help="zip-compressed npz (np.savez_compressed)")
    p.add_argument("--truth", action="store_true", help="also write synth_truth/<shard>.parquet (uid, category)")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from kl_filter.core.outputs import Out, check
    from kl_filter.pool.synth import synth_pool
    from kl_filter.core.progress import NoProgress, tqdm_progress

    check([Out(args.out_dir, "out_dir", "dir", marker="pool")], [])

    bar = (NoProgress if args.no_progress else tqdm_progress)(desc="synth-pool", total=args.shards)
    t = time.perf_counter()
    try:
        m = synth_pool(args.out_dir, rows=args.rows, shards=args.shards, seed=args.seed, mismatch=args.mismatch,
                       generic=args.generic, non_english=args.non_english, compress=args.compress,
                       num_workers=args.num_workers, progress=lambda i: bar.update(1), truth=args.truth)
    finally:
        bar.close()
    print(f"synth-pool: {m['rows']:,} rows in {m['shards']} shards (seed {m['seed']}) in "
          f"{time.perf_counter() - t:.1f}s -> {args.out_dir}  {m['counts']}")
    return 0
