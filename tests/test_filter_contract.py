"""Every registered filter and scorer, and every shipped recipe, through the conformance suite a third-party plugin
uses (:mod:`kl_filter.testing`): one short class each. A built-in without its class here fails
``test_every_builtin_has_a_contract``, so a new filter, scorer or recipe is covered by being registered or shipped.

The asset files built-ins read (DataComp's image-based centroids and ImageNet-1k features, NormSim/VAS target
embeddings, an IWL prompt embedding) are written small and seeded by :class:`Assets`.
"""

import numpy as np
import pytest

from kl_filter.core.errors import KLFilterError
from kl_filter.filters.registry import FILTERS, get_filter_class, list_filters
from kl_filter.recipes import load_recipe, shipped_recipes
from kl_filter.scorers.registry import SCORERS
from kl_filter.testing import FilterContract, ScorerContract
from minipool import unit

FILES = ("centroids", "in1k", "targets", "targets2", "prompt")


def _fill(value, files):
    """``"{targets}"`` and the like, anywhere in a parameter value, as the path of that asset file."""
    if isinstance(value, dict):
        return {k: _fill(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, files) for v in value]
    return value.format(**files) if isinstance(value, str) else value


class Assets:
    """Writes the asset files (seeded) and fills their ``{name}`` placeholders in ``params`` and ``changed_params``."""

    files: dict = {}

    def make_assets(self, root):
        rng = np.random.default_rng(0)
        files = {k: str(root / f"{k}.npy") for k in FILES}
        np.save(files["centroids"], unit(rng, 32, 768).astype(np.float32))
        np.save(files["in1k"], unit(rng, 40, 768).astype(np.float32))
        np.save(files["targets"], unit(rng, 50, 768))  # NormSim/VAS target embeddings (float16, unit rows)
        np.save(files["targets2"], unit(rng, 50, 768))
        np.save(files["prompt"], rng.standard_normal(768))  # IWL's prompt embedding (the scorer normalises it)
        type(self).files = files  # for changed(), called on the test's own instance
        return _fill(self.params, files)

    def changed(self, params):
        return _fill({**params, **self.changed_params}, self.files)


# ---- filters (list_filters(): the registered filters, and each scorer as a top cut on its column) ----------------
class TestNoFilter(FilterContract):
    filter = "no_filter"


class TestBasicFilter(FilterContract):
    filter = "basic_filter"


class TestClipScore(FilterContract):
    filter = "clip_score"
    params = {"arch": "l14", "fraction": 0.3}


class TestLaion2B(FilterContract):
    filter = "laion2b"


class TestTextBased(FilterContract):
    filter = "text_based"

    def make_assets(self, root):
        from kl_filter.text.wordnet import ensure_wordnet

        try:
            ensure_wordnet(None)
        except KLFilterError as e:
            pytest.skip(f"text_based: {e}")
        return {}


class TestImageBased(Assets, FilterContract):
    filter = "image_based"
    params = {"centroids": "{centroids}", "in1k_features": ["{in1k}"]}


class TestImageBasedIntersectClipScore(Assets, FilterContract):
    filter = "image_based_intersect_clip_score"
    params = {"arch": "b32", "fraction": 0.5, "centroids": "{centroids}", "in1k_features": ["{in1k}"]}


class TestCuts(Assets, FilterContract):
    filter = "cuts"
    params = {"cuts": [{"column": "clip_l14_similarity_score", "fraction": 0.5},
                       {"filter": {"name": "kl", "params": {"fraction": 0.5, "num_samples": 64,
                                                            "english_filter": True}}},
                       {"score": {"name": "normsim", "params": {"target_embeddings": ["{targets}"]}},
                        "fraction": 0.3, "then": "pool"}]}


class TestKLFilter(FilterContract):
    filter = "kl"
    params = {"fraction": 0.25, "num_samples": 64, "clip_score_fraction": 0.8, "english_filter": True}


class TestNegCLIPLossFilter(FilterContract):
    filter = "negcliploss"
    params = {"arch": "b32", "fraction": 0.3, "batch_size": 500, "num_batches": 2}


class TestSemDeDupFilter(FilterContract):
    filter = "semdedup"
    params = {"eps": 0.05, "num_clusters": 8}


