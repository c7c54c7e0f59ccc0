"""The package version (one place; ``kl_filter.__version__`` re-exports it)."""

__version__ = "0.1.0"
