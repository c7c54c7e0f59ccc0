"""kl-filter: KL-guided and DataComp baseline filters for CLIP pre-training pools.

Data flows one way, and the subpackages follow it:

    pool/       read (and synthesise) DataComp metadata shards: <shard>.parquet + <shard>.npz
    stats/      reference statistics over the pool (samples, mean, covariance), and their stage
    scores/     scorer plugins (derived per-row columns: the density-ratio KL family on CPU, torch or a fused
                Triton kernel) and the per-shard score stage
    filters/    filter plugins (DataComp baselines, KL filters) behind one interface, and their registry
    selection/  global thresholds, uniform down-sampling, the per-shard keep masks, the run loop
    engines/    where per-shard work runs: local threads/processes or Ray, one interface
    uids.py     the subset (.npy of u8,u8) handed to DataComp's harness
    report/     the inspection report of what each filter keeps
    harness/    resharding, the official train/evaluate bridge, BYOD embedding, the offline tiny track
    cli/        the ``kl-filter`` command (the application; nothing else imports it)

The plugin API is importable from here: ``from kl_filter import Filter, Top, Keep, Uniform, Resample`` for filters,
``Scorer, BucketScorer, StatsNeed`` for scorers. ``import kl_filter`` stays light: torch, triton, ray and open_clip are
imported only by code that needs them.
"""

__version__ = "0.1.0"

from .filters.base import Filter, Keep, Parallel, Resample, Ties, Top, Uniform  # noqa: E402
from .filters.registry import build_filter, list_filters, register  # noqa: E402
from .scores.registry import build_scorer, list_scorers  # noqa: E402
from .scores.scorer import BucketScorer, Scorer, StatsNeed  # noqa: E402

__all__ = ["Filter", "Top", "Keep", "Uniform", "Resample", "Ties", "Parallel", "Scorer", "BucketScorer", "StatsNeed",
           "build_filter", "build_scorer", "list_filters", "list_scorers", "register", "__version__"]