class TestIWLFilter(Assets, FilterContract):
    filter = "iwl"
    params = {"prompt_embedding": "{prompt}", "fraction": 0.3}


class TestNormSimFilter(Assets, FilterContract):
    filter = "normsim"
    params = {"target_embeddings": ["{targets}"], "fraction": 0.3}


class TestVASFilter(FilterContract):
    filter = "vas"
    params = {"target": "pool", "fraction": 0.3}


# ---- scorers -------------------------------------------------------------------------------------------------------
class TestKLScorer(ScorerContract):
    scorer = "kl"
    params = {"mode": ["kl", "centered"], "arch": "b32", "num_samples": 64}
    changed_params = {"num_samples": 32}  # D_KL's values change (its samples), D_C's do not (the moments)


class TestIWLScorer(Assets, ScorerContract):
    scorer = "iwl"
    params = {"prompt_embedding": "{prompt}"}
    changed_params = {"logit_scale": 20.0}


class TestNormSimScorer(Assets, ScorerContract):
    scorer = "normsim"
    params = {"target_embeddings": ["{targets}"]}
    changed_params = {"target_embeddings": ["{targets2}"]}  # the same column name, other targets


class TestVASScorer(Assets, ScorerContract):
    scorer = "vas"
    params = {"target_embeddings": ["{targets}"]}
    changed_params = {"target": "pool", "target_embeddings": None}  # vas_l14 from the pool's own moments


class TestNegCLIPLossScorer(ScorerContract):
    scorer = "negcliploss"
    params = {"arch": "b32", "batch_size": 200, "num_batches": 2}
    changed_params = {"num_batches": 3}


class TestSemDeDupScorer(ScorerContract):
    scorer = "semdedup"
    params = {"num_clusters": 8, "keep": "clip_score"}
    changed_params = {"keep": "easy"}


# ---- shipped recipes (slow: the same contract for each recipe's parameters) --------------------------------------
# what a recipe needs beside it here (the flags its comment asks a user for), and the track's small-pool sizes
RECIPE_FLAGS = {"image_based": {"centroids": "{centroids}", "in1k_features": ["{in1k}"]},
                "normsim": {"target_embeddings": ["{targets}"]}, "vas_in1k": {"target_embeddings": ["{targets}"]},
                "kl": {"num_samples": 64}, "negcliploss": {"batch_size": 500, "num_batches": 2}}


class RecipeAssets(Assets):
    recipe = ""

    def make_assets(self, root):
        super().make_assets(root)
        r = load_recipe(self.recipe)
        cls = get_filter_class(r.filter)
        declared = {p.name for p in cls.flag_params(r.params)}
        flags = {k: v for key, given in RECIPE_FLAGS.items() if key in self.recipe or key in r.names()
                 for k, v in _fill(given, self.files).items() if k in declared}
        return cls.with_flags(r.params, flags)


def _recipe_contract(recipe):
    r = load_recipe(recipe)
    name = f"TestRecipe_{recipe}"
    return name, pytest.mark.slow(type(name, (RecipeAssets, FilterContract), {"filter": r.filter, "recipe": recipe}))


for _recipe in shipped_recipes():
    if load_recipe(_recipe).params:  # a recipe without parameters is its filter with its defaults: tested above
        _name, _cls = _recipe_contract(_recipe)
        globals()[_name] = _cls


def test_every_builtin_has_a_contract():
    """The classes above cover every built-in filter and scorer (a plugin from an installed distribution has its
    own tests) and every shipped recipe with parameters."""
    contracts = [c for c in globals().values() if isinstance(c, type) and c.__name__.startswith("Test")]
    builtin_filters = {n for n in list_filters() if FILTERS.distribution(n) is None and SCORERS.distribution(n) is None}
    assert {c.filter for c in contracts if issubclass(c, FilterContract) and not c.__name__.startswith("TestRecipe_")} \
        == builtin_filters
    assert {c.scorer for c in contracts if issubclass(c, ScorerContract)} == \
        {n for n in SCORERS.names() if SCORERS.distribution(n) is None}
    assert {c.recipe for c in contracts if c.__name__.startswith("TestRecipe_")} == \
        {r for r in shipped_recipes() if load_recipe(r).params}
