"""Selection: rules that resolve themselves over the whole pool (exact thresholds, uniform down-sampling,
resampling, ...) and the run loop that applies them shard by shard."""
