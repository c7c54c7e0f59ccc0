"""Reference statistics for the KL scores: seeded samples, mean and covariance over caption-filtered rows."""

from kl_filter.stats.reference import compute_stats
from kl_filter.stats.statsfile import Stats, load_stats

__all__ = ["Stats", "compute_stats", "load_stats"]
