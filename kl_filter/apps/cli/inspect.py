"""``kl-filter inspect``: an HTML report of the score columns and of what the chosen recipes keep."""

from __future__ import annotations

import os


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="write an HTML report: score distributions, examples, n-grams, overlaps",
                       description="Score histograms with each recipe's threshold, top and bottom examples, the "
                                   "paper's n-gram decile analysis, correlations, the overlap of the recipes' "
                                   "subsets and, for SemDeDup columns in --scores_dir, cluster sizes, kept share "
                                   "against eps and duplicate pairs, as REPORT_DIR/index.html (+ figures.json, "
                                   "plots/, sample.parquet).")
    p.add_argument("--metadata_dir", required=True, help="the pool: <shard>.parquet + <shard>.npz (local or fsspec URL)")
    p.add_argument("--scores_dir", default=None,
                   help="per-shard score files (kl-filter score); KL recipes write theirs here too "
                        "(default: REPORT_DIR/scores)")
    p.add_argument("--shards_dir", default=None,
                   help="the pool's image tars, for example thumbnails (a path or fsspec URL)")
    p.add_argument("--out", required=True, help="report directory (replaced atomically if it holds a report)")
    p.add_argument("--filters", nargs="*", default=None, metavar="RECIPE",
                   help="recipe names or YAML paths to run, or finished subset .npy files "
                        "(default: CLIP score L/14 30%%, LAION-2B, basic, D_KL and D_KLR L/14 txt 25%%, D_KL ∩ CLIP)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the recipes (recorded)")
    p.add_argument("--sample_size", type=int, default=100_000,
                   help="rows of the uniform sample behind Spearman, n-gram and English figures")
    p.add_argument("--examples", type=int, default=8, help="top and bottom rows shown per score column")
    p.add_argument("--bins", type=int, default=50, help="histogram bins per score column (at most 10,000)")
    p.add_argument("--ngram_top_k", type=int, default=50, help="K of the top-K n-gram coverage")
    p.add_argument("--thumb_size", type=int, default=128, help="thumbnail side in pixels")
    p.add_argument("--dedup_pairs", type=int, default=6,
                   help="SemDeDup duplicate pairs shown per arch (the rows with the highest maxsim beside the earlier "
                        "row each duplicates; needs the pool's image embeddings); 0: none")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where KL recipes score")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="open the report in headless Chromium (selenium + chromium-driver), fail on any console "
                        "error or broken image, and save a screenshot")
    p.add_argument("--screenshot_height", type=int, default=None, help="screenshot height in pixels (default: whole page)")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.progress import NoProgress, tqdm_progress
    from kl_filter.apps.report import build_report
    from kl_filter.apps.report.sections import section_classes
    from kl_filter.runner import RunContext

    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be at least 1, got {args.num_workers}")
    progress = NoProgress if args.no_progress else tqdm_progress
    if args.screenshot:  # the report's own paths are checked by build_report
        from kl_filter.core.outputs import In, Out, check

        check([Out(args.screenshot, "--screenshot")],
              [In(args.metadata_dir, "--metadata_dir"), In(args.shards_dir, "--shards_dir"),
               *[In(f, "--filters") for f in args.filters or [] if os.path.exists(f)]])
    ctx = RunContext(num_workers=args.num_workers, seed=args.seed, device=args.device, scores_dir=args.scores_dir,
                     progress=progress)
    fig = build_report(args.metadata_dir, args.out, scores_dir=args.scores_dir, shards_dir=args.shards_dir,
                       filters=args.filters, ctx=ctx, sample_size=args.sample_size, examples=args.examples,
                       bins=args.bins, ngram_top_k=args.ngram_top_k, thumb_size=args.thumb_size, progress=progress,
                       dedup_pairs=args.dedup_pairs)
    subs = fig["subsets"]
    kept = ", ".join(f"{n} {100 * s['share']:.1f}%" for n, s in subs.items()) or "none"
    print(f"report: {fig['pool']['rows']:,} rows, {len(fig['columns'])} score columns, {len(subs)} subsets ({kept})")
    for section in section_classes():  # the filters' own sections
        for line in section.summary(fig.get(section.key) or {}):
            print(f"report: {line}")
    for s in fig["report"]["skipped_filters"]:
        print(f"report: skipped {s['recipe']}: {s['reason']}")
    index = os.path.join(os.path.abspath(args.out), "index.html")
    print(f"report: {index}")
    if args.screenshot:
        from kl_filter.apps.report.browser import check_page

        got = check_page(index, args.screenshot, height=args.screenshot_height)
        problems = got["errors"] + [f"image does not load: {s}" for s in got["broken_images"]]
        if problems:
            raise KLFilterError(f"{len(problems)} problem(s) in the browser, first: {problems[0]}", index)
        print(f"report: opens in Chromium without errors ({got['images']} images); screenshot {args.screenshot}")
    return 0
