"""Global selection: thresholds over the whole pool, uniform down-sampling, and the run loop."""
