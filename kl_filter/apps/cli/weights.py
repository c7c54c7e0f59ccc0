"""``kl-filter weights``: importance weights toward a prompt's domain (IWL), one row per uid of the pool: the alias
of ``kl-filter score --scorer iwl --weights OUT`` (the IWL scorer's flags, the same as ``select --name iwl``'s)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from kl_filter.apps.cli.score import add_common, run

    p = sub.add_parser("weights", help="importance weights toward a prompt's domain (IWL): weight + log_weight per uid",
                       allow_abbrev=False,
                       description="w(x) ∝ exp(a·<u_x, p>) for each row's image embedding u_x and a prompt embedding "
                                   "p (from --prompt_embedding, or --prompt encoded by a local open_clip checkpoint), "
                                   "self-normalised to mean 1 over the pool, written as one parquet file (the alias of "
                                   "`kl-filter score --scorer iwl --weights OUT`).")
    p.add_argument("--out", required=True, help="weights parquet: uid, weight (float32, mean 1), log_weight (float32)")
    p.add_argument("--scores_dir", default=None, help="per-shard score files: the log-weight columns are kept (and "
                                                      "reused) there, as any score column")
    p.add_argument("--scorer", default="iwl", help="the scorer whose columns are log-weights (default: iwl)")
    add_common(p)
    p.set_defaults(func=run, filter_params=True, scores_out="scores_dir", weights_out="out")
