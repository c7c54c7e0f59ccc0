"""kl-filter: KL-guided and DataComp baseline filters for CLIP pre-training pools.

Data flows one way, and the subpackages follow it:

    pool/       read (and synthesise) DataComp metadata shards: <shard>.parquet + <shard>.npz
    stats/      reference statistics over the pool (samples, mean, covariance), and their stage
    scores/     scorer plugins (derived per-row columns: the density-ratio KL family on CPU, torch or a fused
                Triton kernel) and the per-shard score stage
    filters/    the generic filter (a list of cuts) and its named recipes, the filters with per-row logic of their
                own (DataComp's baselines), the registry
    selection/  rules (each resolves itself over the whole pool: exact thresholds, uniform, resampling), the run loop
    engines/    where per-shard work runs: local threads/processes or Ray, one interface
    uids.py     the subset (.npy of u8,u8) handed to DataComp's harness
    report/     the inspection report of what each filter keeps
    harness/    resharding, the official train/evaluate bridge, BYOD embedding, the offline tiny track
    cli/        the ``kl-filter`` command (the application; nothing else imports it)

The plugin vocabulary is importable from here, nine names: ``Scorer`` (per-row columns; ``BucketScorer`` when rows
are scored together with other shards' rows, ``StatsNeed`` for reference statistics), the rules ``Top``, ``Keep``,
``Uniform``, ``Resample`` (and ``Rule`` to write a new one), and ``Filter`` for per-row logic of its own; plus
``build_filter`` / ``list_filters`` (every registered filter and scorer, built-in or from an entry point). A
scorer needs no filter: it is one (``kl-filter select --name SCORER --fraction 0.3``), and recipes cut on it
(``cuts: [{score: {name: SCORER}, fraction: 0.3}]``). ``import kl_filter`` stays light: torch, triton, ray and
open_clip are imported only by code that needs them.
"""

from kl_filter.core.version import __version__  # noqa: E402
from kl_filter.filters.base import Filter  # noqa: E402
from kl_filter.filters.registry import build_filter, list_filters  # noqa: E402
from kl_filter.scorers.base import BucketScorer, Scorer, StatsNeed  # noqa: E402
from kl_filter.rules.base import Keep, Resample, Rule, Top, Uniform  # noqa: E402

__all__ = ["Scorer", "BucketScorer", "StatsNeed", "Top", "Keep", "Uniform", "Resample", "Rule", "Filter",
           "build_filter", "list_filters", "__version__"]
