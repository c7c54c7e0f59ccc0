"""The IWL filter: a subset of the pool toward a prompt's domain, by importance weight (the paper's second
application, as data selection). A declaration: the IWL scorer (:mod:`kl_filter.scores.iwl`) makes the
log-weight column; ``--fraction``/``--threshold`` is DataComp's top cut on it (the log-weight orders rows as the
weight does), ``--resample N`` a systematic draw with replacement ∝ weight (:class:`~kl_filter.filters.base.Resample`).
"""

from __future__ import annotations

from typing import Literal

from ..errors import KLFilterError
from ..scores.iwl import DEFAULT_LOGIT_SCALE, Combine, IWLScorer
from .base import Filter, Resample, Top, check_cut


class IWLFilter(Filter):
    """Importance weights toward a prompt's domain (IWL): the top share by weight, or N rows drawn ∝ weight.

    arch: embedding family whose image embeddings ({arch}_img) are weighted
    prompt: the target domain as text, e.g. "a photo of food" (needs --model and --checkpoint)
    prompt_embedding: .npy file of the prompt's text embedding, (D,) or (P, D) for several prompts
    model: open_clip architecture of the family's model, to encode --prompt
    checkpoint: LOCAL open_clip checkpoint of --model (nothing is downloaded)
    model_config: open_clip model config json (file or directory) for a custom --model
    logit_scale: a in w ∝ exp(a·<u_x, p>): a number (default 10, the IWL authors'), or pool = the temperature the pool's embedding model learned (embeddings.json; else 100)
    combine: several prompts: mean = log of the mean weight (a mixture of the domains), max = largest
    fraction: keep the top fraction of the pool by weight, in (0, 1]
    threshold: keep rows with log-weight >= threshold
    resample: draw this many rows with replacement ∝ weight (systematic, seeded by --seed; uids repeat in the file)
    """

    name = "iwl"

    def __init__(self, arch: str = "l14", prompt: list[str] | None = None, prompt_embedding: str | None = None,
                 model: str | None = None, checkpoint: str | None = None, model_config: list[str] | None = None,
                 logit_scale: float | Literal["pool"] = DEFAULT_LOGIT_SCALE, combine: Combine | None = None,
                 fraction: float | None = None, threshold: float | None = None, resample: int | None = None):
        self.arch, self.prompt, self.prompt_embedding = arch, prompt, prompt_embedding
        self.model, self.checkpoint, self.model_config = model, checkpoint, model_config
        self.logit_scale, self.combine = logit_scale, combine
        self.fraction, self.threshold, self.resample = fraction, threshold, resample
        if fraction is None and threshold is None and resample is None:
            raise KLFilterError("iwl needs --fraction, --threshold or --resample N")
        if fraction is not None or threshold is not None:
            check_cut("iwl filter", fraction, threshold)
        self.rules()  # --resample 0: refused before the prompt is encoded
        self._scorer = IWLScorer(arch, prompt, prompt_embedding, model, checkpoint, model_config, logit_scale,
                                 combine)
        if len(self._scorer.outputs()) != 1:
            raise KLFilterError(f"{len(self._scorer.embedding)} prompts give one weight column each: the filter "
                                "needs one, choose --combine mean (a mixture of their domains) or max")
        self.column = self._scorer.outputs()[0]

    def scorers(self):
        return (self._scorer,)

    def score(self, shard):
        return {self.column: shard[self.column]}

    def rules(self):
        column = getattr(self, "column", "iwl")
        rules = []
        if self.fraction is not None or self.threshold is not None:
            rules.append(Top(column, self.fraction, self.threshold))
        if self.resample is not None:  # among the rows the top cut keeps, when both are given
            rules.append(Resample(column, self.resample))
        return rules
