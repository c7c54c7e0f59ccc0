"""The scorer plugin interface: a function of one shard (plus the reference statistics it declares) that
returns named float32 columns, computed once per shard by the score stage (:mod:`kl_filter.stages.scores`).

A scorer declares:

* ``columns`` / ``keys``: the parquet columns and npz keys it reads;
* ``outputs()``: the names of the columns it returns (a filter reads them as ``shard[name]``);
* ``stats()``: the reference statistics it needs (:class:`StatsNeed`), or None;
* ``provenance(column, stats)``: everything a column depends on beyond the shard itself (JSON). A stored column
  is reused, by this filter or any other, only when its recorded provenance equals this; the default is the
  scorer's name and parameters;
* ``ceiling(column, stats)`` (optional): the largest attainable value, so a top cut can count saturated rows;
* ``bind(pool)`` (optional): called once per run, in the main process, before ``provenance`` and ``compute``,
  for what a scorer takes from the pool itself (the density-ratio scorers: the embedding model's temperature,
  :class:`DensityRatio`). The bound scorer is what workers receive;
* ``check_assets()`` (optional): locate the files it reads (e.g. target embeddings) before any work.

Parameters are ``__init__`` keyword arguments with annotations, as for filters (:mod:`kl_filter.core.params`); a
``**kwargs`` forwards to the parent's (``DensityRatio`` declares ``logit_scale`` once for every density-ratio
scorer). Third-party scorers register in the ``kl_filter.scorers`` entry-point group; a registered scorer is a
filter too (``kl-filter select --name SCORER --fraction 0.3``: a top cut on its column, :mod:`kl_filter.filters.cuts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from kl_filter.scorers.partition import Partition, hashed_partition

ARCHS = ("b32", "l14")  # the embedding families of a DataComp pool (docs/formats.md#the-pool): the one list
Arch = Literal[ARCHS]


@dataclass(frozen=True)
class StatsNeed:
    """Reference statistics of one embedding family (docs/methods.md#reference-statistics): the image and text
    samples (drawn by a seeded
    bottom-k hash over caption-filtered rows, ``num_samples`` or ``sample_ratio`` of them) and, with
    ``moments``, the float64 means and covariances."""

    arch: str
    moments: bool = False
    num_samples: int | None = None
    sample_ratio: float | None = None


class Scorer:
    """Base class of scorer plugins. Subclasses set ``name`` and implement ``outputs`` and ``compute``."""

    name: ClassVar[str] = ""
    gpu: ClassVar[bool] = False  # compute() has a GPU path for device "cuda:i" (else the stage passes "cpu")
    columns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()

    def outputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    def stats(self) -> StatsNeed | None:
        return None

    def compute(self, shard, stats, device: str = "cpu") -> dict[str, np.ndarray]:
        """``{column: float32[n]}`` for every name in ``outputs()``; ``shard[name]`` reads the declared inputs."""
        raise NotImplementedError

    def provenance(self, column: str, stats) -> dict:
        return {"scorer": self.name, **self.params()}

    def ceiling(self, column: str, stats) -> float | None:
        return None

    def bind(self, pool) -> None:
        """Take from ``pool`` what this scorer's values depend on beyond its parameters (default: nothing)."""

    def check_assets(self) -> None:
        """Locate the files this scorer reads before any work (raise :class:`KLFilterError`). Default: none."""

    def params(self) -> dict[str, Any]:
        from kl_filter.core.params import signature_params

        return {p.name: getattr(self, p.name, None) for p in signature_params(type(self))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


class DensityRatio:
    """Mixin of the scorers whose values are CLIP log density ratios ``a·<u, v>`` (D_KL, D_KLR, negCLIPLoss, IWL):
    their ``logit_scale`` is declared, checked and resolved here, once.

    logit_scale: the CLIP logit scale a: a number, or pool = the temperature the pool's embedding model learned (embeddings.json; else OpenAI CLIP's 100); default: the scorer's own (pool for D_KL, D_KLR and negCLIPLoss; 10, the IWL authors', for IWL)

    A similarity is a log density ratio only at the temperature the embedding model learned, so the density-ratio
    scores default to the pool's recorded one for the scorer's ``arch`` (:mod:`kl_filter.pool.temperature`); a
    scorer may default to a number instead (``default_logit_scale``, named ``default_source`` in the provenance).
    :meth:`bind` resolves it; every column's provenance records the value and its source
    (:meth:`temperature_provenance`), so a column computed at another temperature is never reused.
    """

    POOL: ClassVar[str] = "pool"
    default_logit_scale: ClassVar[float | None] = None  # None: the pool's recorded temperature
    default_source: ClassVar[str] = ""                 # the provenance's name for a numeric default
    arch: str
    _temperature = None

    def __init__(self, logit_scale: float | Literal["pool"] | None = None):
        from kl_filter.pool.temperature import check_logit_scale

        if logit_scale is None:
            logit_scale = self.default_logit_scale
        self.logit_scale = logit_scale if logit_scale in (None, self.POOL) else check_logit_scale(logit_scale)

    def _asked(self) -> float | None:
        """The number asked for (None: the pool's temperature)."""
        return None if self.logit_scale in (None, self.POOL) else self.logit_scale

    def _source(self) -> str:
        default = self.default_source and self.logit_scale == self.default_logit_scale
        return self.default_source if default else "--logit_scale"

    def bind(self, pool) -> None:
        from dataclasses import replace

        from kl_filter.pool.temperature import resolve

        t = resolve(pool, self.arch, self._asked())
        if self._asked() is not None:  # "--logit_scale[; the pool records ...]": name a numeric default as such
            t = replace(t, source=self._source() + t.source[len("--logit_scale"):])
        self._temperature = t

    @property
    def temperature(self):
        """The :class:`~kl_filter.pool.temperature.Temperature` in use (the number asked for before :meth:`bind`)."""
        if self._temperature is None:
            if self._asked() is None:
                raise RuntimeError(f"{type(self).__name__}: bind(pool) first (the logit scale is the pool's)")
            from kl_filter.pool.temperature import Temperature

            return Temperature(float(self._asked()), self._source())
        return self._temperature

    @property
    def scale(self) -> float:
        """The logit scale a the values are computed at."""
        return self.temperature.logit_scale

    def temperature_provenance(self) -> dict:
        return self.temperature.provenance()

    def provenance(self, column, stats) -> dict:
        """The scorer's parameters, ``logit_scale`` the value in use, and ``logit_scale_source``."""
        return {"scorer": self.name, **self.params(), **self.temperature_provenance()}


class BucketScorer(Scorer):
    """A scorer whose rows are scored in buckets gathered across shards (the bucket stage, :mod:`kl_filter.stages.buckets`).

    Subclasses give ``keys`` (the npz keys gathered per row), ``num_passes()``, ``bucket_size()`` and
    ``score_bucket(payload, device) -> {column: float[b]}`` for the rows of one bucket (payload: ``{key:
    float16[b, d]}`` plus the partition's ``extra`` arrays, rows in order-key order); ``combine`` turns the
    float64 sums over passes into the final columns (default: mean). The run's ``--seed`` draws the partition
    and is part of every column's provenance.

    ``assign`` decides the partition of one pass. The default (negCLIPLoss) ranks a seeded 64-bit hash of the
    uids and cuts equal buckets of about ``bucket_size()`` rows; a scorer with its own buckets (SemDeDup: the
    k-means cluster of each row, variable sizes) overrides it and may ignore ``bucket_size``.
    """

    seeded: ClassVar[bool] = True

    def num_passes(self) -> int:
        return 1

    def bucket_size(self) -> int:
        raise NotImplementedError

    def assign(self, pool, engine, seed: int, pass_index: int, scores_dir: str | None = None) -> Partition:
        """The partition of pass ``pass_index`` (see :class:`Partition`); default: equal buckets by seeded hash."""
        return hashed_partition(pool, engine, seed, pass_index, self.bucket_size(), self.name)

    def score_bucket(self, payload: dict, device: str = "cpu") -> dict:
        raise NotImplementedError

    def combine(self, sums: dict, passes: int) -> dict:
        return {c: (v / passes).astype(np.float32) for c, v in sums.items()}
