"""``kl-filter track``: the offline tiny track (pool → teachers → filters → reshard → students → evaluation)."""

import os

from kl_filter.core.layouts import register_layout

# the work directory is deleted at the end (without --keep_work): only its marker proves it is the track's
register_layout("track")


def add_parser(sub) -> None:
    p = sub.add_parser("track", help="run every offline recipe end to end on a generated tiny pool (CPU, no network) "
                                     "and report the students' zero-shot and retrieval scores")
    p.add_argument("--scale", default="tiny", choices=["tiny"], help="only 'tiny' runs offline")
    p.add_argument("--out", required=True, help="output directory: results.md, results.csv, results.png, run.json")
    p.add_argument("--quick", action="store_true", help="smoke run: small pool, short training, 1 seed, "
                                                        "recipes no_filter, laion2b, clip_score_l14_30, kl_l14_txt_25")
    p.add_argument("--seeds", type=int, default=None, help="student training seeds (default 3, or 1 with --quick)")
    p.add_argument("--recipes", nargs="+", default=None, help="recipe names or paths (default: every recipe in "
                                                              "baselines/ that runs offline)")
    p.add_argument("--pool_seed", type=int, default=0, help="seed of the pool, the teachers and the filters")
    p.add_argument("--kl_num_samples", type=int, default=None,
                   help="reference samples N per modality of the KL recipes (default 2000, or 250 with --quick: "
                        "about 1/6 of the caption-filtered rows, so few rows reach the log N ceiling)")
    p.add_argument("--negcliploss_batch_size", type=int, default=None,
                   help="rows per random batch of the negCLIPLoss recipes (default 2000, or 250 with --quick: 1/8 of "
                        "the pool, 8 batches per pass; the filter's 32768 would be one batch, the whole pool)")
    p.add_argument("--num_workers", type=int, default=min(2, os.cpu_count() or 1), help="workers for the filters")
    p.add_argument("--train_workers", type=int, default=None,
                   help="training processes, one torch thread each (default: min(2, cores))")
    p.add_argument("--work_dir", default=None, help="intermediate files (default OUT/work)")
    p.add_argument("--keep_work", action="store_true", help="keep the pool, metadata, teachers and reshards")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iwl", dest="iwl", action="store_true", default=None,
                   help="run the IWL experiment (importance weights toward the handwritten digits: uniform, "
                        "IWL-resampled and IWL-weighted students per seed, OUT/iwl.md); the default without --quick")
    g.add_argument("--no_iwl", dest="iwl", action="store_false",
                   help="skip the IWL experiment (the default with --quick)")
    p.add_argument("--iwl_scales", default=None,
                   help="the IWL experiment's temperatures a, comma-separated numbers or pool (the l14 teacher's "
                        "learned scale), e.g. 10,pool,2.71: per a a weights file, a resampled subset and four "
                        "students per seed (default 10, the IWL authors' a)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from kl_filter.apps.tiny.track import check_options, run_track
    from kl_filter.core.outputs import In, Out, check, claim_dir

    check_options(args.seeds, args.kl_num_samples, args.negcliploss_batch_size, args.iwl_scales)  # before any dir
    work = args.work_dir or os.path.join(args.out, "work")
    # the work directory is deleted at the end (without --keep_work): only one this tool made
    check([Out(args.out, "--out", "dir"), Out(work, "--work_dir", "dir", marker="track", replace=True)],
          [In(r, "--recipes") for r in args.recipes or [] if os.path.exists(r)])
    claim_dir(work, "track")

    rec = run_track(args.out, scale=args.scale, quick=args.quick, seeds=args.seeds, recipes=args.recipes,
                    pool_seed=args.pool_seed, keep_work=args.keep_work, work_dir=args.work_dir,
                    num_workers=args.num_workers, train_workers=args.train_workers,
                    kl_num_samples=args.kl_num_samples, negcliploss_batch_size=args.negcliploss_batch_size,
                    iwl=args.iwl, iwl_scales=args.iwl_scales, argv=["kl-filter", *sys.argv[1:]])
    print(f"track: {len(rec['results'])} recipe(s) x {len(rec['seeds'])} seed(s) in {rec['wall_time_s'] / 60:.1f} min"
          f" -> {os.path.join(args.out, 'results.md')}"
          + (f"; skipped: {', '.join(s['recipe'] for s in rec['skipped'])}" if rec["skipped"] else ""))
    for r in rec["results"]:
        print(f"  {r['recipe']:<36} {r['subset_size']:>7,} ({100 * r['subset_share']:5.1f}%)  "
              f"average {r['average_mean']:.3f} ± {r['average_std']:.3f}")
    if rec.get("iwl"):
        print(f"track: IWL toward the digits -> {os.path.join(args.out, 'iwl.md')}")
        uni = rec["iwl"]["students"]["uniform"]
        print(f"  {'uniform':<36} digits macro-F1 {uni['zs_digits_f1_mean']:.3f} ± {uni['zs_digits_f1_std']:.3f}")
        for sc in rec["iwl"]["scales"]:
            for name, st in sc["students"].items():
                print(f"  a = {sc['logit_scale']:<6.4g} {name:<25} digits macro-F1 {st['zs_digits_f1_mean']:.3f} ± "
                      f"{st['zs_digits_f1_std']:.3f}")
    return 0
