"""The offline tiny track: pool → teachers → embed → every offline recipe → reshard → student → evaluation.

A miniature of DataComp's filtering track (docs/harness.md) that runs on 2 CPU cores with no network:

1. data: a noisy image-text pool in webdataset shards (:mod:`.pool`, drawn from the content of :mod:`.content`,
   written by :mod:`.shards`), a DISJOINT clean split for the teachers (:mod:`.pool`), and held-out evaluation
   sets (:mod:`.evalsets`); all seeded by ``pool_seed``.
2. teachers (:mod:`.models`): two CLIP models of different size trained from scratch with open_clip (model +
   ``ClipLoss``, in-process) on the clean split. The small one stands in for OpenAI's ViT-B/32 (512-d embeddings,
   npz keys ``b32_*``, column ``clip_b32_similarity_score``), the larger one for ViT-L/14 (768-d, ``l14_*``).
3. metadata: :func:`kl_filter.pool.embed.embed_shards` twice into one metadata directory (the second family
   is added).
4. filtering: every recipe of ``baselines/`` that runs offline (:mod:`.recipes`; the track's changes to the
   recipes are data, :mod:`.overrides`), through
   :func:`~kl_filter.runner.run_filter` (one UID file each; filter seed = ``pool_seed``, so the subset
   is fixed and only training varies by seed). The recipes whose NormSim/VAS targets are DataComp's ImageNet-1k
   features are skipped; the track runs variants of them whose targets come from its own target task
   (:mod:`.targets`: the larger teacher's image embeddings of the digits' TRAIN split, never the eval digits).
5. reshard: :func:`kl_filter.apps.harness.reshard.reshard` keeps the subset's samples from the pool tars.
6. student (:mod:`.models`, trained in the worker processes of :mod:`.workers`): the same tiny CLIP (the config
   of docs/harness.md#the-whole-loop-offline-the-tiny-track) trained from scratch on each subset with the SAME
   number of samples seen whatever the subset size (DataComp's rule: sampling with replacement), the same
   hyper-parameters for every filter, once per seed.
7. evaluation (:func:`.models.evaluate` on :mod:`.evalsets`): zero-shot classification (held-out drawn scenes
   by shape, 6 classes; held-out real digits, 10 classes; prompt ensembles) and image-text retrieval
   (recall@1/5 both ways) on held-out clean pairs.

8. IWL (:mod:`.iwl`, on by default, off with ``--quick``): importance weights toward the handwritten digits
   (prompt encoded by the larger teacher) at each temperature of ``--iwl_scales`` (default the authors' a = 10),
   and per seed and temperature an IWL-resampled student and three weighted ones (the authors' loss with raw
   weights, with weights normalised over the pool, and self-normalised per batch) beside the uniform (no_filter)
   one, all seeing the same number of samples; zero-shot accuracy and macro F1 on the digits and the scenes,
   retrieval.

:func:`.track.run_track` runs it all; :mod:`.results` writes ``results.csv``, ``results.md``, ``results.png``
and ``run.json`` (and :mod:`.iwl` ``iwl.md`` and ``iwl.png``).
"""
