"""What the tiny track changes in the shipped recipes, as data; :mod:`.recipes` applies it without naming a filter.

* :data:`DEFAULTS`: parameters sized for DataComp's pools that the track sizes for its own, per filter or scorer
  name (a recipe's own, and each cut's scorer or filter in a ``cuts`` recipe): ``set`` maps a parameter to the
  :class:`~kl_filter.apps.tiny.config.TrackConfig` field that gives its value, applied unless the recipe sets one
  of the ``unless`` parameters itself (the config fields' docstrings say why each value).
* :data:`VARIANTS`: the track's own recipes, each a shipped recipe (``base``) with parameters removed (``drop``),
  set (``params``) or, with ``targets``, that parameter given the track's target-task embeddings (the larger
  teacher's image embeddings of the digits' TRAIN split, :mod:`.targets`, written by the run before filtering).
* :data:`SKIPPED`: the shipped recipes whose assets are DataComp's downloads, which do not exist in the tiny
  teachers' embedding space: the reason recorded in ``run.json`` (a variant with ``targets`` runs instead).
* :data:`QUICK`: the recipes of ``--quick``; :data:`FIRST`: the filters listed first (the reference, then
  DataComp's baselines; the KL recipes and the rest follow by name).
"""

from __future__ import annotations

DEFAULTS = {
    "kl": {"set": {"num_samples": "kl_num_samples"}, "unless": ("num_samples", "sample_ratio")},
    "negcliploss": {"set": {"batch_size": "negcliploss_batch_size"}, "unless": ("batch_size",)},
}

# The informed-target variant: DataComp's ImageNet-1k L/14 targets replaced by the track's target task (an
# informed-target filter, as ImageNet-1k targets are for DataComp: the digits are one of the three tasks the
# students are scored on). The temperature ablation: the KL text-target recipes at OpenAI CLIP's a = 100 instead
# of the temperature each teacher learned (recorded by embed in the pool's embeddings.json); a CLIP similarity is
# a log density ratio only at the model's own temperature, and these rows show what the wrong one does to D_KL.
VARIANTS = {
    "negcliploss_l14_30_x_normsim_inf_digits": {
        "base": "negcliploss_l14_30_x_normsim_inf_in1k", "drop": ("target_embeddings",), "targets": "target_embeddings",
        "description": "The tiny track's variant of {base}: the same parameters, NormSim's targets the larger "
                       "teacher's image embeddings of the digits' TRAIN split (never the evaluation digits)"},
    "kl_l14_txt_25_a100": {
        "base": "kl_l14_txt_25", "params": {"logit_scale": 100.0},
        "description": "{base} at OpenAI CLIP's logit scale a = 100 instead of the teacher's own (an ablation)"},
    "kl_b32_txt_25_a100": {
        "base": "kl_b32_txt_25", "params": {"logit_scale": 100.0},
        "description": "{base} at OpenAI CLIP's logit scale a = 100 instead of the teacher's own (an ablation)"},
}

_CENTROIDS = ("needs DataComp's 100k k-means centroids and ImageNet-1k L/14 image features (downloaded assets), "
              "which do not exist for the tiny teachers' embedding space")
_IN1K_TARGETS = ("needs DataComp's ImageNet-1k L/14 image features in1k_clip_vit_l14_{0..4}.pt (downloaded assets) "
                 "as its targets, which do not exist for the tiny teachers' embedding space")
SKIPPED = {
    "image_based": _CENTROIDS,
    "image_based_intersect_clip_score_l14_30": _CENTROIDS,
    "negcliploss_l14_30_x_normsim_inf_in1k": _IN1K_TARGETS,
    "vas_in1k_l14_30": _IN1K_TARGETS,
}
INSTEAD = "; the track runs {variants} instead (targets: the digits' train split)"

QUICK = ["no_filter", "laion2b", "clip_score_l14_30", "kl_l14_txt_25"]  # in plan order
FIRST = ["no_filter", "basic_filter", "text_based", "laion2b", "clip_score"]
