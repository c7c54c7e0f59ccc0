"""``kl-filter check-uids``: validate a subset file (dtype, order, duplicates, membership in the pool)."""


def add_parser(sub) -> None:
    p = sub.add_parser("check-uids", help="validate a UID subset file")
    p.add_argument("file")
    p.add_argument("--metadata_dir", default=None, help="also check every uid is in this pool")
    p.add_argument("--no_duplicates", action="store_true", help="reject duplicated uids (allowed by DataComp)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..uids import check_uid_array, concat_uids, load_uids

    arr = load_uids(args.file)
    pool_uids = None
    if args.metadata_dir:
        from ..pool import Pool

        pool = Pool(args.metadata_dir)
        pool_uids = concat_uids(pool.read(s).uids for s in pool.shards)
    info = check_uid_array(arr, args.file, pool_uids, allow_duplicates=not args.no_duplicates)
    print(f"{args.file}: ok, {info['rows']:,} uids, {info['duplicates']:,} duplicated"
          + (f", all in the pool of {info['pool_rows']:,}" if pool_uids is not None else ""))
    return 0
