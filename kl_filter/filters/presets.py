"""Named recipes of the generic filter with flat flags: a top cut on a registered scorer's column, whose parameters
are the scorer's own (read from its signature, never re-declared) and the cut's (``Top``'s).

Every registered scorer is such a filter without any code (``kl-filter select --name normsim --target_embeddings
T.npy --fraction 0.3``, a third-party scorer likewise: :func:`scorer_cut`). The classes below add what a recipe of
one or two cuts cannot say in flags alone, and keep the flags their users have:

* ``kl``: ``--uniform`` (the ``Uniform`` rule instead of ``Top``), a CLIP-score cut (``--clip_score_fraction``)
  and gcld3 English (``--english_filter``, a refine step);
* ``negcliploss``: an optional NormSim cut (the NormSim scorer's ``--target_embeddings``/``--norm``, and
  ``--normsim_fraction``/``--normsim_threshold``), over the whole pool as every rule here;
* ``semdedup``: ``--eps``, the duplicate threshold (keep maxsim <= 1 − ε);
* ``iwl``: ``--resample N`` (the ``Resample`` rule, after the top cut when both are given).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import ClassVar

from kl_filter.core.errors import KLFilterError
from kl_filter.rules.base import check_cut
from kl_filter.rules.sampling import Resample, Uniform
from kl_filter.rules.top import Top
from kl_filter.filters.base import Filter


class ScorerCut(Filter):
    """A top cut on a registered scorer's column (its parameters are the scorer's and the cut's)."""

    scorer_names: ClassVar[tuple] = ()                            # registered scorers (the first is the cut's)
    cut_flags: ClassVar[tuple] = ("fraction", "threshold", "reverse", "ties")  # Top's parameters given as flags

    def __init__(self, **params):
        from kl_filter.core.params import signature_params
        from kl_filter.scorers.registry import SCORERS, build_scorer

        for p in self.cut_params():
            setattr(self, p.name, params.get(p.name, None if p.required else p.default))
        self.check()
        self.scores = {}
        for n in self.scorer_names:
            names = {p.name for p in signature_params(SCORERS.get(n))}
            self.scores[n] = build_scorer(n, {k: v for k, v in params.items() if k in names})
            for k, v in self.scores[n].params().items():
                setattr(self, k, v)  # the values the scorer uses (the sidecar records them)
        self._rules = self.make_rules()
        produced = {c for s in self.scores.values() for c in s.outputs()}
        self.columns = tuple(dict.fromkeys(c for r in self._rules for c in r.reads() if c not in produced))

    @classmethod
    def cut_params(cls) -> list:
        from kl_filter.core.params import signature_params

        return [p for p in signature_params(Top) if p.name in cls.cut_flags]

    @classmethod
    def forwarded_params(cls) -> list:
        """The scorers' parameters (shared names once: one ``--arch`` sets every scorer's), then the cut's."""
        from kl_filter.core.params import signature_params
        from kl_filter.scorers.registry import SCORERS

        out = {}
        for n in cls.scorer_names:
            for p in signature_params(SCORERS.get(n)):
                out.setdefault(p.name, p)
        return [*out.values(), *(p for p in cls.cut_params() if p.name not in out)]

    @property
    def primary(self):
        return self.scores[self.scorer_names[0]]

    def check(self) -> None:
        """The cut's own checks, before any scorer is built (a prompt encoded, a file read)."""
        check_cut(f"{self.name} filter", self.fraction, self.threshold)

    def make_rules(self) -> list:
        return [Top(getattr(self, "column", None), score=self.primary,
                    **{k: getattr(self, k) for k in self.cut_flags if k != "column"})]

    def rules(self):
        return list(self._rules)


@functools.lru_cache(maxsize=None)
def scorer_cut(name: str) -> type:
    """The filter of registered scorer ``name``: a top cut on its column (:class:`ScorerCut`)."""
    from kl_filter.scorers.registry import SCORERS

    cls = SCORERS.get(name)
    first = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
    return type(f"{cls.__name__}Cut", (ScorerCut,), {
        "name": name, "scorer_names": (name,), "cut_flags": ("column", *ScorerCut.cut_flags),
        "__doc__": f"Top cut by the {name} scorer: {first}", "__module__": __name__})


class KL(ScorerCut):
    """Top fraction by a KL density-ratio score (D_KL, D_KLR, D_C, D_W) of CLIP embeddings.

    uniform: flatten the score histogram instead of a top cut (needs --fraction)
    num_bins: bins for --uniform
    clip_score_fraction: intersect with the top CLIP-score fraction (same --arch)
    clip_score_threshold: intersect with CLIP score >= this (same --arch)
    english_filter: intersect with gcld3 English
    """

    name = "kl"
    scorer_names = ("kl",)
    refine_reason = "english (gcld3)"

    def __init__(self, uniform: bool = False, num_bins: int = 1000, clip_score_fraction: float | None = None,
                 clip_score_threshold: float | None = None, english_filter: bool = False, **params):
        self.uniform, self.num_bins, self.english_filter = uniform, num_bins, english_filter
        self.clip_score_fraction, self.clip_score_threshold = clip_score_fraction, clip_score_threshold
        self.clip = clip_score_fraction is not None or clip_score_threshold is not None
        super().__init__(**params)
        self.refine_columns = ("text",) if english_filter else ()
        if not english_filter:
            self.refine = None  # nothing to refine: the runner skips that pass

    def check(self):
        super().check()
        for flag, given in (("--reverse", self.reverse), ("--ties exact", self.ties == "exact")):
            if self.uniform and given or self.threshold is not None and given:  # the flag would be silently ignored
                raise KLFilterError(f"{flag} does not apply with {'--uniform' if self.uniform else '--threshold'}")
        if self.clip:
            check_cut("kl filter", self.clip_score_fraction, self.clip_score_threshold, prefix="clip_score_")

    def make_rules(self):
        from kl_filter.filters.datacomp import clip_column

        if len(self.primary.outputs()) != 1:
            raise KLFilterError(f"the kl filter cuts one score: give one --mode, got {' '.join(self.mode)}")
        cut = (Uniform(score=self.primary, fraction=self.fraction, num_bins=self.num_bins) if self.uniform else
               super().make_rules()[0])
        if not self.clip:
            return [cut]
        return [cut, Top(clip_column(self.arch), self.clip_score_fraction, self.clip_score_threshold)]

    def refine(self, shard, keep):
        from kl_filter.text.langid import gcld3_english
        from kl_filter.filters.datacomp import refine_by_text

        return refine_by_text(shard, keep, gcld3_english)


