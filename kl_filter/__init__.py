"""kl-filter: KL-guided and DataComp baseline filters for CLIP pre-training pools.

Data flows one way, and the subpackages follow it:

    pool/       read (and synthesise) DataComp metadata shards: <shard>.parquet + <shard>.npz
    stats/      reference statistics over the pool (samples, mean, covariance) for the KL scores
    scores/     per-row scores: the density-ratio KL family, on CPU, torch or a fused Triton kernel
    filters/    filter plugins (DataComp baselines, KL filters) behind one interface, and their registry
    selection/  global thresholds, uniform down-sampling, the per-shard keep masks, the run loop
    uids.py     the subset (.npy of u8,u8) handed to DataComp's harness
    harness/    resharding, the official train/evaluate bridge, BYOD embedding, the offline tiny track
    cli/        the ``kl-filter`` command

``import kl_filter`` stays light: torch, triton and open_clip are imported only by code that needs them.
"""

__version__ = "0.1.0"
