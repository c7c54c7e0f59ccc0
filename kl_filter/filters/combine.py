"""Several filters as one: the intersection of their rules, each computed over the WHOLE pool (SPEC §3).

A recipe lists the filters it intersects::

    # semdedup at eps 0.01, then CLIP L/14 top 30% of the whole pool
    name: all_of
    params:
      filters:
        - {name: semdedup, params: {arch: l14, eps: 0.01}}
        - {name: clip_score, params: {arch: l14, fraction: 0.3}}

Every member is built and validated by its own signature; the combination declares the union of what they read
and of their scorers (a column two members share is computed once), concatenates their rules (each threshold is
still the member's own, over the whole pool: DataComp's rule for combined baselines), and runs their refine
steps one after the other on the rows every rule keeps. Two members returning the same score column with
different values is refused: the rules could not tell them apart.
"""

from __future__ import annotations

import numpy as np

from ..engines import Parallel
from ..errors import KLFilterError
from .base import Filter


class AllOf(Filter):
    """The intersection of several filters' rules (each over the whole pool).

    filters: the members, each a mapping {name: FILTER, params: {...}} (in a recipe)
    """

    name = "all_of"

    def __init__(self, filters: list[dict]):
        from .registry import build_filter

        if not isinstance(filters, (list, tuple)) or len(filters) < 2:
            raise KLFilterError("all_of needs a list of at least two filters ({name: ..., params: {...}} each)")
        members = []
        for i, spec in enumerate(filters):
            if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
                raise KLFilterError(f"all_of filters[{i}] must be a mapping with 'name' and optional 'params', "
                                    f"got {spec!r}")
            members.append(build_filter(spec["name"], spec.get("params") or {}))
        self.filters = [{"name": m.name, "params": m.params()} for m in members]
        self.members = members
        self.columns = tuple(dict.fromkeys(c for m in members for c in m.columns))
        self.keys = tuple(dict.fromkeys(k for m in members for k in m.keys))
        self.refine_columns = tuple(dict.fromkeys(c for m in members for c in m.refine_columns))
        self.refiners = [m for m in members if m.refine is not None]
        if not self.refiners:
            self.refine = None
        self.refine_reason = "; ".join(m.refine_reason for m in self.refiners)
        if any(m.parallel is Parallel.PROCESSES for m in members):
            self.parallel = Parallel.PROCESSES

    def scorers(self):
        unique = {}
        for s in (s for m in self.members for s in m.scorers()):
            unique.setdefault((type(s), repr(s)), s)  # one scorer computes a shared column once
        return tuple(unique.values())

    def check_assets(self):
        for m in self.members:
            m.check_assets()

    def score(self, shard):
        out = {}
        for m in self.members:
            for c, v in m.score(shard).items():
                if c in out and not np.array_equal(out[c], v):
                    raise KLFilterError(f"all_of: {m.name!r} and another member both return a column {c!r} with "
                                        "different values")
                out[c] = v
        return out

    def rules(self):
        return [r for m in self.members for r in m.rules()]

    def refine(self, shard, keep):
        for m in self.refiners:
            if keep.any():
                keep = np.asarray(m.refine(shard, keep), dtype=bool)
        return keep

    def params(self):
        return {"filters": self.filters}
