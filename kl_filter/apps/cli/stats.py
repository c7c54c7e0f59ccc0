"""``kl-filter stats``: the reference-statistics pass (samples, mean, covariance) for the KL scores."""

import os

from kl_filter.apps.cli.common import add_engine_arguments, engine_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("stats", help="compute reference statistics for the KL scores")
    p.add_argument("--metadata_dir", required=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--arch", nargs="+", default=["b32", "l14"], choices=["b32", "l14"])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sample_ratio", type=float, default=None, help="share of caption-filtered rows sampled (default 0.002)")
    g.add_argument("--num_samples", type=int, default=None, help="reference samples per modality")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_caption_filter", action="store_true", help="use every row, not only caption-filtered ones")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no_moments", action="store_true", help="samples only (enough for D_KL and D_KLR)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]: where the float64 moments are computed")
    p.add_argument("--overwrite", action="store_true", help="ignore partial results of an interrupted run")
    p.add_argument("--no_progress", action="store_true")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.core.outputs import In, Out, check
    from kl_filter.pool import Pool
    from kl_filter.stats.reference import compute_stats
    from kl_filter.stats.statsfile import parts_dir_for, save_stats
    from kl_filter.core.progress import tqdm_progress

    check([Out(args.out, "--out"), Out(parts_dir_for(args.out), "--out's partials", "dir", marker="parts")],
          [In(args.metadata_dir, "--metadata_dir")])
    pool = Pool(args.metadata_dir)
    stats = compute_stats(pool, archs=args.arch, sample_ratio=args.sample_ratio, num_samples=args.num_samples,
                          seed=args.seed, use_caption_filter=not args.no_caption_filter,
                          num_workers=args.num_workers, progress=None if args.no_progress else tqdm_progress,
                          parts_dir=parts_dir_for(args.out), reuse_parts=not args.overwrite,
                          moments=not args.no_moments, device=args.device,
                          engine=engine_from_args(args))
    save_stats(args.out, stats)
    print(f"stats: {int(stats['filtered_rows']):,} of {int(stats['pool_rows']):,} rows pass the caption filter; "
          f"{int(stats['num_samples']):,} samples per modality (seed {args.seed}) -> {args.out}")
    return 0