class NegCLIPLoss(ScorerCut):
    """Top fraction by negCLIPLoss (the CLIP score minus its log-normaliser over random batches of the pool), optionally intersected with a NormSim cut (--target_embeddings).

    normsim_fraction: keep the top fraction of the pool by NormSim too
    normsim_threshold: keep rows with NormSim >= this too
    """

    name = "negcliploss"
    scorer_names = ("negcliploss", "normsim")

    def __init__(self, normsim_fraction: float | None = None, normsim_threshold: float | None = None, **params):
        self.normsim_fraction, self.normsim_threshold = normsim_fraction, normsim_threshold
        self.target_embeddings = params.get("target_embeddings")
        super().__init__(**params)

    def check(self):
        super().check()
        if self.target_embeddings or self.normsim_fraction is not None or self.normsim_threshold is not None:
            if not self.target_embeddings:
                raise KLFilterError("--normsim_fraction/--normsim_threshold need --target_embeddings (e.g. DataComp's "
                                    "in1k_clip_vit_l14_{0..4}.pt)")
            check_cut("negcliploss with --target_embeddings", self.normsim_fraction, self.normsim_threshold,
                      prefix="normsim_")

    def make_rules(self):
        rules = super().make_rules()
        if self.target_embeddings:
            rules.append(Top(score=self.scores["normsim"], fraction=self.normsim_fraction,
                             threshold=self.normsim_threshold))
        return rules


class SemDeDup(ScorerCut):
    """Semantic deduplication: keep one row of each set of near-duplicate images (cosine > 1 − --eps).

    eps: drop a row whose cosine to an earlier row of its cluster exceeds 1 - eps; in (0, 2)
    """

    name = "semdedup"
    scorer_names = ("semdedup",)
    cut_flags = ()

    def __init__(self, eps: float, **params):
        self.eps = eps
        super().__init__(**params)

    def check(self):
        if not (math.isfinite(self.eps) and 0.0 < self.eps < 2.0):
            raise KLFilterError(f"--eps must be in (0, 2) (a duplicate has cosine > 1 - eps), got {self.eps}")
        if self.eps < 1e-4:  # float32 cosines of identical images measured 1 ± 6e-7; bound d·2⁻²⁴ = 4.6e-5 at 768
            logging.getLogger(__name__).warning(
                "--eps %g is within float32 rounding of a cosine (identical images score 1 ± 5e-5 at most): exact "
                "duplicates may be kept or dropped by rounding; use --eps 1e-4 or more", self.eps)

    def make_rules(self):
        from kl_filter.scorers.semdedup import duplicate_threshold

        return [Top(self.primary.outputs()[0], score=self.primary, threshold=duplicate_threshold(self.eps),
                    reverse=True)]

    @classmethod
    def report_section(cls):
        """Cluster sizes, kept share against --eps, duplicate pairs (:mod:`kl_filter.filters.semdedup_report`)."""
        from kl_filter.filters.semdedup_report import SemDeDupSection

        return SemDeDupSection


class IWL(ScorerCut):
    """Importance weights toward a prompt's domain (IWL): the top share by weight, or N rows drawn ∝ weight.

    resample: draw this many rows with replacement ∝ weight (systematic, seeded by --seed; uids repeat in the file)
    """

    name = "iwl"
    scorer_names = ("iwl",)
    cut_flags = ("fraction", "threshold")

    def __init__(self, resample: int | None = None, **params):
        self.resample = resample
        super().__init__(**params)

    def check(self):
        if self.fraction is None and self.threshold is None and self.resample is None:
            raise KLFilterError("iwl needs --fraction, --threshold or --resample N")
        if self.fraction is not None or self.threshold is not None:
            super().check()
        if self.resample is not None:  # --resample 0: refused before the prompt is encoded
            Resample("iwl", self.resample)

    def make_rules(self):
        if len(self.primary.outputs()) != 1:
            raise KLFilterError(f"{len(self.primary.embedding)} prompts give one weight column each: the filter "
                                "needs one, choose --combine mean (a mixture of their domains) or max")
        top = super().make_rules() if self.fraction is not None or self.threshold is not None else []
        return top + ([Resample(score=self.primary, n=self.resample)] if self.resample is not None else [])

    @property
    def column(self) -> str:
        return self.primary.outputs()[0]
