"""Scorer registry: built-ins by name (imported lazily), third parties in the ``kl_filter.scorers`` group."""

from __future__ import annotations

from kl_filter.core.registry import Registry

ENTRY_POINT_GROUP = "kl_filter.scorers"

SCORERS = Registry("scorer", ENTRY_POINT_GROUP, {
    "kl": "kl_filter.scorers.kl:KLScorer",
    "iwl": "kl_filter.scorers.iwl:IWLScorer",
    "normsim": "kl_filter.scorers.normsim:NormSimScorer",
    "vas": "kl_filter.scorers.vas:VASScorer",
    "negcliploss": "kl_filter.scorers.negcliploss:NegCLIPLossScorer",
    "semdedup": "kl_filter.scorers.semdedup:SemDeDupScorer",
})


def list_scorers() -> list[str]:
    return SCORERS.names()


def build_scorer(name: str, params: dict | None = None):
    """A validated scorer instance (see :meth:`kl_filter.core.registry.Registry.build`)."""
    return SCORERS.build(name, params)
