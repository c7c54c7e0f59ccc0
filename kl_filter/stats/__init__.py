"""Reference statistics for the KL scores: seeded samples, mean and covariance over caption-filtered rows."""

from kl_filter.stats.reference import Stats, compute_stats, load_stats

__all__ = ["Stats", "compute_stats", "load_stats"]
