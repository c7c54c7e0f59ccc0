"""Reading DataComp metadata pools: shard discovery, column/key selection, validation."""

from kl_filter.pool.reader import EMBED_DIMS, Pool, Shard, ShardData

__all__ = ["EMBED_DIMS", "Pool", "Shard", "ShardData"]
