"""kl-filter: KL-guided and DataComp baseline filters for CLIP pre-training pools.

The library is this package; ``kl_filter/apps/`` holds the applications built on it (the ``kl-filter`` command,
the inspection report, DataComp's harness, the tiny track), which nothing else imports. Data flows one way, and
the library's packages follow it, bottom first (``tests/test_layers.py`` enforces the order):

    core/        errors, atomic writes, paths and URLs, checked inputs, UID files, seeded hashing, parameters,
                 the registry class
    text/        the caption filter, language ID, WordNet
    engines/     where shard functions run: local threads/processes, or Ray
    encoders.py  open_clip text and image encoding
    recipes.py   recipes: ``baselines/*.yaml``, package data
    pool/        DataComp metadata shards (<shard>.parquet + <shard>.npz), and a synthetic pool
    kernels/     score arithmetic on arrays (NumPy, torch, Triton)
    stats/       reference statistics over the pool (samples, mean, covariance)
    scorers/     the ``Scorer`` interface and the built-in scorers (per-row float32 columns)
    rules/       the ``Rule`` interface and the built-in rules (a column to keep/drop, resolved over the pool)
    stages/      scorers run over a pool: statistics, per-shard scores, buckets, weights
    filters/     the ``Filter`` interface, the generic filter (a list of cuts), DataComp's baselines, the registry
    runner.py    one filter planned and run: statistics → scores → rules → keep → UID file and sidecar
    testing/     the conformance suite a plugin's tests subclass (imported only by tests; needs pytest)

Importable from here: the plugin vocabulary, nine names: ``Scorer`` (per-row columns; ``BucketScorer`` when rows
are scored together with other shards' rows, ``StatsNeed`` for reference statistics), the rules ``Top``,
``Keep``, ``Uniform``, ``Resample`` (and ``Rule`` to write a new one), and ``Filter`` for per-row logic of its
own; ``build_filter`` / ``list_filters`` (every registered filter and scorer, built-in or from an entry point);
and running one without the command line: ``load_recipe`` (a shipped recipe or a YAML file), ``run_filter`` and
its ``RunContext`` (workers, seed, scores directory, engine). A scorer needs no filter: it is one
(``kl-filter select --name SCORER --fraction 0.3``), and recipes cut on it (``cuts: [{score: {name: SCORER},
fraction: 0.3}]``).

``import kl_filter`` stays light: ``run_filter``, ``RunContext`` and ``load_recipe`` are imported on first use
(the runner pulls in pyarrow and fsspec), and torch, triton, ray and open_clip only by code that needs them.
"""

from kl_filter.core.version import __version__
from kl_filter.filters.base import Filter
from kl_filter.filters.registry import build_filter, list_filters
from kl_filter.rules.base import Rule
from kl_filter.rules.sampling import Resample, Uniform
from kl_filter.rules.top import Keep, Top
from kl_filter.scorers.base import BucketScorer, Scorer, StatsNeed

__all__ = ["Scorer", "BucketScorer", "StatsNeed", "Top", "Keep", "Uniform", "Resample", "Rule", "Filter",
           "build_filter", "list_filters", "load_recipe", "run_filter", "RunContext", "__version__"]


def __getattr__(name: str):
    # PEP 562: the run API on first use, so `kl-filter --help` and plugin imports do not pay for the runner
    if name in ("run_filter", "RunContext"):
        from kl_filter import runner

        return getattr(runner, name)
    if name == "load_recipe":
        from kl_filter.recipes import load_recipe

        return load_recipe
    raise AttributeError(f"module 'kl_filter' has no attribute {name!r}")
