"""``kl-filter check-uids``: validate a subset file (dtype, order, duplicates, membership in the pool) and that
its sidecar, when there is one, belongs to it (the sidecar names the file's sha256).

A uid that is not in the pool (``--metadata_dir``) is refused by default: a UID file made from this pool cannot
have one, so it means the file belongs to another pool. ``--allow_missing`` takes DataComp's behaviour instead:
its resharder warns ("N images in the subset were not found in the input!") and writes the others."""


def add_parser(sub) -> None:
    p = sub.add_parser("check-uids", help="validate a UID subset file")
    p.add_argument("file")
    p.add_argument("--metadata_dir", default=None, help="also check every uid is in this pool")
    p.add_argument("--no_duplicates", action="store_true", help="reject duplicated uids (allowed by DataComp)")
    p.add_argument("--allow_missing", action="store_true",
                   help="with --metadata_dir: warn about uids not in the pool instead of refusing the file "
                        "(DataComp's resharder warns and skips them)")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.uids import check_sidecar, check_uid_array, concat_uids, load_uids, sidecar_path

    arr = load_uids(args.file)
    side, verified = check_sidecar(args.file)  # a sidecar must belong to this very file (its sha256)
    pool_uids = None
    if args.metadata_dir:
        from kl_filter.pool import Pool

        pool = Pool(args.metadata_dir)
        pool_uids = concat_uids(pool.read(s).uids for s in pool.shards)
    info = check_uid_array(arr, args.file, pool_uids, allow_duplicates=not args.no_duplicates,
                           allow_missing=args.allow_missing)
    if side is not None and verified and side["uids_file"].get("rows") not in (None, info["rows"]):
        raise KLFilterError(f"the sidecar counts {side['uids_file']['rows']:,} uids, the file holds {info['rows']:,}",
                            sidecar_path(args.file))
    pair = ("; sidecar matches (sha256)" if verified else
            "; sidecar not verified (written before sidecars named their UID file)" if side is not None else
            "; no sidecar")
    if info.get("missing"):
        import logging

        logging.getLogger(__name__).warning(
            "%s: %s uids are not in the pool (first: %s): DataComp's resharder skips them (--allow_missing)",
            args.file, f"{info['missing']:,}", info["first_missing"])
    in_pool = ("" if pool_uids is None else f", all in the pool of {info['pool_rows']:,}" if not info["missing"] else
               f", {info['rows'] - info['missing']:,} in the pool of {info['pool_rows']:,}, {info['missing']:,} not")
    print(f"{args.file}: ok, {info['rows']:,} uids, {info['duplicates']:,} duplicated" + in_pool + pair)
    return 0
