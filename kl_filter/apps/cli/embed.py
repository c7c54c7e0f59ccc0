"""``kl-filter embed``: DataComp-format metadata (parquet + npz) for your own webdataset shards (BYOD)."""


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed webdataset shards into DataComp metadata (parquet + npz) with a local "
                                     "open_clip checkpoint")
    p.add_argument("--shards_dir", required=True, help="directory of webdataset .tar shards (.jpg/.png, .txt, .json "
                                                       "with \"uid\"); a path or fsspec URL")
    p.add_argument("--out", required=True, help="metadata directory; an existing one gets the new family added")
    p.add_argument("--model", required=True, help="open_clip architecture, e.g. ViT-B-32, or one from --model_config")
    p.add_argument("--checkpoint", required=True, help="LOCAL checkpoint file (state dict, or open_clip_train's "
                                                       "{'state_dict': ...}); pretrained tags are not downloaded")
    p.add_argument("--family", default=None, help="npz key / column prefix (default from --model: ViT-B-32 -> b32, "
                                                  "ViT-L-14 -> l14, else the lowercased alphanumerics)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--model_config", action="append", default=None,
                   help="json model config (file or directory) registered with open_clip.add_model_config; repeatable")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.pool.embed import embed_shards
    from kl_filter.core.outputs import In, Out, check
    from kl_filter.core.progress import NoProgress, tqdm_progress

    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.fspath import is_local

    if not is_local(args.out):
        raise KLFilterError("--out must be a local directory", args.out)
    # --out may be an existing pool (a family is added to its files), so any directory; never the inputs
    check([Out(args.out, "--out", "dir")],
          [In(args.shards_dir, "--shards_dir"), In(args.checkpoint, "--checkpoint"),
           *[In(c, "--model_config") for c in args.model_config or []]])

    s = embed_shards(args.shards_dir, args.out, args.model, args.checkpoint, family=args.family,
                     batch_size=args.batch_size, device=args.device, model_config=args.model_config,
                     progress=NoProgress if args.no_progress else tqdm_progress)
    created = sum(m == "created" for m in s["files"].values())
    print(f"embed: {s['rows']:,} samples in {s['shards']} shard(s) -> {args.out} as {s['family']}_img/"
          f"{s['family']}_txt ({s['dim']}-d) and clip_{s['family']}_similarity_score; {created} shard(s) created, "
          f"{s['shards'] - created} extended; {s['seconds']:.1f}s on {s['device']}")
    print(f"embed: {s['family']} logit scale {s['logit_scale']:.6g}"
          + (f", logit bias {s['logit_bias']:.6g}" if s["logit_bias"] is not None else "")
          + f" recorded in {s['manifest']}")
    return 0
