"""The generic filter: a list of cuts. Every scorer-backed filter is a recipe of it; this is the recipe form.

    # D_KL (L/14 captions) top 25%, SemDeDup at eps 0.01, then NormSim∞ down to 20% of the pool among the rest
    cuts:
      - {score: {name: kl, params: {arch: l14, target: txt}}, fraction: 0.25}
      - {filter: {name: semdedup, params: {eps: 0.01, num_clusters: 50}}}
      - {score: {name: normsim, params: {norm: inf}}, fraction: 0.2, then: pool}
      - {column: clip_l14_similarity_score, threshold: 0.2}

A cut is a mapping with one of
    score:  {name: SCORER, params: {...}} (or just SCORER): the rule reads the scorer's column (``column:`` picks one
            when it writes several); the score stage computes it once per shard, resumable and shared
    column: NAME: a pool column (``clip_l14_similarity_score``)
    filter: {name: FILTER, params: {...}}: a filter with per-row logic of its own (basic_filter, laion2b's language
            step, image_based) or a named recipe (kl, semdedup, ...): its rules and refine step join
and for ``score``/``column`` cuts the rule (``rule: top`` by default; keep, uniform, resample, top_per_group, or a
plugin's) with its parameters (:mod:`kl_filter.rules.base`: ``fraction``, ``threshold``, ``reverse``,
``ties``, ``then`` for top). ``name`` names the cut for its flags (default: its scorer's or filter's name, else its
column; a repeated name gets ``_2``, ``_3``, ...).

Cuts are decided in order: each over the whole pool (the rules are intersected: DataComp's meaning for combined
baselines), or, with ``then``, among the rows the cuts before it keep. The refine steps of member filters run in
turn on the rows every rule keeps.

Flags beside a cuts recipe (``kl-filter run RECIPE ...``): ``--P`` sets parameter P of every cut whose scorer or
filter takes it (``--target_embeddings F``, ``--num_samples 64``); ``--NAME.P`` one cut's, its rule's included
(``--normsim.fraction 0.15``).
"""

from __future__ import annotations

import numpy as np

from kl_filter.engines import Parallel
from kl_filter.core.errors import KLFilterError
from kl_filter.filters.base import Filter

