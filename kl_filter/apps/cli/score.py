"""``kl-filter score``: any registered scorer's columns for every shard, into a scores directory (the files ``select``
and ``run`` read and extend: a column is computed once per shard and reused wherever its provenance matches).

    kl-filter score --metadata_dir POOL --out SCORES [--scorer NAME] [the scorer's flags]

The scorer's flags come from its signature (``kl-filter list-filters -v`` lists them under its name); a flag given
several values for a one-value parameter runs the scorer once per combination (``--arch b32 l14``). Without
``--scorer``: the KL family, by default all 16 columns (4 modes × b32/l14 × txt/img) as before (``--modes`` is the
old spelling of ``--mode``). The reference statistics a scorer needs are read from ``--stats`` (used as it is) or
computed into ``SCORES/stats.npz``. ``--weights W.parquet`` also writes the self-normalised importance weights of a
log-weight column (IWL's); ``kl-filter weights`` is that, for the IWL scorer.
"""

from __future__ import annotations

import itertools
import math
import os

from kl_filter.core.errors import KLFilterError
from kl_filter.apps.cli.common import add_engine_arguments, engine_from_args

# `kl-filter score` without --scorer: the KL family on every axis, the command's defaults since it existed
KL_GRID = {"mode": ["kl", "kl_reverse", "centered", "whitened"], "arch": ["b32", "l14"], "target": ["txt", "img"]}
MAX_COMBINATIONS = 1000  # scorers one command may ask for (400 × 400 values built 160,000 scorers: minutes, no work)


def add_common(p) -> None:
    p.add_argument("--metadata_dir", required=True, help="the pool: <shard>.parquet + <shard>.npz (local or fsspec URL)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed of a scorer's random draws (negCLIPLoss's batches, ...)")
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true", help="recompute even valid stored columns")
    p.add_argument("--no_progress", action="store_true")
    add_engine_arguments(p)


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="compute a scorer's columns for every shard (default: the KL family)",
                       allow_abbrev=False, description=__doc__.split("\n\n")[1])
    p.add_argument("--scorer", default=None, help="registered scorer name (default: kl; kl-filter list-filters)")
    p.add_argument("--out", required=True, help="scores directory: <shard>.parquet per shard")
    p.add_argument("--stats", default=None, help="statistics .npz from `kl-filter stats` (else computed into --out)")
    p.add_argument("--weights", default=None, help="also write the importance weights of the scorer's log-weight "
                                                    "column(s) to this parquet file")
    add_common(p)
    p.set_defaults(func=run, filter_params=True, scores_out="out", weights_out="weights")


def scorer_params_from_cli(name: str, extra: list[str]) -> list[dict]:
    """The parameters of each scorer the flags ask for: one per combination of the values given to one-value
    parameters."""
    from dataclasses import replace

    from kl_filter.core.params import signature_params
    from kl_filter.scorers.registry import SCORERS
    from kl_filter.apps.cli.common import parse_flags

    if name not in SCORERS.names():  # the registry's own message names --name, select's flag
        raise KLFilterError(f"unknown --scorer {name!r}; known: {', '.join(SCORERS.names())}")
    declared = signature_params(SCORERS.get(name))
    several = [replace(p, many=True) if p.base is not bool else p for p in declared]
    given = parse_flags(f"--scorer {name}", extra, several)
    single = {p.name for p in declared if not p.many and p.base is not bool}
    axes = {k: (v if k in single else [v]) for k, v in given.items()}
    total = math.prod(len(v) for v in axes.values())
    if total > MAX_COMBINATIONS:
        raise KLFilterError(f"--scorer {name}: the flags ask for {total:,} combinations ("
                            + " x ".join(f"{len(v)} --{k}" for k, v in axes.items() if len(v) > 1)
                            + f"); at most {MAX_COMBINATIONS:,} in one command")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def run(args) -> int:
    import time

    from kl_filter.core.outputs import In, Out, check, input_files
    from kl_filter.pool import Pool
    from kl_filter.core.progress import NoProgress, tqdm_progress
    from kl_filter.scorers.registry import build_scorer
    from kl_filter.stages.scores import run_scores
    from kl_filter.stages.stats import ensure_stats

    t = time.perf_counter()
    if args.num_workers < 1:
        raise KLFilterError(f"--num_workers must be >= 1, got {args.num_workers}")
    name = "kl" if args.scorer is None else args.scorer  # `--scorer ''` is a name (unknown), not the KL grid
    extra = ["--mode" if a == "--modes" else a for a in args.extra]
    if args.scorer is None:  # the command's KL defaults, for the axes the flags leave out
        extra += [x for k, v in KL_GRID.items() if f"--{k}" not in extra for x in (f"--{k}", *v)]
    scores_dir, weights = getattr(args, args.scores_out), getattr(args, args.weights_out)
    stats = getattr(args, "stats", None)
    params = scorer_params_from_cli(name, extra)
    outs = [Out(scores_dir, f"--{args.scores_out}", "dir", marker="scores")]
    check(outs + ([Out(weights, f"--{args.weights_out}")] if weights else []),  # before any work
          [In(args.metadata_dir, "--metadata_dir"), *([In(stats, "--stats")] if stats else []),
           *[In(f, f"--{k}") for p in params for k, v in p.items() for f in input_files([v])]])
    scorers = [build_scorer(name, p) for p in params]
    engine = engine_from_args(args)
    if weights:
        return _weights(args, scorers, engine, scores_dir, weights)
    pool = Pool(args.metadata_dir)
    stats, _ = ensure_stats(pool, [s.stats() for s in scorers], stats_path=stats, scores_dir=scores_dir,
                            seed=args.seed, overwrite=args.overwrite, num_workers=args.num_workers,
                            progress=NoProgress if args.no_progress else tqdm_progress, device=args.device,
                            engine=engine)
    done = run_scores(pool, scorers, stats, scores_dir, engine, args.device, args.overwrite, args.seed)
    print(f"score: {len(done.names)} columns for {len(pool)} shards ({done.computed} computed, "
          f"{done.reused} reused) in {time.perf_counter() - t:.2f}s -> {scores_dir}")
    for scale, source in dict.fromkeys((v["logit_scale"], v["source"]) for v in done.temperatures().values()):
        print(f"score: logit scale {scale:g} ({source})")
    return 0


def _weights(args, scorers, engine, scores_dir, out) -> int:
    from kl_filter.stages.weights import write_weights

    if len(scorers) != 1:
        raise KLFilterError(f"--weights takes one scorer, the flags ask for {len(scorers)}")
    s = write_weights(args.metadata_dir, scorers[0], out, engine=engine, scores_dir=scores_dir, device=args.device,
                      overwrite=args.overwrite)
    for w, c in s["columns"].items():
        print(f"weights: {w} from {c['score_column']} (logit scale {c['provenance']['logit_scale']:g} from "
              f"{c['provenance']['logit_scale_source']}): effective "
              f"sample size {c['effective_sample_size']:,.1f} of {c['rows']:,} rows "
              f"({100 * c['effective_sample_share']:.1f}%), max weight "
              f"{c['rows'] * 1.0 / c['sum_exp']:.4g}")
    print(f"weights: {s['rows']:,} rows in {s['shards']} shards (log-weights computed for {s['shards_computed']}, "
          f"reused for {s['shards_reused']}) in {s['timings']['total_s']:.2f}s -> {s['out']}")
    return 0
