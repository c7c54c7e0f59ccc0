"""Scorers: plugins that turn one shard (plus declared statistics) into named float32 columns.

    base.py         the interface: ``Scorer``, ``BucketScorer`` (rows scored with other shards' rows),
                    ``StatsNeed``, ``DensityRatio`` (the logit scale), ``Partition``
    partition.py    seeded hashed buckets of the pool's rows (negCLIPLoss's random batches)
    registry.py     built-in scorers by name; third parties in the ``kl_filter.scorers`` entry-point group
    kl.py           the KL family: D_KL, D_KLR, D_C, D_W columns ``{mode}_{arch}_{target}``
    negcliploss.py  negCLIPLoss (a BucketScorer over random batches)
    normsim.py      NormSim_p against target embeddings
    vas.py          VAS, fᵀ S f
    semdedup.py     SemDeDup (a BucketScorer over k-means clusters)
    iwl.py          importance weights toward a prompt's domain
    targets.py      ``--target_embeddings`` files read once, validated, content-hashed

A scorer imports the core, pool, engines, kernels, stats and encoders; never filters, rules or stages.
"""
