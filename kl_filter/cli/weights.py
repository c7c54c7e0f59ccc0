"""``kl-filter weights``: importance weights toward a prompt's domain (IWL), one row per uid of the pool.

The prompt flags are the IWL scorer's parameters (:class:`kl_filter.scores.iwl.IWLScorer`), so ``weights`` and
``select --name iwl`` take the same ones; the log-weights go through the score stage (resumed per shard with
``--scores_dir``) and the normalisation through :func:`kl_filter.selection.weights.write_weights`.
"""

from __future__ import annotations

import os


def add_parser(sub) -> None:
    from ..params import add_arguments
    from ..scores.iwl import IWLScorer

    p = sub.add_parser("weights", help="importance weights toward a prompt's domain (IWL): weight + log_weight per uid",
                       description="w(x) ∝ exp(a·<u_x, p>) for each row's image embedding u_x and a prompt embedding "
                                   "p (from --prompt_embedding, or --prompt encoded by a local open_clip checkpoint), "
                                   "self-normalised to mean 1 over the pool, written as one parquet file.")
    p.add_argument("--metadata_dir", required=True,
                   help="the pool: <shard>.parquet + <shard>.npz (local or fsspec URL)")
    p.add_argument("--out", required=True, help="weights parquet: uid, weight (float32, mean 1), log_weight (float32)")
    p.add_argument("--scores_dir", default=None, help="per-shard score files: the log-weight columns are kept (and "
                                                      "reused) there, as any score column")
    p.add_argument("--overwrite", action="store_true", help="recompute the log-weights even if stored")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no_progress", action="store_true")
    from .common import add_engine_arguments

    add_engine_arguments(p)
    p.set_defaults(func=run, scorer_params=add_arguments(p, IWLScorer))


def run(args) -> int:
    from ..errors import KLFilterError
    from ..params import from_args
    from ..scores.registry import build_scorer
    from ..selection.weights import write_weights
    from .common import engine_from_args

    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    params = from_args(args, args.scorer_params)
    from ..outputs import In, Out, check, input_files

    check([Out(args.out, "--out"), Out(args.scores_dir, "--scores_dir", "dir", marker="scores")],
          [In(args.metadata_dir, "--metadata_dir"), *[In(f, f"--{k}") for k, v in params.items()
                                                       for f in input_files([v])]])  # before any work
    scorer = build_scorer("iwl", params)
    s = write_weights(args.metadata_dir, scorer, args.out, engine=engine_from_args(args), scores_dir=args.scores_dir,
                      device="cpu", overwrite=args.overwrite)  # float64 dot products: CPU work
    for w, c in s["columns"].items():
        print(f"weights: {w} from {c['score_column']} (logit scale {c['provenance']['logit_scale']:g} from "
              f"{c['provenance']['logit_scale_source']}): effective "
              f"sample size {c['effective_sample_size']:,.1f} of {c['rows']:,} rows "
              f"({100 * c['effective_sample_share']:.1f}%), max weight "
              f"{c['rows'] * 1.0 / c['sum_exp']:.4g}")
    print(f"weights: {s['rows']:,} rows in {s['shards']} shards (log-weights computed for {s['shards_computed']}, "
          f"reused for {s['shards_reused']}) in {s['timings']['total_s']:.2f}s -> {s['out']}")
    return 0
