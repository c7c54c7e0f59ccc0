"""``kl-filter reshard``: keep a UID subset's samples of webdataset tars (DataComp's resharder semantics)."""

import os


def add_parser(sub) -> None:
    p = sub.add_parser("reshard", help="reshard webdataset tars to the samples of a UID file")
    p.add_argument("--shards_dir", required=True,
                   help="input {:08d}.tar shards (json carries the uid); a path or fsspec URL")
    p.add_argument("--uids", required=True, help="subset .npy (u8,u8); duplicated uids upsample")
    p.add_argument("--out", required=True)
    p.add_argument("--shard_size", type=int, default=10_000)
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output of an earlier reshard in --out (refused without this flag)")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.apps.harness.reshard import reshard
    from kl_filter.core.outputs import In, Out, check
    from kl_filter.core.progress import NoProgress, tqdm_progress

    out = args.out.rstrip("/") or args.out
    check([Out(args.out, "--out", "dir", marker="reshard"), Out(f"{out}/sample_ids.npy", "--out's sample_ids.npy"),
           Out(f"{out}/meta.json", "--out's meta.json")],
          [In(args.shards_dir, "--shards_dir"), In(args.uids, "--uids")])

    meta = reshard(args.shards_dir, args.uids, args.out, args.num_workers, args.shard_size,
                   NoProgress if args.no_progress else tqdm_progress, overwrite=args.overwrite)
    print(f"reshard: {meta['output_count']:,} samples in {meta['output_shard_count']} shards -> {args.out} "
          f"({meta['subset_not_found']:,} subset uids not found, {len(meta['missing_shards'])} input shards missing, "
          f"{len(meta['failed_shards'])} unreadable, {meta['skipped_samples']['total']:,} malformed samples skipped)")
    return 0
