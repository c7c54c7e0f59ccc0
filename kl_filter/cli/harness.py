"""``kl-filter harness``: DataComp's own reshard → train → evaluate for one UID file, and the results table."""


def add_parser(sub) -> None:
    p = sub.add_parser("harness", help="run DataComp's resharder, train.py and evaluate.py for one UID file")
    p.add_argument("--datacomp_dir", required=True, help="a checkout of DataComp (resharder.py, train.py, evaluate.py)")
    p.add_argument("--scale", required=True, choices=["small", "medium", "large", "xlarge"])
    p.add_argument("--uids", required=True)
    p.add_argument("--shards_dir", required=True, help="the pool's downloaded webdataset shards")
    p.add_argument("--work_dir", required=True)
    p.add_argument("--num_gpus", type=int, default=1)
    p.add_argument("--exp_name", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_data_dir", default=None, help="evaluate.py --data_dir (downloaded evaluation sets)")
    p.add_argument("--dry_run", action="store_true", help="print the exact commands and stop")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..harness.datacomp import run_harness

    summary = run_harness(args.datacomp_dir, args.scale, args.uids, args.shards_dir, args.work_dir, args.num_gpus,
                          args.exp_name, args.seed, args.eval_data_dir, args.dry_run)
    if summary:
        print("  ".join(f"{k}: {v:.4f}" for k, v in summary.items()))
    return 0
