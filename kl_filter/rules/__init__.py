"""Rules: a column to keep/drop, each resolving itself over the whole pool, then answering per shard.

    base.py           the protocol: ``Rule``, the pool's verbs (``PoolScores``), the loop the runner runs, the
                      registry (third parties: the ``kl_filter.rules`` entry-point group)
    top.py            ``Top`` (DataComp's threshold rule, ``then`` cuts) and ``Keep`` (a boolean column)
    sampling.py       ``Uniform`` (histogram flattening) and ``Resample`` (draws with replacement ∝ a weight)
    kth.py            the exact distributed k-th largest value
    threshold.py      DataComp's quantile threshold
    uniform.py        histogram-flattening arithmetic (the KL paper's down-sampling)
    weights.py        importance-weight arithmetic: float64 sums, effective sample size, systematic resampling
    top_per_group.py  the k best rows of each group (a rule written in one file)
"""
