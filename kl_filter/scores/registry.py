"""Scorer registry: built-ins by name (imported lazily), third parties in the ``kl_filter.scorers`` group."""

from __future__ import annotations

from ..registry import Registry

ENTRY_POINT_GROUP = "kl_filter.scorers"

SCORERS = Registry("scorer", ENTRY_POINT_GROUP, {
    "kl": "kl_filter.scores.kl:KLScorer",
    "iwl": "kl_filter.scores.iwl:IWLScorer",
    "normsim": "kl_filter.scores.normsim:NormSimScorer",
    "vas": "kl_filter.scores.vas:VASScorer",
    "negcliploss": "kl_filter.scores.negcliploss:NegCLIPLossScorer",
    "semdedup": "kl_filter.scores.semdedup:SemDeDupScorer",
})


def list_scorers() -> list[str]:
    return SCORERS.names()


def build_scorer(name: str, params: dict | None = None):
    """A validated scorer instance (see :meth:`kl_filter.registry.Registry.build`)."""
    return SCORERS.build(name, params)