def _named(spec, what: str, where: str) -> tuple[str, dict]:
    """``{name, params}`` (or a bare name) as (name, params)."""
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "params"}:
        raise KLFilterError(f"{where}: {what} must be a name or a mapping with 'name' and optional 'params', "
                            f"got {spec!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise KLFilterError(f"{where}: {what} params must be a mapping, got {params!r}")
    return spec["name"], dict(params)


def _is_scorer_key(key: str) -> bool:
    return key == "score" or key.endswith("_score")  # a rule's scorer-valued parameters (score, group_score)


def cut_names(cuts: list) -> list[str]:
    """Each cut's name: ``name``, else its scorer's or filter's name, else its column; repeats get ``_2``, ..."""
    out, seen = [], {}
    for spec in cuts:
        spec = spec if isinstance(spec, dict) else {"column": getattr(spec, "column", None)}
        base = spec.get("name") or next(
            (_named(spec[k], k, "cuts")[0] for k in ("filter", "score") if k in spec), spec.get("column") or "cut")
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


class Cuts(Filter):
    """Keep the rows a list of cuts keeps: rules on scorers' or pool columns, and filters with their own logic.

    cuts: the cuts, in order; each a mapping {score: {name, params}} or {column: NAME} with a rule and its parameters (rule: top by default; fraction, threshold, reverse, ties, then), or {filter: {name, params}}
    """

    name = "cuts"

    def __init__(self, cuts: list[dict]):
        if not isinstance(cuts, (list, tuple)) or not cuts:
            raise KLFilterError("cuts needs a list of cuts ({score: {name, params}, fraction: ...}, {column: ...}, "
                                "{filter: {name, params}}, or rules)")
        self._rules, self.members, self.cuts, self._reads = [], [], [], []
        for i, (spec, label) in enumerate(zip(cuts, cut_names(cuts))):
            where = f"cuts[{i}] ({label})"
            try:
                if not isinstance(spec, dict):  # from Python: Cuts([Top(score=KLScorer(), fraction=0.25), ...])
                    if not callable(getattr(spec, "resolve", None)):
                        raise KLFilterError(f"a cut is a mapping or a rule, got {spec!r}")
                    self._add(spec)
                    self.cuts.append(spec.describe())
                elif "filter" in spec:
                    self._member(spec, where)
                else:
                    self._cut(spec, where)
            except KLFilterError as e:
                raise KLFilterError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
        produced = {c for s in self.scorers() for c in s.outputs()}
        own = {c for m in self.members for c in m.columns}
        self.columns = tuple(dict.fromkeys([*own, *(c for c in self._reads if c not in produced)]))
        self.keys = tuple(dict.fromkeys(k for m in self.members for k in m.keys))
        self.refine_columns = tuple(dict.fromkeys(c for m in self.members for c in m.refine_columns))
        self.refiners = [m for m in self.members if m.refine is not None]
        if not self.refiners:
            self.refine = None
        self.refine_reason = "; ".join(m.refine_reason for m in self.refiners)
        if any(Parallel(m.parallel) is Parallel.PROCESSES for m in self.members):
            self.parallel = Parallel.PROCESSES

    def _member(self, spec: dict, where: str) -> None:
        from kl_filter.filters.registry import build_filter

        if set(spec) - {"filter", "name"}:
            raise KLFilterError(f"{where}: a filter cut takes filter (and name), got {sorted(spec)}")
        name, params = _named(spec["filter"], "filter", where)
        m = build_filter(name, params)
        self.members.append(m)
        self._rules += m.rules()
        self.cuts.append({**spec, "filter": {"name": m.name, "params": m.params()}})

    def _cut(self, spec, where: str) -> None:
        from kl_filter.scorers.registry import build_scorer
        from kl_filter.rules.base import RULES

        if not isinstance(spec, dict) or not ({"score", "column"} & set(spec)):
            raise KLFilterError(f"{where}: a cut is a mapping with score, column or filter, got {spec!r}")
        kwargs, record = {}, {}
        for k, v in spec.items():
            if k in ("rule", "name"):
                record[k] = v
            elif _is_scorer_key(k):
                name, params = _named(v, k, where)
                kwargs[k] = build_scorer(name, params)
                record[k] = {"name": name, "params": kwargs[k].params()}
            else:
                kwargs[k] = record[k] = v
        self._add(RULES.build(spec.get("rule", "top"), kwargs))
        self.cuts.append(record)

    def _add(self, rule) -> None:
        self._rules.append(rule)
        self._reads += rule.reads()

    def rules(self):
        return list(self._rules)

    def check_assets(self):
        super().check_assets()
        for m in self.members:
            m.check_assets()

    def score(self, shard):
        out = {c: shard[c] for c in dict.fromkeys(self._reads)}
        for m in self.members:
            for c, v in m.score(shard).items():
                if c in out and not np.array_equal(out[c], v):
                    raise KLFilterError(f"cuts: {m.name!r} and another cut both return a column {c!r} with "
                                        "different values")
                out[c] = v
        return out

    def refine(self, shard, keep):
        for m in self.refiners:
            if keep.any():
                keep = np.asarray(m.refine(shard, keep), dtype=bool)
        return keep

    # ---- flags beside a cuts recipe ---------------------------------------------------------------------------
    @classmethod
    def flag_params(cls, params: dict) -> list:
        """``--P`` for every parameter of a cut's scorer or filter, ``--NAME.P`` for one cut's (its rule's too)."""
        from dataclasses import replace

        cuts = _cut_dicts(params)
        shared, one = {}, []
        for spec, name in zip(cuts, cut_names(cuts)):
            own, rule = _cut_params(spec)
            for p in own:
                shared.setdefault(p.name, p)
            one += [replace(p, name=f"{name}.{p.name}") for p in (*own, *rule)]
        return [replace(p, default=None, optional=True) for p in (*shared.values(), *one)]

    @classmethod
    def with_flags(cls, params: dict, given: dict) -> dict:
        """The recipe's cuts with the flags' values set where they belong."""
        import copy

        cuts = copy.deepcopy(_cut_dicts(params))
        names = cut_names(cuts)
        for flag, value in given.items():
            name, _, p = flag.rpartition(".")
            for spec, label in zip(cuts, names):
                if name and label != name:
                    continue
                own, rule = _cut_params(spec)
                key = "filter" if "filter" in spec else "score"
                if p in {q.name for q in own}:
                    target, params_ = _named(spec[key], key, label)
                    spec[key] = {"name": target, "params": {**params_, p: value}}
                elif name and p in {q.name for q in rule}:
                    spec[p] = value
        return {**params, "cuts": cuts}


def _cut_dicts(params: dict) -> list:
    cuts = params.get("cuts") or []
    return [c for c in cuts if isinstance(c, dict)] if isinstance(cuts, list) else []


def _cut_params(spec: dict) -> tuple[list, list]:
    """(the parameters of a cut's scorer or filter, those of its rule)."""
    from kl_filter.core.params import signature_params
    from kl_filter.scorers.registry import SCORERS
    from kl_filter.rules.base import RULES
    from kl_filter.filters.registry import get_filter_class

    if "filter" in spec:
        return signature_params(get_filter_class(_named(spec["filter"], "filter", "cuts")[0])), []
    own = signature_params(SCORERS.get(_named(spec["score"], "score", "cuts")[0])) if "score" in spec else []
    rule = [p for p in signature_params(RULES.get(spec.get("rule", "top")))
            if p.name not in ("column", "ceiling") and not _is_scorer_key(p.name)]
    return own, rule
