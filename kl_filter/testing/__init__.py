"""Contract tests for filter and scorer plugins, shipped in the package (as fsspec ships ``fsspec/tests/abstract``).

A plugin's own test file subclasses a contract in a few lines; pytest collects the subclass (its name starts with
``Test``) and runs every check on a small seeded pool it writes itself::

    from kl_filter.testing import FilterContract, ScorerContract

    class TestCaptionLength(ScorerContract):
        scorer = CaptionLength            # the class, or its registered name
        params = {"per": "word"}          # constructor parameters
        changed_params = {"per": "char"}  # parameters that change its values (so must its provenance)

    class TestLongCaption(FilterContract):
        filter = "long_caption"
        params = {"min_chars": 20}

A plugin that reads files gets them from :meth:`~kl_filter.testing.contracts.PluginContract.make_assets` (write
them under the directory it is given, return the parameters naming them). What each contract checks:
:mod:`kl_filter.testing.contracts`; the pool: :func:`make_pool`. Needs pytest; imports neither torch nor open_clip.
"""

from kl_filter.testing.contracts import FilterContract, PluginContract, ScorerContract, reference_keep
from kl_filter.testing.pools import make_pool, strip_pool

__all__ = ["FilterContract", "ScorerContract", "PluginContract", "reference_keep", "make_pool", "strip_pool"]
