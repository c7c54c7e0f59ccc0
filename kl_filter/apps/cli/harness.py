"""``kl-filter harness``: DataComp's own resharder.py → train.py → evaluate.py for one UID file, the results table,
and DataComp's submission (``--submit``)."""

import os


def add_parser(sub) -> None:
    from kl_filter.apps.harness.checkout import SCALES

    p = sub.add_parser("harness", help="run DataComp's resharder, train.py and evaluate.py for one UID file")
    p.add_argument("--datacomp_dir", required=True, help="a checkout of DataComp (resharder.py, train.py, evaluate.py)")
    p.add_argument("--scale", required=True, choices=SCALES,
                   help="DataComp's scales, or tiny: kl-filter's CPU smoke scale (a 2-layer open_clip model, "
                        "batch 32, 320 samples seen), registered by a wrapper; DataComp is never edited")
    p.add_argument("--uids", required=True)
    p.add_argument("--shards_dir", required=True, help="the pool's downloaded webdataset shards")
    p.add_argument("--work_dir", required=True, help="WORK/shards (the reshard), WORK/train/EXP_NAME (train.py), "
                                                     "WORK/results.{md,json}; a rerun resumes")
    p.add_argument("--python", default=None,
                   help="the interpreter of DataComp's environment (default: this one); checked before any work")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="resharder.py -j")
    p.add_argument("--num_gpus", type=int, default=1, help="torch.distributed.run --nproc_per_node")
    p.add_argument("--exp_name", default=None, help="default: UIDS-file stem _ scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_data_dir", default=None,
                   help="evaluate.py --data_dir: the evaluation sets, downloaded with DataComp's download_evalsets.py")
    p.add_argument("--skip_eval", action="store_true", help="reshard and train only")
    p.add_argument("--dry_run", action="store_true", help="print the exact commands (and environment) and stop")
    s = p.add_argument_group("submission (DataComp's evaluate.py --submit; a dry run unless --yes)")
    s.add_argument("--submit", action="store_true",
                   help="evaluate and submit: evaluate.py --track filtering --samples UIDS --dataset-size N --submit")
    s.add_argument("--yes", action="store_true", help="really submit (uploads to Hugging Face and the leaderboard)")
    for flag, what in (("--method_name", "shown on the leaderboard"), ("--author", "shown on the leaderboard"),
                       ("--email", "not shown"), ("--hf_username", "not shown"), ("--hf_repo_name", "not shown"),
                       ("--writeup", "optional link, shown")):
        s.add_argument(flag, default=None, help=f"evaluate.py {flag} ({what})")
    s.add_argument("--upload_checkpoint", action="store_true", help="evaluate.py --upload_checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.apps.harness.datacomp import run_harness
    from kl_filter.apps.harness.process import Stopped
    from kl_filter.apps.harness.steps import Submission

    submission = None
    if args.submit:
        submission = Submission(args.method_name, args.author, args.email, args.hf_username, args.hf_repo_name,
                                args.writeup, args.upload_checkpoint)
    try:
        summary = run_harness(args.datacomp_dir, args.scale, args.uids, args.shards_dir, args.work_dir,
                              args.num_gpus, args.exp_name, args.seed, args.eval_data_dir, args.skip_eval,
                              args.python, args.num_workers, submission, args.yes, args.dry_run)
    except Stopped as e:
        import sys

        print(f"kl-filter: harness: {e}", file=sys.stderr)
        return 128 + e.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports a process they stopped
    if summary:
        print("  ".join(f"{k}: {v:.4f}" for k, v in summary.items()))
    return 0
